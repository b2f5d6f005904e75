//! A flat byte trie over the vocabulary, walked depth-first with one matcher
//! stack per depth so a rejected prefix prunes its whole subtree.

use crate::machine::{in_plain_string, step, Compiled, Frame};

#[derive(Debug, Clone, Copy)]
pub(crate) struct TNode {
    byte: u8,
    /// Children are stored contiguously: `nodes[children.0..children.1]`.
    children: (u32, u32),
    /// Token ids ending at this node: `ids[ids.0..ids.1]`.
    ids: (u32, u32),
    /// Ids are laid out in depth-first order: the whole subtree's are `ids[ids.0..subtree_end]`.
    subtree_end: u32,
    /// Every byte below this node is plain string text.
    plain_below: bool,
}

/// Bytes that leave a string's state unchanged: printable ASCII but `"` and `\`.
fn plain(b: u8) -> bool {
    (0x20..0x80).contains(&b) && b != b'"' && b != b'\\'
}

#[derive(Debug, Default)]
pub(crate) struct Trie {
    nodes: Vec<TNode>,
    ids: Vec<u32>,
    root: (u32, u32),
    max_len: usize,
}

impl Trie {
    pub(crate) fn new(tokens: impl IntoIterator<Item = (u32, Vec<u8>)>) -> Trie {
        let mut toks: Vec<(Vec<u8>, u32)> = tokens
            .into_iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(id, b)| (b, id))
            .collect();
        toks.sort();
        let mut t = Trie {
            max_len: toks.iter().map(|(b, _)| b.len()).max().unwrap_or(0),
            ..Trie::default()
        };
        t.root = t.build(&toks, 0);
        t
    }

    /// `toks`: sorted, all longer than `depth` and sharing their first `depth` bytes.
    fn build(&mut self, toks: &[(Vec<u8>, u32)], depth: usize) -> (u32, u32) {
        let mut groups = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            let b = toks[i].0[depth];
            let j = i + toks[i..].partition_point(|(t, _)| t[depth] == b);
            groups.push((b, i, j));
            i = j;
        }
        let start = self.nodes.len();
        self.nodes.extend(groups.iter().map(|&(byte, _, _)| TNode {
            byte,
            children: (0, 0),
            ids: (0, 0),
            subtree_end: 0,
            plain_below: true,
        }));
        for (g, &(_, i, j)) in groups.iter().enumerate() {
            let group = &toks[i..j];
            // Tokens ending here sort before longer ones sharing the prefix.
            let ends = group.partition_point(|(t, _)| t.len() == depth + 1);
            let ids_start = self.ids.len() as u32;
            self.ids.extend(group[..ends].iter().map(|(_, id)| *id));
            let ids = (ids_start, self.ids.len() as u32);
            let children = if ends < group.len() {
                self.build(&group[ends..], depth + 1)
            } else {
                (0, 0)
            };
            let below = &self.nodes[children.0 as usize..children.1 as usize];
            let plain_below = below.iter().all(|n| plain(n.byte) && n.plain_below);
            let node = &mut self.nodes[start + g];
            node.children = children;
            node.ids = ids;
            node.subtree_end = self.ids.len() as u32;
            node.plain_below = plain_below;
        }
        (start as u32, (start + groups.len()) as u32)
    }

    pub(crate) fn allowed(&self, c: &Compiled, frames: &[Frame], out: &mut Vec<u32>) {
        out.clear();
        let mut bufs: Vec<Vec<Frame>> = vec![Vec::new(); self.max_len + 1];
        bufs[0].extend_from_slice(frames);
        self.walk(c, self.root, &mut bufs, 0, out);
    }

    /// `bufs[level]` is the state after the bytes leading to the children in `range`.
    fn walk(
        &self,
        c: &Compiled,
        range: (u32, u32),
        bufs: &mut [Vec<Frame>],
        level: usize,
        out: &mut Vec<u32>,
    ) {
        let in_string = in_plain_string(&bufs[level]);
        for n in &self.nodes[range.0 as usize..range.1 as usize] {
            let b = n.byte;
            if in_string && plain(b) {
                // Plain string text leaves the state as it is: no copy needed,
                // and a subtree of plain text is allowed whole.
                if n.plain_below {
                    out.extend_from_slice(&self.ids[n.ids.0 as usize..n.subtree_end as usize]);
                    continue;
                }
                out.extend_from_slice(&self.ids[n.ids.0 as usize..n.ids.1 as usize]);
                if n.children.0 < n.children.1 {
                    self.walk(c, n.children, bufs, level, out);
                }
                continue;
            }
            let (head, tail) = bufs.split_at_mut(level + 1);
            let next = &mut tail[0];
            next.clone_from(&head[level]);
            if !step(c, next, b) {
                continue;
            }
            out.extend_from_slice(&self.ids[n.ids.0 as usize..n.ids.1 as usize]);
            if n.children.0 < n.children.1 {
                self.walk(c, n.children, bufs, level + 1, out);
            }
        }
    }
}
