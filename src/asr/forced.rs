//! Forced scoring: how likely the model finds given readings of audio it has already
//! heard. A transcription keeps its first window's cross-attention cache as an
//! [`AcousticContext`]. [`Whisper::score_readings`] then teacher-forces any number of
//! readings, each after the first few words of the transcript (its carrier words), in
//! one tree pass; [`Whisper::constrained_search`] runs beams that may only follow a
//! [`TokenTrie`], entered after several such prefixes at once, since the recognizer
//! mishears carrier words too ("Hotels and" for "hotels in").

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

/// A reading to score: `text` after the transcript's first `after_words` words, closed
/// by the first token of `then` (what the transcript says after the name), or by the
/// end of text when `then` is empty.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    pub after_words: usize,
    pub text: &'a str,
    pub then: &'a str,
}

/// A reading's likelihood: summed over its tokens and the token that closes it.
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

/// A catalog entry a constrained beam reached: the payload its trie path ends in, the
/// mean log-probability of the path, and after how many transcript words it started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeamMatch {
    pub payload: u32,
    pub mean_logprob: f32,
    pub after_words: usize,
}

/// Most nodes one scoring pass decodes: a bound on its cost whatever the caller asks.
const MAX_TREE_NODES: usize = 1024;

/// A reading laid into the tree: its tokens (the closing one last), the node of each
/// token but the closing one, and the node it hangs from (`None`: the prompt).
type ReadingPath = (Vec<u32>, Vec<usize>, Option<usize>);

/// The transcript's first words as a chain of tree nodes: `boundary[k]` is the node
/// after the first `k` words (`None`: the prompt itself).
struct Chain {
    nodes: Vec<NewNode>,
    boundary: Vec<Option<usize>>,
}

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

    /// The first `words` words of a transcript as tree nodes, one boundary per word.
    fn chain(&self, words: &[&str]) -> Result<Chain, AsrError> {
        let mut nodes = Vec::new();
        let mut boundary = vec![None];
        for word in words {
            for token in self.text_tokens(word)? {
                let parent = nodes.len().checked_sub(1);
                nodes.push(NewNode { parent, token });
            }
            boundary.push(nodes.len().checked_sub(1));
        }
        Ok(Chain { nodes, boundary })
    }

    /// Scores each reading: the log-probability of its tokens and of its closing
    /// token, given the audio and the transcript words before it. Readings that share a
    /// start share its decoding; those past the decoder's context or the pass's bound
    /// get no score.
    pub fn score_readings(
        &self,
        context: &AcousticContext,
        words: &[&str],
        readings: &[Reading],
    ) -> Result<Vec<Option<ReadingScore>>, AsrError> {
        let deepest = readings.iter().map(|r| r.after_words).max().unwrap_or(0);
        let chain = self.chain(&words[..deepest.min(words.len())])?;
        let room = self
            .model
            .config
            .max_target_positions
            .saturating_sub(context.start.len() + chain.nodes.len() + 1);
        let mut nodes = chain.nodes.clone();
        let mut ids: HashMap<(Option<usize>, u32), usize> = HashMap::new();
        let mut paths: Vec<Option<ReadingPath>> = Vec::new();
        // Readings mostly share what follows them (the carrier suffix): tokenized once.
        let mut closings: HashMap<&str, u32> = HashMap::new();
        for reading in readings {
            let root = chain.boundary.get(reading.after_words).copied().flatten();
            let mut tokens = self.text_tokens(reading.text)?;
            let closing = match closings.get(reading.then) {
                Some(&token) => token,
                None => {
                    let token = self
                        .text_tokens(reading.then)?
                        .first()
                        .copied()
                        .unwrap_or(self.special.end_of_text);
                    *closings.entry(reading.then).or_insert(token)
                }
            };
            if tokens.is_empty()
                || tokens.len() + 1 > room
                || reading.after_words >= chain.boundary.len()
            {
                paths.push(None);
                continue;
            }
            let mut parent = root;
            let known = tokens
                .iter()
                .take_while(|&&token| match ids.get(&(parent, token)) {
                    Some(&id) => {
                        parent = Some(id);
                        true
                    }
                    None => false,
                })
                .count();
            if nodes.len() + tokens.len() - known > MAX_TREE_NODES {
                paths.push(None);
                continue;
            }
            let mut parent = root;
            let mut path = Vec::with_capacity(tokens.len());
            for &token in &tokens {
                let id = *ids.entry((parent, token)).or_insert_with(|| {
                    nodes.push(NewNode { parent, token });
                    nodes.len() - 1
                });
                path.push(id);
                parent = Some(id);
            }
            tokens.push(closing);
            paths.push(Some((tokens, path, root)));
        }
        // What each node is asked to predict; the prompt's own row predicts readings
        // that start the transcript.
        let mut asked: Vec<Vec<u32>> = vec![Vec::new(); nodes.len()];
        let mut from_prompt: Vec<u32> = Vec::new();
        for (tokens, path, root) in paths.iter().flatten() {
            match root {
                Some(node) => asked[*node].push(tokens[0]),
                None => from_prompt.push(tokens[0]),
            }
            for (i, &node) in path.iter().enumerate() {
                asked[node].push(tokens[i + 1]);
            }
        }
        for list in asked.iter_mut().chain(std::iter::once(&mut from_prompt)) {
            list.sort_unstable();
            list.dedup();
        }
        let mut tree = TokenTree::new(&self.model, &context.fresh, &context.start)?;
        let prompt_scores = tree.prompt_log_probs(&from_prompt)?;
        let scores = tree.extend(&nodes, &asked)?;
        let lookup = |node: Option<usize>, token: u32| {
            let (list, values) = match node {
                Some(n) => (&asked[n], &scores[n]),
                None => (&from_prompt, &prompt_scores),
            };
            list.binary_search(&token)
                .map_or(f32::NEG_INFINITY, |i| values[i])
        };
        Ok(paths
            .iter()
            .map(|entry| {
                let (tokens, path, root) = entry.as_ref()?;
                let mut sum = lookup(*root, tokens[0]);
                for (i, &node) in path.iter().enumerate() {
                    sum += lookup(Some(node), tokens[i + 1]);
                }
                Some(ReadingScore {
                    sum_logprob: sum,
                    tokens: tokens.len(),
                })
            })
            .collect())
    }

    /// Beams of `width` paths through `trie`, one entered after each count of
    /// transcript words in `entries`, all decoded together; each step keeps a beam's
    /// likeliest extensions the trie allows. Returns the entries the paths reached (each
    /// at its best), best first by mean log-probability, at most `limit`.
    pub fn constrained_search(
        &self,
        context: &AcousticContext,
        words: &[&str],
        entries: &[usize],
        trie: &TokenTrie,
        width: usize,
        limit: usize,
    ) -> Result<Vec<BeamMatch>, AsrError> {
        let entries: Vec<usize> = entries
            .iter()
            .copied()
            .filter(|&e| e <= words.len())
            .collect();
        let deepest = entries.iter().copied().max().unwrap_or(0);
        let chain = self.chain(&words[..deepest])?;
        let max_depth = self
            .model
            .config
            .max_target_positions
            .saturating_sub(context.start.len() + chain.nodes.len() + 1)
            .min(trie.max_depth());
        let mut tree = TokenTree::new(&self.model, &context.fresh, &context.start)?;
        let root = trie.root();
        let first_tokens: Vec<u32> = trie.children(root).map(|(token, _)| token).collect();
        // The chain, each entry boundary asked for the trie's first tokens.
        let mut asked: Vec<Vec<u32>> = vec![Vec::new(); chain.nodes.len()];
        let mut prompt_entry = false;
        for &entry in &entries {
            match chain.boundary[entry] {
                Some(node) => asked[node] = first_tokens.clone(),
                None => prompt_entry = true,
            }
        }
        let mut chain_scores = tree.extend(&chain.nodes, &asked)?;
        let prompt_scores = if prompt_entry {
            tree.prompt_log_probs(&first_tokens)?
        } else {
            Vec::new()
        };
        /// A path: its entry, last tree node, summed log-probability and length, and
        /// the extension under consideration (token, trie child, its log-probability).
        struct Step {
            entry: usize,
            tree_node: Option<usize>,
            sum: f32,
            len: usize,
            token: u32,
            child: TrieNode,
            logprob: f32,
        }
        let mut frontier: Vec<Step> = Vec::new();
        for &entry in &entries {
            let node = chain.boundary[entry];
            let scores = match node {
                Some(n) => std::mem::take(&mut chain_scores[n]),
                None => prompt_scores.clone(),
            };
            for ((token, child), logprob) in trie.children(root).zip(scores) {
                frontier.push(Step {
                    entry,
                    tree_node: node,
                    sum: 0.0,
                    len: 0,
                    token,
                    child,
                    logprob,
                });
            }
        }
        let mut best: HashMap<u32, (f32, usize)> = HashMap::new();
        let mut record = |payload: u32, mean: f32, entry: usize| {
            let slot = best.entry(payload).or_insert((f32::NEG_INFINITY, entry));
            if mean > slot.0 {
                *slot = (mean, entry);
            }
        };
        for _ in 0..max_depth {
            // Each beam keeps its own `width` best, so that one entry point cannot
            // crowd out the others.
            frontier.sort_by(|a, b| {
                a.entry
                    .cmp(&b.entry)
                    .then((b.sum + b.logprob).total_cmp(&(a.sum + a.logprob)))
            });
            let mut kept = Vec::with_capacity(width * entries.len());
            let mut count: HashMap<usize, usize> = HashMap::new();
            for step in frontier {
                let taken = count.entry(step.entry).or_default();
                if *taken >= width {
                    continue;
                }
                *taken += 1;
                let mean = (step.sum + step.logprob) / (step.len + 1) as f32;
                // A path into a branch that holds one entry has found it.
                match trie.sole_payload(step.child) {
                    Some(payload) => record(payload, mean, step.entry),
                    None => kept.push(step),
                }
            }
            if kept.is_empty() {
                break;
            }
            let nodes: Vec<NewNode> = kept
                .iter()
                .map(|s| NewNode {
                    parent: s.tree_node,
                    token: s.token,
                })
                .collect();
            let asked: Vec<Vec<u32>> = kept
                .iter()
                .map(|s| trie.children(s.child).map(|(t, _)| t).collect())
                .collect();
            let first_id = tree.node_count();
            let scores = tree.extend(&nodes, &asked)?;
            let mut next = Vec::new();
            for (i, (step, child_scores)) in kept.into_iter().zip(scores).enumerate() {
                let sum = step.sum + step.logprob;
                let len = step.len + 1;
                for &payload in trie.payloads(step.child) {
                    record(payload, sum / len as f32, step.entry);
                }
                for ((token, child), logprob) in trie.children(step.child).zip(child_scores) {
                    next.push(Step {
                        entry: step.entry,
                        tree_node: Some(first_id + i),
                        sum,
                        len,
                        token,
                        child,
                        logprob,
                    });
                }
            }
            frontier = next;
        }
        let mut matches: Vec<BeamMatch> = best
            .into_iter()
            .map(|(payload, (mean_logprob, after_words))| BeamMatch {
                payload,
                mean_logprob,
                after_words,
            })
            .collect();
        matches.sort_by(|a, b| b.mean_logprob.total_cmp(&a.mean_logprob));
        matches.truncate(limit);
        Ok(matches)
    }
}
