//! Forced scoring: how likely the model finds given readings of audio it has already
//! heard. A transcription keeps its first window's cross-attention cache as an
//! [`AcousticContext`]; [`Whisper::score_readings`] then teacher-forces any number of
//! texts after a shared prefix (the carrier words of a query) in one tree pass, and
//! [`Whisper::constrained_search`] lets a beam run only where a [`TokenTrie`] allows.

use std::collections::HashMap;

use super::model::DecoderCache;
use super::tree::{NewNode, TokenTree};
use super::trie::{TokenTrie, TrieNode};
use super::{AsrError, Whisper};

/// What scoring needs of a transcribed utterance: the cross-attention cache of its
/// (single) window and the start-of-transcript sequence it was decoded with.
#[derive(Clone)]
pub struct AcousticContext {
    pub(super) fresh: DecoderCache,
    pub(super) start: Vec<u32>,
}

/// A reading's likelihood: summed over its tokens and the end of text that closes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadingScore {
    pub sum_logprob: f32,
    pub tokens: usize,
}

impl ReadingScore {
    /// Mean log-probability per token, which compares readings of different lengths.
    pub fn mean(&self) -> f32 {
        if self.tokens == 0 {
            f32::NEG_INFINITY
        } else {
            self.sum_logprob / self.tokens as f32
        }
    }
}

/// A catalog entry the constrained beam reached: the payload its trie path ends in and
/// the mean log-probability of the path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeamMatch {
    pub payload: u32,
    pub mean_logprob: f32,
}

/// Most nodes one scoring pass decodes: a bound on its cost whatever the caller asks.
const MAX_TREE_NODES: usize = 1024;

impl Whisper {
    /// Token ids of `text` as the decoder would write it after earlier words (with the
    /// leading space Whisper puts before every word).
    pub fn text_tokens(&self, text: &str) -> Result<Vec<u32>, AsrError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .tokenizer
            .encode(format!(" {text}"), false)
            .map_err(|e| AsrError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// Scores each continuation after `prefix`: the log-probability of its tokens and of
    /// the end of text after them, given the audio. Continuations that share a start
    /// share its decoding; those past the decoder's context get no score.
    pub fn score_readings(
        &self,
        context: &AcousticContext,
        prefix: &str,
        continuations: &[String],
    ) -> Result<Vec<Option<ReadingScore>>, AsrError> {
        let mut prompt = context.start.clone();
        prompt.extend(self.text_tokens(prefix)?);
        let room = self
            .model
            .config
            .max_target_positions
            .saturating_sub(prompt.len());
        let mut sequences = Vec::with_capacity(continuations.len());
        for text in continuations {
            let mut tokens = self.text_tokens(text)?;
            tokens.push(self.special.end_of_text);
            sequences.push((tokens.len() <= room).then_some(tokens));
        }
        // The tree of all continuations: a node per distinct (parent, token) but the
        // closing end of text, which is only ever asked for.
        let mut ids: HashMap<(Option<usize>, u32), usize> = HashMap::new();
        let mut nodes: Vec<NewNode> = Vec::new();
        let mut paths: Vec<Option<Vec<usize>>> = Vec::with_capacity(sequences.len());
        for sequence in &sequences {
            let path = sequence.as_ref().and_then(|tokens| {
                let inner = &tokens[..tokens.len() - 1];
                let mut parent = None;
                let known = inner
                    .iter()
                    .take_while(|&&token| match ids.get(&(parent, token)) {
                        Some(&id) => {
                            parent = Some(id);
                            true
                        }
                        None => false,
                    })
                    .count();
                let missing = inner.len() - known;
                if nodes.len() + missing > MAX_TREE_NODES {
                    return None;
                }
                let mut parent = None;
                let mut path = Vec::with_capacity(inner.len());
                for &token in inner {
                    let id = *ids.entry((parent, token)).or_insert_with(|| {
                        nodes.push(NewNode { parent, token });
                        nodes.len() - 1
                    });
                    path.push(id);
                    parent = Some(id);
                }
                Some(path)
            });
            paths.push(path);
        }
        let mut asked: Vec<Vec<u32>> = vec![Vec::new(); nodes.len()];
        let mut first_tokens: Vec<u32> = Vec::new();
        for (sequence, path) in sequences.iter().zip(&paths) {
            let (Some(tokens), Some(path)) = (sequence, path) else {
                continue;
            };
            first_tokens.push(tokens[0]);
            for (i, &node) in path.iter().enumerate() {
                asked[node].push(tokens[i + 1]);
            }
        }
        for list in &mut asked {
            list.sort_unstable();
            list.dedup();
        }
        first_tokens.sort_unstable();
        first_tokens.dedup();

        let mut tree = TokenTree::new(&self.model, &context.fresh, &prompt)?;
        let first: HashMap<u32, f32> = first_tokens
            .iter()
            .copied()
            .zip(tree.prompt_log_probs(&first_tokens)?)
            .collect();
        let scores = tree.extend(&nodes, &asked)?;
        let lookup = |node: usize, token: u32| {
            asked[node]
                .binary_search(&token)
                .map_or(f32::NEG_INFINITY, |i| scores[node][i])
        };
        Ok(sequences
            .iter()
            .zip(&paths)
            .map(|(sequence, path)| {
                let (tokens, path) = (sequence.as_ref()?, path.as_ref()?);
                let mut sum = first[&tokens[0]];
                for (i, &node) in path.iter().enumerate() {
                    sum += lookup(node, tokens[i + 1]);
                }
                Some(ReadingScore {
                    sum_logprob: sum,
                    tokens: tokens.len(),
                })
            })
            .collect())
    }

    /// A beam of `width` paths through `trie` after `prefix`, each step keeping the
    /// likeliest extensions the trie allows; returns every entry a path completed, best
    /// first by mean log-probability, at most `limit`.
    pub fn constrained_search(
        &self,
        context: &AcousticContext,
        prefix: &str,
        trie: &TokenTrie,
        width: usize,
        limit: usize,
    ) -> Result<Vec<BeamMatch>, AsrError> {
        let mut prompt = context.start.clone();
        prompt.extend(self.text_tokens(prefix)?);
        let max_depth = self
            .model
            .config
            .max_target_positions
            .saturating_sub(prompt.len() + 1)
            .min(trie.max_depth());
        let mut tree = TokenTree::new(&self.model, &context.fresh, &prompt)?;
        // A path: its last tree node, its summed log-probability and
        // its length.
        struct Path {
            tree_node: Option<usize>,
            sum: f32,
            len: usize,
        }
        let root = trie.root();
        let first_tokens: Vec<u32> = trie.children(root).map(|(token, _)| token).collect();
        let first_scores = tree.prompt_log_probs(&first_tokens)?;
        let mut frontier: Vec<(Path, u32, TrieNode, f32)> = trie
            .children(root)
            .zip(first_scores)
            .map(|((token, child), lp)| {
                (
                    Path {
                        tree_node: None,
                        sum: 0.0,
                        len: 0,
                    },
                    token,
                    child,
                    lp,
                )
            })
            .collect();
        let mut best: HashMap<u32, f32> = HashMap::new();
        for _ in 0..max_depth {
            frontier.sort_by(|a, b| (b.0.sum + b.3).total_cmp(&(a.0.sum + a.3)));
            frontier.truncate(width);
            if frontier.is_empty() {
                break;
            }
            let nodes: Vec<NewNode> = frontier
                .iter()
                .map(|(path, token, _, _)| NewNode {
                    parent: path.tree_node,
                    token: *token,
                })
                .collect();
            let asked: Vec<Vec<u32>> = frontier
                .iter()
                .map(|(_, _, child, _)| trie.children(*child).map(|(t, _)| t).collect())
                .collect();
            let first_id = tree.node_count();
            let scores = tree.extend(&nodes, &asked)?;
            let mut next = Vec::new();
            for (i, ((path, _, child, lp), child_scores)) in
                frontier.into_iter().zip(scores).enumerate()
            {
                let reached = Path {
                    tree_node: Some(first_id + i),
                    sum: path.sum + lp,
                    len: path.len + 1,
                };
                let mean = reached.sum / reached.len as f32;
                for &payload in trie.payloads(child) {
                    let entry = best.entry(payload).or_insert(f32::NEG_INFINITY);
                    *entry = entry.max(mean);
                }
                for ((token, grandchild), lp) in trie.children(child).zip(child_scores) {
                    next.push((
                        Path {
                            tree_node: reached.tree_node,
                            sum: reached.sum,
                            len: reached.len,
                        },
                        token,
                        grandchild,
                        lp,
                    ));
                }
            }
            frontier = next;
        }
        let mut matches: Vec<BeamMatch> = best
            .into_iter()
            .map(|(payload, mean_logprob)| BeamMatch {
                payload,
                mean_logprob,
            })
            .collect();
        matches.sort_by(|a, b| b.mean_logprob.total_cmp(&a.mean_logprob));
        matches.truncate(limit);
        Ok(matches)
    }
}
