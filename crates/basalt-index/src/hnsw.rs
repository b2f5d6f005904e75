//! A compact HNSW graph (Malkov & Yashunin) over L2-normalised vectors, with
//! cosine similarity as a dot product.
//!
//! Node ids are positions in the vector arena the caller owns ([`Vectors`]);
//! a node may be absent from the graph (never inserted) and a present node may
//! be deleted (a tombstone: it still routes searches but is never returned).
//! The graph is rebuilt without tombstones when the caller compacts.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};

/// Neighbours kept per node above layer 0.
pub const M: usize = 16;
/// Neighbours kept per node on layer 0.
pub const M0: usize = 2 * M;
/// Beam width while inserting.
pub const EF_CONSTRUCTION: usize = 128;
const MAX_LEVEL: usize = 12;

/// A flat arena of `dim`-sized vectors; node `i` is `data[i*dim..(i+1)*dim]`.
#[derive(Debug, Clone)]
pub struct Vectors {
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Vectors {
    pub fn new(dim: usize) -> Self {
        Vectors {
            dim,
            data: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn get(&self, i: u32) -> &[f32] {
        let i = i as usize;
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn push(&mut self, v: &[f32]) -> u32 {
        let id = self.len() as u32;
        self.data.extend_from_slice(v);
        id
    }
}

/// Dot product written so the compiler vectorises it (eight independent sums).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// A candidate: similarity (higher is nearer) and node id. Ordered by
/// similarity, then by id so ties are deterministic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub sim: f32,
    pub id: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sim
            .total_cmp(&other.sim)
            .then_with(|| other.id.cmp(&self.id))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Min-heap adaptor: the farthest candidate on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Far(Scored);

impl Ord for Far {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.cmp(&self.0)
    }
}

impl PartialOrd for Far {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// `links[l]` = neighbours on layer `l`; empty `links` = not in the graph.
    links: Vec<Vec<u32>>,
    deleted: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Hnsw {
    nodes: Vec<Node>,
    entry: Option<u32>,
    /// Nodes in the graph, deleted or not.
    present: usize,
    deleted: usize,
    /// State of the level generator (splitmix64), so builds are reproducible.
    rng: u64,
}

thread_local! {
    /// Visited marks per search: a generation number per node, so clearing is O(1).
    static VISITED: RefCell<(u32, Vec<u32>)> = const { RefCell::new((0, Vec::new())) };
}

fn with_visited<R>(n: usize, f: impl FnOnce(&mut dyn FnMut(u32) -> bool) -> R) -> R {
    VISITED.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (generation, marks) = &mut *guard;
        if marks.len() < n {
            marks.resize(n, 0);
        }
        *generation = generation.wrapping_add(1);
        if *generation == 0 {
            marks.iter_mut().for_each(|m| *m = 0);
            *generation = 1;
        }
        let g = *generation;
        let mut visit = |id: u32| {
            let slot = &mut marks[id as usize];
            if *slot == g {
                false
            } else {
                *slot = g;
                true
            }
        };
        f(&mut visit)
    })
}

impl Hnsw {
    pub fn new() -> Self {
        Hnsw {
            rng: 0x9E37_79B9_7F4A_7C15,
            ..Default::default()
        }
    }

    /// Nodes in the graph (deleted included).
    pub fn present(&self) -> usize {
        self.present
    }

    pub fn deleted(&self) -> usize {
        self.deleted
    }

    pub fn contains(&self, id: u32) -> bool {
        self.nodes
            .get(id as usize)
            .is_some_and(|n| !n.links.is_empty())
    }

    pub fn is_deleted(&self, id: u32) -> bool {
        self.nodes.get(id as usize).is_some_and(|n| n.deleted)
    }

    pub fn mark_deleted(&mut self, id: u32) {
        if let Some(n) = self.nodes.get_mut(id as usize) {
            if !n.links.is_empty() && !n.deleted {
                n.deleted = true;
                self.deleted += 1;
            }
        }
    }

    fn random_level(&mut self) -> usize {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let ml = 1.0 / (M as f64).ln();
        ((-u.ln() * ml) as usize).min(MAX_LEVEL)
    }

    fn level_of(&self, id: u32) -> usize {
        self.nodes[id as usize].links.len().saturating_sub(1)
    }

    /// Inserts node `id` (its vector already in `vecs`).
    pub fn insert(&mut self, vecs: &Vectors, id: u32) {
        let idx = id as usize;
        if self.nodes.len() <= idx {
            self.nodes.resize_with(idx + 1, Node::default);
        }
        if !self.nodes[idx].links.is_empty() {
            return;
        }
        let level = self.random_level();
        self.nodes[idx].links = vec![Vec::new(); level + 1];
        self.present += 1;
        let Some(entry) = self.entry else {
            self.entry = Some(id);
            return;
        };
        let q = vecs.get(id);
        let top = self.level_of(entry);
        let mut ep = Scored {
            sim: dot(q, vecs.get(entry)),
            id: entry,
        };
        for l in (level + 1..=top).rev() {
            ep = self.greedy(vecs, q, ep, l);
        }
        let mut eps = vec![ep];
        for l in (0..=level.min(top)).rev() {
            let found = self.search_layer(vecs, q, &eps, EF_CONSTRUCTION, l, None, usize::MAX);
            let cap = if l == 0 { M0 } else { M };
            let chosen = select_neighbors(vecs, &found, M);
            self.nodes[idx].links[l] = chosen.iter().map(|s| s.id).collect();
            for s in &chosen {
                self.link(vecs, s.id, id, l, cap);
            }
            eps = found;
        }
        if level > top {
            self.entry = Some(id);
        }
    }

    /// Adds `to` to `from`'s neighbours on layer `l`, pruning with the heuristic
    /// when the list is full.
    fn link(&mut self, vecs: &Vectors, from: u32, to: u32, l: usize, cap: usize) {
        let list = &mut self.nodes[from as usize].links[l];
        if list.contains(&to) {
            return;
        }
        if list.len() < cap {
            list.push(to);
            return;
        }
        let base = vecs.get(from);
        let mut cands: Vec<Scored> = list
            .iter()
            .chain(std::iter::once(&to))
            .map(|&n| Scored {
                sim: dot(base, vecs.get(n)),
                id: n,
            })
            .collect();
        cands.sort_by(|a, b| b.cmp(a));
        let chosen = select_neighbors(vecs, &cands, cap);
        self.nodes[from as usize].links[l] = chosen.iter().map(|s| s.id).collect();
    }

    fn greedy(&self, vecs: &Vectors, q: &[f32], mut ep: Scored, l: usize) -> Scored {
        loop {
            let mut improved = false;
            for &n in &self.nodes[ep.id as usize].links[l] {
                let sim = dot(q, vecs.get(n));
                if sim > ep.sim {
                    ep = Scored { sim, id: n };
                    improved = true;
                }
            }
            if !improved {
                return ep;
            }
        }
    }

    /// Beam search on one layer. With `accept`, only accepted (and undeleted)
    /// nodes enter the result set, but every node routes. Returns up to `ef`
    /// results, nearest first. `max_visits` bounds the work for filters that
    /// accept few nodes.
    #[allow(clippy::too_many_arguments)]
    fn search_layer(
        &self,
        vecs: &Vectors,
        q: &[f32],
        eps: &[Scored],
        ef: usize,
        l: usize,
        accept: Option<&dyn Fn(u32) -> bool>,
        max_visits: usize,
    ) -> Vec<Scored> {
        with_visited(self.nodes.len(), |visit| {
            let mut candidates: BinaryHeap<Scored> = BinaryHeap::new();
            let mut results: BinaryHeap<Far> = BinaryHeap::new();
            let ok = |id: u32| accept.is_none_or(|f| !self.nodes[id as usize].deleted && f(id));
            let mut visits = 0usize;
            for &ep in eps {
                if visit(ep.id) {
                    candidates.push(ep);
                    if ok(ep.id) {
                        results.push(Far(ep));
                    }
                }
            }
            while results.len() > ef {
                results.pop();
            }
            while let Some(c) = candidates.pop() {
                if results.len() >= ef {
                    if let Some(worst) = results.peek() {
                        if c.sim < worst.0.sim {
                            break;
                        }
                    }
                }
                visits += 1;
                if visits > max_visits {
                    break;
                }
                for &n in &self.nodes[c.id as usize].links[l] {
                    if !visit(n) {
                        continue;
                    }
                    let sim = dot(q, vecs.get(n));
                    let s = Scored { sim, id: n };
                    let worst = results.peek().map(|w| w.0.sim);
                    if results.len() < ef || worst.is_some_and(|w| sim > w) {
                        candidates.push(s);
                        if ok(n) {
                            results.push(Far(s));
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
            }
            let mut out: Vec<Scored> = results.into_iter().map(|f| f.0).collect();
            out.sort_by(|a, b| b.cmp(a));
            out
        })
    }

    /// The `ef` nearest undeleted nodes that `accept` allows, nearest first.
    pub fn search(
        &self,
        vecs: &Vectors,
        q: &[f32],
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
        max_visits: usize,
    ) -> Vec<Scored> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        let mut ep = Scored {
            sim: dot(q, vecs.get(entry)),
            id: entry,
        };
        for l in (1..=self.level_of(entry)).rev() {
            ep = self.greedy(vecs, q, ep, l);
        }
        self.search_layer(vecs, q, &[ep], ef, 0, Some(accept), max_visits)
    }

    /// Writes the graph: magic, node count, entry, then per node its flags and
    /// neighbour lists, all little-endian.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&(self.nodes.len() as u64).to_le_bytes())?;
        w.write_all(&self.entry.map_or(u32::MAX, |e| e).to_le_bytes())?;
        w.write_all(&self.rng.to_le_bytes())?;
        for n in &self.nodes {
            w.write_all(&[n.links.len() as u8, u8::from(n.deleted)])?;
            for list in &n.links {
                w.write_all(&(list.len() as u16).to_le_bytes())?;
                for id in list {
                    w.write_all(&id.to_le_bytes())?;
                }
            }
        }
        Ok(())
    }

    /// Reads what [`Hnsw::write_to`] wrote; checks every id against `limit`
    /// (the number of vectors) so a damaged file cannot index out of bounds.
    pub fn read_from(r: &mut impl Read, limit: usize) -> io::Result<Hnsw> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not an HNSW graph file"));
        }
        let n = read_u64(r)? as usize;
        if n > limit {
            return Err(bad("the graph has more nodes than there are vectors"));
        }
        let entry = read_u32(r)?;
        let rng = read_u64(r)?;
        let mut g = Hnsw {
            nodes: Vec::with_capacity(n),
            entry: (entry != u32::MAX).then_some(entry),
            present: 0,
            deleted: 0,
            rng,
        };
        for _ in 0..n {
            let mut head = [0u8; 2];
            r.read_exact(&mut head)?;
            let levels = head[0] as usize;
            if levels > MAX_LEVEL + 1 {
                return Err(bad("a node has too many levels"));
            }
            let mut links = Vec::with_capacity(levels);
            for l in 0..levels {
                let count = read_u16(r)? as usize;
                if count > if l == 0 { M0 } else { M } {
                    return Err(bad("a node has too many neighbours"));
                }
                let mut list = Vec::with_capacity(count);
                for _ in 0..count {
                    let id = read_u32(r)?;
                    if id as usize >= n {
                        return Err(bad("a neighbour id is out of range"));
                    }
                    list.push(id);
                }
                links.push(list);
            }
            let deleted = head[1] != 0 && levels > 0;
            if levels > 0 {
                g.present += 1;
            }
            if deleted {
                g.deleted += 1;
            }
            g.nodes.push(Node { links, deleted });
        }
        if let Some(e) = g.entry {
            if !g.contains(e) {
                return Err(bad("the entry point is not in the graph"));
            }
        }
        // Every neighbour must itself be in the graph on that layer.
        for node in &g.nodes {
            for (l, list) in node.links.iter().enumerate() {
                if list.iter().any(|&id| g.nodes[id as usize].links.len() <= l) {
                    return Err(bad("a neighbour is missing from its layer"));
                }
            }
        }
        Ok(g)
    }
}

const MAGIC: &[u8; 8] = b"BSLTHNS1";

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

/// Malkov's neighbour heuristic: take candidates nearest first, skipping one
/// that is nearer to an already chosen neighbour than to the base; keeps links
/// spread across clusters. Tops up with the skipped ones if too few remain.
/// `cands` is sorted nearest first.
fn select_neighbors(vecs: &Vectors, cands: &[Scored], m: usize) -> Vec<Scored> {
    let mut chosen: Vec<Scored> = Vec::with_capacity(m);
    let mut skipped: Vec<Scored> = Vec::new();
    for &c in cands {
        if chosen.len() >= m {
            break;
        }
        let cv = vecs.get(c.id);
        if chosen.iter().all(|s| dot(cv, vecs.get(s.id)) < c.sim) {
            chosen.push(c);
        } else {
            skipped.push(c);
        }
    }
    for s in skipped {
        if chosen.len() >= m {
            break;
        }
        chosen.push(s);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalised(mut v: Vec<f32>) -> Vec<f32> {
        let n = dot(&v, &v).sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    fn random_vectors(n: usize, dim: usize, seed: u64) -> Vectors {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut vecs = Vectors::new(dim);
        for _ in 0..n {
            let v: Vec<f32> = (0..dim).map(|_| next()).collect();
            vecs.push(&normalised(v));
        }
        vecs
    }

    #[test]
    fn finds_exact_neighbours_on_small_random_sets() {
        let vecs = random_vectors(2000, 16, 7);
        let mut g = Hnsw::new();
        for i in 0..vecs.len() as u32 {
            g.insert(&vecs, i);
        }
        let mut hits = 0;
        for qi in 0..100u32 {
            let q = vecs.get(qi * 7).to_vec();
            let mut exact: Vec<Scored> = (0..vecs.len() as u32)
                .map(|i| Scored {
                    sim: dot(&q, vecs.get(i)),
                    id: i,
                })
                .collect();
            exact.sort_by(|a, b| b.cmp(a));
            let got = g.search(&vecs, &q, 64, &|_| true, usize::MAX);
            let top: Vec<u32> = got.iter().take(10).map(|s| s.id).collect();
            hits += exact[..10].iter().filter(|s| top.contains(&s.id)).count();
        }
        assert!(hits >= 980, "recall {hits}/1000");
    }

    #[test]
    fn deleted_nodes_are_not_returned_and_graph_round_trips() {
        let vecs = random_vectors(500, 8, 3);
        let mut g = Hnsw::new();
        for i in 0..vecs.len() as u32 {
            g.insert(&vecs, i);
        }
        g.mark_deleted(5);
        let q = vecs.get(5).to_vec();
        let got = g.search(&vecs, &q, 10, &|_| true, usize::MAX);
        assert!(got.iter().all(|s| s.id != 5));
        let mut buf = Vec::new();
        g.write_to(&mut buf).expect("write");
        let back = Hnsw::read_from(&mut buf.as_slice(), vecs.len()).expect("read");
        assert_eq!(back.present(), 500);
        assert_eq!(back.deleted(), 1);
        assert_eq!(back.search(&vecs, &q, 10, &|_| true, usize::MAX), got);
        // A truncated or mislabelled file is refused, not trusted.
        assert!(Hnsw::read_from(&mut &buf[..buf.len() / 2], vecs.len()).is_err());
        assert!(Hnsw::read_from(&mut buf.as_slice(), 10).is_err());
    }
}
