//! The compiled grammar and the byte-level stack machine that walks it.
//!
//! The machine is deterministic: every frame knows from one byte which way to
//! go. The only lookahead the grammar needs (a number or an enum literal that
//! is complete but could grow, like `12` before `3` or `}`) is handled by
//! popping the complete frame and retrying the byte in its parent.

use serde_json::Value;

use crate::schema::SNode;

/// Digits allowed in the integer and fraction parts, so a looping model stops.
const MAX_DIGITS: u8 = 16;
/// Exponent digits; three would let `1e999` overflow an f64.
const MAX_EXP_DIGITS: u8 = 2;
/// Nesting limit for values of unconstrained (`{}`) schemas.
const MAX_ANY_DEPTH: u8 = 16;

#[derive(Debug)]
pub(crate) enum Node {
    Any,
    Object {
        props: Vec<Prop>,
        /// `next_req[i]`: the first required property at or after `i` (`props.len()` if none).
        next_req: Vec<u32>,
    },
    Array {
        items: u32,
        min: u32,
        max: u32,
    },
    String,
    Number,
    Integer,
    /// One of a set of literals (booleans, enums).
    Alt(u32),
}

#[derive(Debug)]
pub(crate) struct Prop {
    /// The key as emitted, quotes included.
    key: Box<[u8]>,
    node: u32,
}

/// Literals sorted bytewise, so those sharing a prefix form a contiguous range.
#[derive(Debug)]
pub(crate) struct AltSet {
    lits: Vec<Box<[u8]>>,
    /// The caller's order of each literal, to prefer earlier ones when completing.
    rank: Vec<u32>,
    /// Tool calls: the arguments schema and the literal that follows each name.
    then: Option<Vec<(u32, u32)>>,
}

#[derive(Debug, Default)]
pub(crate) struct Compiled {
    nodes: Vec<Node>,
    alts: Vec<AltSet>,
    lits: Vec<Box<[u8]>>,
}

const BOOL_SET: u32 = 0;
const ANY_WORD_SET: u32 = 1;

impl Compiled {
    pub(crate) fn new() -> Compiled {
        let mut c = Compiled::default();
        c.add_alt(vec![b"false".to_vec(), b"true".to_vec()], None);
        c.add_alt(
            vec![b"false".to_vec(), b"null".to_vec(), b"true".to_vec()],
            None,
        );
        c
    }

    pub(crate) fn add_lit(&mut self, bytes: &[u8]) -> u32 {
        self.lits.push(bytes.into());
        (self.lits.len() - 1) as u32
    }

    /// `then[i]` belongs to `lits[i]` (caller order). Duplicates keep the first.
    pub(crate) fn add_alt(&mut self, lits: Vec<Vec<u8>>, then: Option<Vec<(u32, u32)>>) -> u32 {
        let mut order: Vec<usize> = (0..lits.len()).collect();
        order.sort_by(|&a, &b| lits[a].cmp(&lits[b]).then(a.cmp(&b)));
        order.dedup_by(|b, a| lits[*a] == lits[*b]);
        let set = AltSet {
            lits: order.iter().map(|&i| lits[i].clone().into()).collect(),
            rank: order.iter().map(|&i| i as u32).collect(),
            then: then.map(|t| order.iter().map(|&i| t[i]).collect()),
        };
        self.alts.push(set);
        (self.alts.len() - 1) as u32
    }

    pub(crate) fn add_node(&mut self, s: &SNode) -> u32 {
        let node = match s {
            SNode::Any => Node::Any,
            SNode::String => Node::String,
            SNode::Number => Node::Number,
            SNode::Integer => Node::Integer,
            SNode::Boolean => Node::Alt(BOOL_SET),
            SNode::Enum(values) => {
                let lits = values.iter().map(|v| v.to_string().into_bytes()).collect();
                Node::Alt(self.add_alt(lits, None))
            }
            SNode::Array { items, min, max } => Node::Array {
                items: self.add_node(items),
                min: *min,
                max: max.unwrap_or(u32::MAX),
            },
            SNode::Object { props, .. } => {
                let props: Vec<Prop> = props
                    .iter()
                    .map(|p| Prop {
                        key: Value::String(p.name.clone())
                            .to_string()
                            .into_bytes()
                            .into(),
                        node: self.add_node(&p.node),
                    })
                    .collect();
                let mut next_req = vec![props.len() as u32; props.len() + 1];
                for i in (0..props.len()).rev() {
                    next_req[i] = if required_at(s, i) {
                        i as u32
                    } else {
                        next_req[i + 1]
                    };
                }
                Node::Object { props, next_req }
            }
        };
        self.nodes.push(node);
        (self.nodes.len() - 1) as u32
    }
}

fn required_at(s: &SNode, i: usize) -> bool {
    matches!(s, SNode::Object { props, .. } if props[i].required)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjSt {
    Open,
    AfterOpen,
    Key,
    AfterKey,
    AfterColon,
    AfterColonSpace,
    AfterValue,
    AfterComma,
    AfterCommaSpace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArrSt {
    Open,
    AfterOpen,
    AfterValue,
    AfterComma,
    AfterCommaSpace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrSt {
    Open,
    Normal,
    Escape,
    /// `\u` escape: `k` hex digits read, their value `v`; `low` when this must be a low surrogate.
    Hex {
        k: u8,
        v: u16,
        low: bool,
    },
    /// After a high surrogate escape: `\` then `u` must follow.
    NeedLowBackslash,
    NeedLowU,
    /// Inside a multi-byte UTF-8 character: `need` continuation bytes, the next in `lo..=hi`.
    Utf8 {
        need: u8,
        lo: u8,
        hi: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumSt {
    Start,
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// Bottom of every stack: nothing more may come.
    End,
    Lit {
        lit: u32,
        pos: u32,
    },
    /// Literals `lo..hi` of `set` all start with the `pos` bytes read.
    Alt {
        set: u32,
        lo: u32,
        hi: u32,
        pos: u32,
    },
    /// Properties before `next` are behind us; in `Key`, `cur` is the first
    /// candidate whose key starts with the `pos` bytes read, afterwards the chosen one.
    Obj {
        node: u32,
        st: ObjSt,
        next: u32,
        cur: u32,
        pos: u32,
    },
    Arr {
        node: u32,
        st: ArrSt,
        count: u32,
    },
    Str(StrSt),
    Num {
        int: bool,
        st: NumSt,
        digits: u8,
    },
    AnyVal {
        depth: u8,
    },
    AnyObj {
        st: ObjSt,
        depth: u8,
    },
    AnyArr {
        st: ArrSt,
        depth: u8,
    },
}

pub(crate) fn alt_frame(c: &Compiled, set: u32) -> Frame {
    Frame::Alt {
        set,
        lo: 0,
        hi: c.alts[set as usize].lits.len() as u32,
        pos: 0,
    }
}

pub(crate) fn value_frame(c: &Compiled, node: u32) -> Frame {
    match &c.nodes[node as usize] {
        Node::Any => Frame::AnyVal { depth: 0 },
        Node::Object { .. } => Frame::Obj {
            node,
            st: ObjSt::Open,
            next: 0,
            cur: 0,
            pos: 0,
        },
        Node::Array { .. } => Frame::Arr {
            node,
            st: ArrSt::Open,
            count: 0,
        },
        Node::String => Frame::Str(StrSt::Open),
        Node::Number => Frame::Num {
            int: false,
            st: NumSt::Start,
            digits: 0,
        },
        Node::Integer => Frame::Num {
            int: true,
            st: NumSt::Start,
            digits: 0,
        },
        Node::Alt(set) => alt_frame(c, *set),
    }
}

fn hex(b: u8) -> Option<u16> {
    (b as char).to_digit(16).map(|d| d as u16)
}

/// Feeds one byte. On false the stack may be half-changed: callers step a copy.
pub(crate) fn step(c: &Compiled, fr: &mut Vec<Frame>, b: u8) -> bool {
    loop {
        let Some(top) = fr.last_mut() else {
            return false;
        };
        match top {
            Frame::End => return false,
            Frame::Lit { lit, pos } => {
                let l = &c.lits[*lit as usize];
                if l.get(*pos as usize) != Some(&b) {
                    return false;
                }
                *pos += 1;
                if *pos as usize == l.len() {
                    fr.pop();
                }
                return true;
            }
            Frame::Alt { set, lo, hi, pos } => {
                let a = &c.alts[*set as usize];
                let p = *pos as usize;
                let range = &a.lits[*lo as usize..*hi as usize];
                // Literals that end here sort first (-1), then by their next byte.
                let key = |l: &[u8]| l.get(p).map_or(-1, |&x| x as i32);
                let s = range.partition_point(|l| key(l) < b as i32);
                let e = range.partition_point(|l| key(l) <= b as i32);
                if s == e {
                    if range.first().is_some_and(|l| l.len() == p) {
                        fr.pop();
                        continue;
                    }
                    return false;
                }
                let (nlo, nhi) = (*lo + s as u32, *lo + e as u32);
                *lo = nlo;
                *hi = nhi;
                *pos += 1;
                if nhi - nlo == 1 && a.lits[nlo as usize].len() == p + 1 {
                    fr.pop();
                    if let Some(then) = &a.then {
                        let (node, lit) = then[nlo as usize];
                        fr.push(value_frame(c, node));
                        fr.push(Frame::Lit { lit, pos: 0 });
                    }
                }
                return true;
            }
            Frame::Obj {
                node,
                st,
                next,
                cur,
                pos,
            } => {
                let Node::Object { props, next_req } = &c.nodes[*node as usize] else {
                    return false;
                };
                let n = props.len() as u32;
                match *st {
                    ObjSt::Open if b == b'{' => *st = ObjSt::AfterOpen,
                    ObjSt::AfterOpen | ObjSt::AfterComma | ObjSt::AfterCommaSpace
                        if b == b'"' && *next < n =>
                    {
                        *st = ObjSt::Key;
                        *cur = *next;
                        *pos = 1;
                    }
                    ObjSt::AfterComma if b == b' ' => *st = ObjSt::AfterCommaSpace,
                    ObjSt::AfterOpen | ObjSt::AfterValue
                        if b == b'}' && next_req[*next as usize] == n =>
                    {
                        fr.pop();
                    }
                    ObjSt::AfterValue if b == b',' && *next < n => *st = ObjSt::AfterComma,
                    ObjSt::Key => {
                        let last = next_req[*next as usize].min(n - 1);
                        let p = *pos as usize;
                        let prefix = &props[*cur as usize].key[..p];
                        let found = (*cur..=last).find(|&i| {
                            let k = &props[i as usize].key;
                            k.len() > p && k[p] == b && &k[..p] == prefix
                        });
                        let Some(i) = found else {
                            return false;
                        };
                        *cur = i;
                        *pos += 1;
                        if props[i as usize].key.len() == p + 1 {
                            *next = i + 1;
                            *st = ObjSt::AfterKey;
                        }
                    }
                    ObjSt::AfterKey if b == b':' => *st = ObjSt::AfterColon,
                    ObjSt::AfterColon if b == b' ' => *st = ObjSt::AfterColonSpace,
                    ObjSt::AfterColon | ObjSt::AfterColonSpace => {
                        *st = ObjSt::AfterValue;
                        let child = props[*cur as usize].node;
                        fr.push(value_frame(c, child));
                        continue;
                    }
                    _ => return false,
                }
                return true;
            }
            Frame::Arr { node, st, count } => {
                let Node::Array { items, min, max } = &c.nodes[*node as usize] else {
                    return false;
                };
                match *st {
                    ArrSt::Open if b == b'[' => *st = ArrSt::AfterOpen,
                    ArrSt::Open => return false,
                    ArrSt::AfterOpen | ArrSt::AfterValue if b == b']' && *count >= *min => {
                        fr.pop();
                    }
                    ArrSt::AfterValue if b == b',' && *count < *max => *st = ArrSt::AfterComma,
                    ArrSt::AfterValue => return false,
                    ArrSt::AfterComma if b == b' ' => *st = ArrSt::AfterCommaSpace,
                    ArrSt::AfterOpen | ArrSt::AfterComma | ArrSt::AfterCommaSpace => {
                        if *count >= *max {
                            return false;
                        }
                        *count += 1;
                        *st = ArrSt::AfterValue;
                        let items = *items;
                        fr.push(value_frame(c, items));
                        continue;
                    }
                }
                return true;
            }
            Frame::Str(_) => return step_str(fr, b),
            Frame::Num { int, st, digits } => {
                let digit = b.is_ascii_digit();
                let next = match (*st, b) {
                    (NumSt::Start, b'-') => Some((NumSt::Minus, 0)),
                    (NumSt::Start | NumSt::Minus, b'0') => Some((NumSt::Zero, 1)),
                    (NumSt::Start | NumSt::Minus, _) if digit => Some((NumSt::Int, 1)),
                    (NumSt::Int, _) if digit && *digits < MAX_DIGITS => {
                        Some((NumSt::Int, *digits + 1))
                    }
                    (NumSt::Zero | NumSt::Int, b'.') if !*int => Some((NumSt::Dot, 0)),
                    (NumSt::Zero | NumSt::Int | NumSt::Frac, b'e' | b'E') if !*int => {
                        Some((NumSt::Exp, 0))
                    }
                    (NumSt::Dot, _) if digit => Some((NumSt::Frac, 1)),
                    (NumSt::Frac, _) if digit && *digits < MAX_DIGITS => {
                        Some((NumSt::Frac, *digits + 1))
                    }
                    (NumSt::Exp, b'+' | b'-') => Some((NumSt::ExpSign, 0)),
                    (NumSt::Exp | NumSt::ExpSign, _) if digit => Some((NumSt::ExpDigits, 1)),
                    (NumSt::ExpDigits, _) if digit && *digits < MAX_EXP_DIGITS => {
                        Some((NumSt::ExpDigits, *digits + 1))
                    }
                    _ => None,
                };
                match next {
                    Some((s, d)) => {
                        *st = s;
                        *digits = d;
                        return true;
                    }
                    None if num_complete(*st) => {
                        fr.pop();
                        continue;
                    }
                    None => return false,
                }
            }
            Frame::AnyVal { depth } => {
                let depth = *depth;
                *top = match b {
                    b'{' if depth < MAX_ANY_DEPTH => Frame::AnyObj {
                        st: ObjSt::AfterOpen,
                        depth,
                    },
                    b'[' if depth < MAX_ANY_DEPTH => Frame::AnyArr {
                        st: ArrSt::AfterOpen,
                        depth,
                    },
                    b'"' => Frame::Str(StrSt::Normal),
                    b'-' | b'0'..=b'9' => {
                        *top = Frame::Num {
                            int: false,
                            st: NumSt::Start,
                            digits: 0,
                        };
                        continue;
                    }
                    b't' | b'f' | b'n' => {
                        *top = alt_frame(c, ANY_WORD_SET);
                        continue;
                    }
                    _ => return false,
                };
                return true;
            }
            Frame::AnyObj { st, depth } => {
                let depth = *depth;
                match *st {
                    ObjSt::AfterOpen | ObjSt::AfterComma | ObjSt::AfterCommaSpace if b == b'"' => {
                        *st = ObjSt::AfterKey;
                        fr.push(Frame::Str(StrSt::Normal));
                    }
                    ObjSt::AfterComma if b == b' ' => *st = ObjSt::AfterCommaSpace,
                    ObjSt::AfterOpen | ObjSt::AfterValue if b == b'}' => {
                        fr.pop();
                    }
                    ObjSt::AfterValue if b == b',' => *st = ObjSt::AfterComma,
                    ObjSt::AfterKey if b == b':' => *st = ObjSt::AfterColon,
                    ObjSt::AfterColon if b == b' ' => *st = ObjSt::AfterColonSpace,
                    ObjSt::AfterColon | ObjSt::AfterColonSpace => {
                        *st = ObjSt::AfterValue;
                        fr.push(Frame::AnyVal { depth: depth + 1 });
                        continue;
                    }
                    _ => return false,
                }
                return true;
            }
            Frame::AnyArr { st, depth } => {
                let depth = *depth;
                match *st {
                    ArrSt::AfterOpen | ArrSt::AfterValue if b == b']' => {
                        fr.pop();
                    }
                    ArrSt::AfterValue if b == b',' => *st = ArrSt::AfterComma,
                    ArrSt::AfterComma if b == b' ' => *st = ArrSt::AfterCommaSpace,
                    ArrSt::AfterOpen | ArrSt::AfterComma | ArrSt::AfterCommaSpace => {
                        *st = ArrSt::AfterValue;
                        fr.push(Frame::AnyVal { depth: depth + 1 });
                        continue;
                    }
                    _ => return false,
                }
                return true;
            }
        }
    }
}

fn step_str(fr: &mut Vec<Frame>, b: u8) -> bool {
    let Some(Frame::Str(st)) = fr.last_mut() else {
        return false;
    };
    let next = match *st {
        StrSt::Open if b == b'"' => StrSt::Normal,
        StrSt::Open => return false,
        StrSt::Normal => match b {
            b'"' => {
                fr.pop();
                return true;
            }
            b'\\' => StrSt::Escape,
            0x20..=0x7f => StrSt::Normal,
            0xc2..=0xdf => utf8(1, 0x80, 0xbf),
            0xe0 => utf8(2, 0xa0, 0xbf),
            0xed => utf8(2, 0x80, 0x9f),
            0xe1..=0xef => utf8(2, 0x80, 0xbf),
            0xf0 => utf8(3, 0x90, 0xbf),
            0xf1..=0xf3 => utf8(3, 0x80, 0xbf),
            0xf4 => utf8(3, 0x80, 0x8f),
            _ => return false,
        },
        StrSt::Utf8 { need, lo, hi } if (lo..=hi).contains(&b) => {
            if need == 1 {
                StrSt::Normal
            } else {
                utf8(need - 1, 0x80, 0xbf)
            }
        }
        StrSt::Utf8 { .. } => return false,
        StrSt::Escape => match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => StrSt::Normal,
            b'u' => StrSt::Hex {
                k: 0,
                v: 0,
                low: false,
            },
            _ => return false,
        },
        StrSt::NeedLowBackslash if b == b'\\' => StrSt::NeedLowU,
        StrSt::NeedLowU if b == b'u' => StrSt::Hex {
            k: 0,
            v: 0,
            low: true,
        },
        StrSt::NeedLowBackslash | StrSt::NeedLowU => return false,
        StrSt::Hex { k, v, low } => {
            let Some(d) = hex(b) else {
                return false;
            };
            let ok = match (k, low) {
                (0, true) => d == 0xd,
                (1, true) => d >= 0xc,
                // A lone low surrogate.
                (1, false) => !(v == 0xd && d >= 0xc),
                _ => true,
            };
            if !ok {
                return false;
            }
            let v = (v << 4) | d;
            if k < 3 {
                StrSt::Hex { k: k + 1, v, low }
            } else if !low && (0xd800..0xdc00).contains(&v) {
                StrSt::NeedLowBackslash
            } else {
                StrSt::Normal
            }
        }
    };
    *st = next;
    true
}

fn utf8(need: u8, lo: u8, hi: u8) -> StrSt {
    StrSt::Utf8 { need, lo, hi }
}

fn num_complete(st: NumSt) -> bool {
    matches!(
        st,
        NumSt::Zero | NumSt::Int | NumSt::Frac | NumSt::ExpDigits
    )
}

/// A frame that may end here, leaving the next byte to its parent.
fn frame_complete(c: &Compiled, f: &Frame) -> bool {
    match f {
        Frame::Num { st, .. } => num_complete(*st),
        Frame::Alt { set, lo, pos, .. } => c.alts[*set as usize]
            .lits
            .get(*lo as usize)
            .is_some_and(|l| l.len() == *pos as usize),
        _ => false,
    }
}

pub(crate) fn is_complete(c: &Compiled, fr: &[Frame]) -> bool {
    match fr {
        [.., Frame::End] => true,
        [.., Frame::End, top] => frame_complete(c, top),
        _ => false,
    }
}

/// Whether a string frame in plain text is on top: then printable ASCII other
/// than `"` and `\` leaves the stack unchanged.
pub(crate) fn in_plain_string(fr: &[Frame]) -> bool {
    matches!(fr.last(), Some(Frame::Str(StrSt::Normal)))
}

/// Shortest literal of `lo..hi`, the caller's earliest among equals.
fn pick(a: &AltSet, lo: u32, hi: u32) -> usize {
    (lo as usize..hi as usize)
        .min_by_key(|&i| (a.lits[i].len(), a.rank[i]))
        .unwrap_or(lo as usize)
}

/// Earliest by caller order (tool names: "the first tool that matches").
fn pick_first(a: &AltSet, lo: u32, hi: u32) -> usize {
    (lo as usize..hi as usize)
        .min_by_key(|&i| a.rank[i])
        .unwrap_or(lo as usize)
}

fn start_byte(c: &Compiled, node: u32) -> u8 {
    match &c.nodes[node as usize] {
        Node::Any | Node::Number | Node::Integer => b'0',
        Node::Object { .. } => b'{',
        Node::Array { .. } => b'[',
        Node::String => b'"',
        Node::Alt(set) => {
            let a = &c.alts[*set as usize];
            let i = pick(a, 0, a.lits.len() as u32);
            a.lits.get(i).and_then(|l| l.first().copied()).unwrap_or(0)
        }
    }
}

/// The byte the shortest completion takes next; None pops a complete frame.
fn completion_byte(c: &Compiled, f: &Frame) -> Option<u8> {
    Some(match *f {
        Frame::End => return None,
        Frame::Lit { lit, pos } => c.lits[lit as usize][pos as usize],
        Frame::Alt { set, lo, hi, pos } => {
            let a = &c.alts[set as usize];
            if a.lits
                .get(lo as usize)
                .is_some_and(|l| l.len() == pos as usize)
            {
                return None;
            }
            let i = if a.then.is_some() {
                pick_first(a, lo, hi)
            } else {
                pick(a, lo, hi)
            };
            a.lits[i][pos as usize]
        }
        Frame::Obj {
            node,
            st,
            next,
            cur,
            pos,
        } => {
            let Node::Object { props, next_req } = &c.nodes[node as usize] else {
                return None;
            };
            let done = next_req[next as usize] as usize == props.len();
            match st {
                ObjSt::Open => b'{',
                ObjSt::AfterOpen | ObjSt::AfterValue if done => b'}',
                ObjSt::AfterOpen | ObjSt::AfterComma | ObjSt::AfterCommaSpace => b'"',
                ObjSt::AfterValue => b',',
                // Head for the next required key when its prefix allows.
                ObjSt::Key => {
                    let p = pos as usize;
                    let req = next_req[next as usize] as usize;
                    let k = &props[cur as usize].key;
                    match props.get(req) {
                        Some(r) if r.key.len() > p && r.key[..p] == k[..p] => r.key[p],
                        _ => k[p],
                    }
                }
                ObjSt::AfterKey => b':',
                ObjSt::AfterColon | ObjSt::AfterColonSpace => {
                    start_byte(c, props[cur as usize].node)
                }
            }
        }
        Frame::Arr { node, st, count } => {
            let Node::Array { items, min, .. } = &c.nodes[node as usize] else {
                return None;
            };
            match st {
                ArrSt::Open => b'[',
                ArrSt::AfterOpen | ArrSt::AfterValue if count >= *min => b']',
                ArrSt::AfterValue => b',',
                ArrSt::AfterOpen | ArrSt::AfterComma | ArrSt::AfterCommaSpace => {
                    start_byte(c, *items)
                }
            }
        }
        Frame::Str(st) => match st {
            StrSt::Open | StrSt::Normal => b'"',
            StrSt::Escape => b'n',
            StrSt::Hex {
                k: 0, low: true, ..
            } => b'd',
            StrSt::Hex {
                k: 1, low: true, ..
            } => b'c',
            StrSt::Hex { .. } => b'0',
            StrSt::NeedLowBackslash => b'\\',
            StrSt::NeedLowU => b'u',
            StrSt::Utf8 { lo, .. } => lo,
        },
        Frame::Num { st, .. } if num_complete(st) => return None,
        Frame::Num { .. } | Frame::AnyVal { .. } => b'0',
        Frame::AnyObj { st, .. } => match st {
            ObjSt::AfterKey => b':',
            ObjSt::AfterColon | ObjSt::AfterColonSpace => b'0',
            ObjSt::AfterComma | ObjSt::AfterCommaSpace => b'"',
            _ => b'}',
        },
        Frame::AnyArr { st, .. } => match st {
            ArrSt::AfterComma | ArrSt::AfterCommaSpace => b'0',
            _ => b']',
        },
    })
}

/// Bytes that complete the output; works on a copy of the stack.
pub(crate) fn completion(c: &Compiled, fr: &[Frame]) -> Vec<u8> {
    let mut fr = fr.to_vec();
    let mut out = Vec::new();
    // Every byte moves a frame forward; the bound only guards against a bug looping.
    for _ in 0..1_000_000 {
        if is_complete(c, &fr) {
            break;
        }
        let Some(top) = fr.last() else {
            break;
        };
        if matches!(top, Frame::Alt { lo, hi, .. } if lo == hi) {
            // An empty choice or tool list: nothing completes it.
            break;
        }
        match completion_byte(c, top) {
            None => {
                fr.pop();
            }
            Some(b) => {
                if !step(c, &mut fr, b) {
                    break;
                }
                out.push(b);
            }
        }
    }
    out
}
