//! A trie of token sequences (the catalog's names in the model's own tokens) with a
//! payload at the end of each sequence. Sequences come and go as the catalog changes: a
//! removed one leaves its nodes behind but no longer counted, so that a search never
//! walks into a branch where nothing is left.

/// A node of a [`TokenTrie`].
pub type TrieNode = u32;

/// Most sequences a branch may hold for [`TokenTrie::settled_payloads`] to look into it.
const SETTLED_SEQUENCES: usize = 16;

#[derive(Debug, Clone, Default)]
struct Node {
    /// (token, child), sorted by token.
    children: Vec<(u32, TrieNode)>,
    /// Payloads of the sequences that end here.
    payloads: Vec<u32>,
    /// Sequences through or ending at this node.
    live: u32,
}

/// Token sequences with payloads, walked token by token.
#[derive(Debug, Clone)]
pub struct TokenTrie {
    nodes: Vec<Node>,
    max_depth: usize,
}

impl Default for TokenTrie {
    fn default() -> Self {
        Self {
            nodes: vec![Node::default()],
            max_depth: 0,
        }
    }
}

impl TokenTrie {
    pub fn root(&self) -> TrieNode {
        0
    }

    /// Length of the longest sequence ever inserted.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Sequences held.
    pub fn len(&self) -> usize {
        self.nodes[0].live as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nodes allocated, removed branches included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Adds `tokens` ending in `payload` (an empty sequence is ignored).
    pub fn insert(&mut self, tokens: &[u32], payload: u32) {
        if tokens.is_empty() {
            return;
        }
        self.max_depth = self.max_depth.max(tokens.len());
        let mut node = 0usize;
        self.nodes[0].live += 1;
        for &token in tokens {
            let next = match self.nodes[node]
                .children
                .binary_search_by_key(&token, |&(t, _)| t)
            {
                Ok(i) => self.nodes[node].children[i].1 as usize,
                Err(i) => {
                    let id = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[node].children.insert(i, (token, id as TrieNode));
                    id
                }
            };
            node = next;
            self.nodes[node].live += 1;
        }
        self.nodes[node].payloads.push(payload);
    }

    /// Removes one sequence `tokens` ending in `payload`; false when it is not held.
    pub fn remove(&mut self, tokens: &[u32], payload: u32) -> bool {
        if tokens.is_empty() {
            return false;
        }
        let mut path = Vec::with_capacity(tokens.len() + 1);
        path.push(0usize);
        for &token in tokens {
            let node = *path.last().expect("starts at the root");
            match self.child(node as TrieNode, token) {
                Some(child) => path.push(child as usize),
                None => return false,
            }
        }
        let end = *path.last().expect("starts at the root");
        let Some(i) = self.nodes[end].payloads.iter().position(|&p| p == payload) else {
            return false;
        };
        self.nodes[end].payloads.swap_remove(i);
        for node in path {
            self.nodes[node].live -= 1;
        }
        true
    }

    /// The child of `node` by `token`, if any sequence is left through it.
    pub fn child(&self, node: TrieNode, token: u32) -> Option<TrieNode> {
        let children = &self.nodes[node as usize].children;
        let i = children.binary_search_by_key(&token, |&(t, _)| t).ok()?;
        let child = children[i].1;
        (self.nodes[child as usize].live > 0).then_some(child)
    }

    /// The (token, child) pairs below `node` that still lead somewhere.
    pub fn children(&self, node: TrieNode) -> impl Iterator<Item = (u32, TrieNode)> + '_ {
        self.nodes[node as usize]
            .children
            .iter()
            .copied()
            .filter(|&(_, child)| self.nodes[child as usize].live > 0)
    }

    /// The payloads every sequence left through `node` ends in, when they all end in the
    /// same ones: past that point the trie has nothing left to choose, whether one
    /// sequence is left or several readings of the same entries ("Fly Away" and "Fly
    /// Away by Lenny Kravitz", each held by every album the song is on). `None` for a
    /// branch of more than [`SETTLED_SEQUENCES`] sequences, which is left to the search.
    pub fn settled_payloads(&self, node: TrieNode) -> Option<Vec<u32>> {
        if self.nodes[node as usize].live as usize > SETTLED_SEQUENCES {
            return None;
        }
        let mut settled: Option<Vec<u32>> = None;
        let mut stack = vec![node];
        while let Some(node) = stack.pop() {
            let payloads = &self.nodes[node as usize].payloads;
            if !payloads.is_empty() {
                let mut ending = payloads.clone();
                ending.sort_unstable();
                match &settled {
                    Some(other) if *other != ending => return None,
                    Some(_) => {}
                    None => settled = Some(ending),
                }
            }
            stack.extend(self.children(node).map(|(_, child)| child));
        }
        settled
    }

    /// Payloads of the sequences ending at `node`.
    pub fn payloads(&self, node: TrieNode) -> &[u32] {
        &self.nodes[node as usize].payloads
    }

    /// Bytes the trie holds, for reporting.
    pub fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self
                .nodes
                .iter()
                .map(|n| n.children.capacity() * 8 + n.payloads.capacity() * 4)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(trie: &TokenTrie, tokens: &[u32]) -> Option<TrieNode> {
        tokens
            .iter()
            .try_fold(trie.root(), |node, &t| trie.child(node, t))
    }

    #[test]
    fn sequences_share_prefixes_and_keep_their_payloads() {
        let mut trie = TokenTrie::default();
        trie.insert(&[1, 2, 3], 10);
        trie.insert(&[1, 2], 11);
        trie.insert(&[1, 4], 12);
        assert_eq!(trie.len(), 3);
        assert_eq!(trie.node_count(), 5);
        assert_eq!(trie.payloads(walk(&trie, &[1, 2]).unwrap()), &[11]);
        assert_eq!(trie.payloads(walk(&trie, &[1, 2, 3]).unwrap()), &[10]);
        let below: Vec<u32> = trie
            .children(walk(&trie, &[1]).unwrap())
            .map(|(t, _)| t)
            .collect();
        assert_eq!(below, [2, 4]);
        assert_eq!(trie.max_depth(), 3);
        assert_eq!(
            trie.settled_payloads(walk(&trie, &[1, 4]).unwrap()),
            Some(vec![12])
        );
        assert_eq!(trie.settled_payloads(walk(&trie, &[1, 2]).unwrap()), None);
        assert_eq!(
            trie.settled_payloads(walk(&trie, &[1, 2, 3]).unwrap()),
            Some(vec![10])
        );
    }

    #[test]
    fn readings_of_the_same_entries_settle_a_branch() {
        let mut trie = TokenTrie::default();
        // Two albums' copies of one song, each read with and without its artist.
        for payload in [20, 21] {
            trie.insert(&[5, 6], payload);
            trie.insert(&[5, 6, 7, 8], payload);
        }
        trie.insert(&[5, 9], 22);
        assert_eq!(
            trie.settled_payloads(walk(&trie, &[5, 6]).unwrap()),
            Some(vec![20, 21])
        );
        assert_eq!(trie.settled_payloads(walk(&trie, &[5]).unwrap()), None);
        // A longer title that only one of them has is still a choice.
        trie.insert(&[5, 6, 7, 8, 10], 21);
        assert_eq!(trie.settled_payloads(walk(&trie, &[5, 6]).unwrap()), None);
    }

    #[test]
    fn removed_sequences_close_their_branches() {
        let mut trie = TokenTrie::default();
        trie.insert(&[1, 2, 3], 10);
        trie.insert(&[1, 4], 12);
        assert!(trie.remove(&[1, 2, 3], 10));
        assert!(!trie.remove(&[1, 2, 3], 10));
        assert!(!trie.remove(&[1, 4], 99));
        assert!(walk(&trie, &[1, 2]).is_none());
        let below: Vec<u32> = trie
            .children(walk(&trie, &[1]).unwrap())
            .map(|(t, _)| t)
            .collect();
        assert_eq!(below, [4]);
        trie.insert(&[1, 2, 3], 13);
        assert_eq!(trie.payloads(walk(&trie, &[1, 2, 3]).unwrap()), &[13]);
        assert_eq!(trie.len(), 2);
    }
}
