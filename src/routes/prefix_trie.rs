//! The path-prefix index of a bucket with many routes: a trie over path segments.
//!
//! A lookup walks the request path one segment at a time, each step one child lookup (a
//! comparison or two for a node with few children, one hash probe for a node with many), and
//! stops where the trie ends. The deepest match is the longest prefix, so the walk only
//! remembers the last match that allows the method. The cost grows with the depth of the
//! path, not with the number of routes: 10,000 prefixes on one host cost about what 10 do.
//!
//! A prefix is its segments after the leading `/`. One without a trailing `/` (`/v1/items`)
//! sits at the node of its segments and matches any path that has those segments first (the
//! path then ends or goes on with `/`). One with a trailing `/` (`/v1/`) sits at the node of
//! the segments before it and matches only paths that go on past them. `/` matches every
//! path, including ones that do not start with `/`.

use std::collections::HashMap;
use std::ops::Range;

type FxHashMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// Nodes with more children than this look them up by hash, others by comparison.
const FEW_CHILDREN: usize = 4;

/// The trie of one bucket. Entry ranges index the bucket's sorted entries (the routes with
/// one prefix are adjacent there, most specific first).
#[derive(Debug, Clone)]
pub(super) struct PrefixTrie {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Routes whose prefix ends at this node without a trailing `/`.
    exact: Range<u32>,
    /// Routes whose prefix is this node's segments followed by `/`.
    slash: Range<u32>,
    children: Children,
}

#[derive(Debug, Clone)]
enum Children {
    Few(Vec<(Box<str>, u32)>),
    Many(FxHashMap<Box<str>, u32>),
}

impl Default for Children {
    fn default() -> Self {
        Children::Few(Vec::new())
    }
}

impl Children {
    #[inline]
    fn get(&self, segment: &str) -> Option<u32> {
        match self {
            Children::Few(few) => few.iter().find(|(s, _)| &**s == segment).map(|&(_, node)| node),
            Children::Many(many) => many.get(segment).copied(),
        }
    }
}

impl PrefixTrie {
    /// The trie of `prefixes`: each distinct prefix with the range of entries that have it.
    pub(super) fn new<'a>(prefixes: impl Iterator<Item = (&'a str, Range<usize>)>) -> PrefixTrie {
        let mut trie = PrefixTrie { nodes: vec![Node::default()] };
        for (prefix, range) in prefixes {
            let range = u32::try_from(range.start).unwrap_or(u32::MAX)..u32::try_from(range.end).unwrap_or(u32::MAX);
            let rest = prefix.strip_prefix('/').unwrap_or(prefix);
            let (segments, slash) = match rest.strip_suffix('/') {
                Some(before) => (before, true),
                None if rest.is_empty() => ("", true),
                None => (rest, false),
            };
            let mut node = 0;
            // "/" and "//" differ: the first has no segment before its slash, the second one
            // empty segment.
            if !(slash && prefix.len() <= 1) {
                for segment in segments.split('/') {
                    node = trie.child_or_insert(node, segment);
                }
            }
            let at = &mut trie.nodes[node];
            if slash {
                at.slash = range;
            } else {
                at.exact = range;
            }
        }
        for node in &mut trie.nodes {
            if let Children::Few(few) = &mut node.children {
                if few.len() > FEW_CHILDREN {
                    node.children = Children::Many(std::mem::take(few).into_iter().collect());
                }
            }
        }
        trie
    }

    fn child_or_insert(&mut self, node: usize, segment: &str) -> usize {
        if let Some(child) = self.nodes[node].children.get(segment) {
            return child as usize;
        }
        let child = self.nodes.len();
        self.nodes.push(Node::default());
        if let Children::Few(few) = &mut self.nodes[node].children {
            few.push((segment.into(), u32::try_from(child).unwrap_or(u32::MAX)));
        }
        child
    }

    /// The most specific match for `path` that `accept` takes: `accept` gets the entries of
    /// one prefix and picks one (or none, when none allows the request's method).
    pub(super) fn find(&self, path: &str, accept: impl Fn(Range<usize>) -> Option<usize>) -> Option<usize> {
        let pick = |range: &Range<u32>| {
            if range.is_empty() {
                None
            } else {
                accept(range.start as usize..range.end as usize)
            }
        };
        let root = &self.nodes[0];
        let mut best = pick(&root.slash);
        let end = memchr::memchr2(b'?', b'#', path.as_bytes()).unwrap_or(path.len());
        let Some(mut rest) = path.get(..end).and_then(|base| base.strip_prefix('/')) else {
            return best;
        };
        let mut node = root;
        loop {
            let (segment, more) = match memchr::memchr(b'/', rest.as_bytes()) {
                Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
                None => (rest, None),
            };
            let Some(child) = node.children.get(segment) else { return best };
            node = &self.nodes[child as usize];
            if let Some(found) = pick(&node.exact) {
                best = Some(found);
            }
            match more {
                Some(next) => {
                    if let Some(found) = pick(&node.slash) {
                        best = Some(found);
                    }
                    rest = next;
                }
                None => return best,
            }
        }
    }
}
