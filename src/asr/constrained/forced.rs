//! Forced scoring: how likely the model finds given readings of audio it has already
//! heard. A transcription keeps its first window's cross-attention cache as an
//! [`AcousticContext`], from which [`Whisper::token_tree`] starts one utterance's
//! [`TokenTree`]. [`Whisper::constrained_search`] runs beams in it that may only follow
//! a [`TokenTrie`], entered after several of the transcript's first words at once, since
//! the recognizer mishears carrier words too ("Hotels and" for "hotels in");
//! [`Whisper::score_readings`] then teacher-forces any number of readings, each after
//! the transcript's carrier words, in one pass over what the beams left undecoded.

use std::collections::HashMap;

use super::tree::{Parent, PromptPass, TokenTree};
use super::trie::{TokenTrie, TrieNode};
use crate::asr::{AsrError, Whisper};

/// What scoring needs of a transcribed utterance: its (single) window's decoding
/// prompt as the decoder left it, over the window's cross-attention cache.
#[derive(Clone)]
pub struct AcousticContext {
    pub(in crate::asr) prompt: PromptPass,
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

/// Most nodes an utterance's tree holds: a bound on its cost whatever the caller asks.
const MAX_TREE_NODES: usize = 1024;

/// A reading laid into the tree: where it hangs, its tokens (the closing one last) and
/// the node of each token but the closing one.
type ReadingPath = (Parent, Vec<u32>, Vec<usize>);

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

    /// The tree that an utterance's beams and scoring grow together, after the
    /// transcript's start-of-transcript sequence, over its cross-attention cache.
    pub fn token_tree(&self, context: &AcousticContext) -> TokenTree<'_> {
        TokenTree::new(&self.model, &context.prompt)
    }

    /// The first words of a transcript laid into the tree: `boundary[k]` is where the
    /// text after the first `k` words hangs.
    fn chain(&self, tree: &mut TokenTree, words: &[&str]) -> Result<Vec<Parent>, AsrError> {
        let mut boundary = vec![None];
        let mut at = None;
        for word in words {
            for token in self.text_tokens(word)? {
                at = Some(tree.add(at, token));
            }
            boundary.push(at);
        }
        Ok(boundary)
    }

    /// Scores each reading: the log-probability of its tokens and of its closing
    /// token, given the audio and the transcript words before it. Readings share what
    /// the tree already holds (each other's starts, the beams' paths); those past the
    /// decoder's context or the tree's bound get no score.
    pub fn score_readings(
        &self,
        tree: &mut TokenTree,
        words: &[&str],
        readings: &[Reading],
    ) -> Result<Vec<Option<ReadingScore>>, AsrError> {
        let deepest = readings.iter().map(|r| r.after_words).max().unwrap_or(0);
        let boundary = self.chain(tree, &words[..deepest.min(words.len())])?;
        // Readings mostly share what follows them (the carrier suffix): tokenized once.
        let mut closings: HashMap<&str, u32> = HashMap::new();
        let mut paths: Vec<Option<ReadingPath>> = Vec::with_capacity(readings.len());
        for reading in readings {
            let Some(&root) = boundary.get(reading.after_words) else {
                paths.push(None);
                continue;
            };
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
            if tokens.is_empty() || tokens.len() + 1 > tree.room_after(root) {
                paths.push(None);
                continue;
            }
            let mut at = root;
            let known = tokens
                .iter()
                .take_while(|&&token| match tree.find(at, token) {
                    Some(node) => {
                        at = Some(node);
                        true
                    }
                    None => false,
                })
                .count();
            if tree.len() + tokens.len() - known > MAX_TREE_NODES {
                paths.push(None);
                continue;
            }
            let mut at = root;
            let nodes: Vec<usize> = tokens
                .iter()
                .map(|&token| {
                    let node = tree.add(at, token);
                    at = Some(node);
                    node
                })
                .collect();
            tokens.push(closing);
            paths.push(Some((root, tokens, nodes)));
        }
        // Each token of a reading is asked of the node before it.
        let asks: Vec<(Parent, Vec<u32>)> = paths
            .iter()
            .flatten()
            .flat_map(|(root, tokens, nodes)| {
                std::iter::once(*root)
                    .chain(nodes.iter().map(|&n| Some(n)))
                    .zip(tokens)
                    .map(|(at, &token)| (at, vec![token]))
            })
            .collect();
        let mut scores = tree.log_probs(&asks)?.into_iter().map(|s| s[0]);
        Ok(paths
            .iter()
            .map(|path| {
                let (_, tokens, _) = path.as_ref()?;
                let sum_logprob = scores.by_ref().take(tokens.len()).sum();
                Some(ReadingScore {
                    sum_logprob,
                    tokens: tokens.len(),
                })
            })
            .collect())
    }

    /// Beams of `width` paths through `trie`, one entered after each count of
    /// transcript words in `entries`, all decoded together; each step keeps a beam's
    /// likeliest extensions the trie allows. Returns the entries the paths reached (each
    /// at its best), best first by mean log-probability: `limit` of them, and past it any
    /// tied with the last (see [`Reached::best_first`]).
    pub fn constrained_search(
        &self,
        tree: &mut TokenTree,
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
        let boundary = self.chain(tree, &words[..deepest])?;
        let max_depth = tree
            .room_after(boundary[deepest])
            .saturating_sub(1)
            .min(trie.max_depth());
        let mut frontier = first_steps(tree, trie, &entries, &boundary)?;
        let mut reached = Reached::default();
        for _ in 0..max_depth {
            let kept = keep_best(frontier, width, entries.len(), trie, &mut reached);
            if kept.is_empty() || tree.len() + kept.len() > MAX_TREE_NODES {
                break;
            }
            frontier = extend(tree, trie, kept, &mut reached)?;
        }
        Ok(reached.best_first(limit))
    }
}

/// A path of the constrained beam: its entry, last tree node, summed log-probability and
/// length, and the extension under consideration (token, trie child, its
/// log-probability).
struct Step {
    entry: usize,
    at: Parent,
    sum: f32,
    len: usize,
    token: u32,
    child: TrieNode,
    logprob: f32,
}

/// The first steps of every beam: each of the trie's first tokens after each entry point.
fn first_steps(
    tree: &mut TokenTree,
    trie: &TokenTrie,
    entries: &[usize],
    boundary: &[Parent],
) -> Result<Vec<Step>, AsrError> {
    let root = trie.root();
    let first_tokens: Vec<u32> = trie.children(root).map(|(token, _)| token).collect();
    let asks: Vec<(Parent, Vec<u32>)> = entries
        .iter()
        .map(|&entry| (boundary[entry], first_tokens.clone()))
        .collect();
    let entry_scores = tree.log_probs(&asks)?;
    let mut frontier = Vec::new();
    for (&entry, scores) in entries.iter().zip(entry_scores) {
        for ((token, child), logprob) in trie.children(root).zip(scores) {
            frontier.push(Step {
                entry,
                at: boundary[entry],
                sum: 0.0,
                len: 0,
                token,
                child,
                logprob,
            });
        }
    }
    Ok(frontier)
}

/// Each beam's `width` best steps (so that one entry point cannot crowd out the others);
/// a step into a branch that holds one entry (or readings of the same entries only) has
/// found it and goes no further.
fn keep_best(
    mut frontier: Vec<Step>,
    width: usize,
    beams: usize,
    trie: &TokenTrie,
    reached: &mut Reached,
) -> Vec<Step> {
    frontier.sort_by(|a, b| {
        a.entry
            .cmp(&b.entry)
            .then((b.sum + b.logprob).total_cmp(&(a.sum + a.logprob)))
    });
    let mut kept = Vec::with_capacity(width * beams);
    let mut count: HashMap<usize, usize> = HashMap::new();
    for step in frontier {
        let taken = count.entry(step.entry).or_default();
        if *taken >= width {
            continue;
        }
        *taken += 1;
        let mean = (step.sum + step.logprob) / (step.len + 1) as f32;
        match trie.settled_payloads(step.child) {
            Some(payloads) => {
                for payload in payloads {
                    reached.record(payload, mean, step.entry);
                }
            }
            None => kept.push(step),
        }
    }
    kept
}

/// Takes the kept steps into the tree, records the entries they end, and gives the next
/// steps: each of the trie's children after each.
fn extend(
    tree: &mut TokenTree,
    trie: &TokenTrie,
    kept: Vec<Step>,
    reached: &mut Reached,
) -> Result<Vec<Step>, AsrError> {
    let nodes: Vec<usize> = kept.iter().map(|s| tree.add(s.at, s.token)).collect();
    let asks: Vec<(Parent, Vec<u32>)> = kept
        .iter()
        .zip(&nodes)
        .map(|(s, &node)| (Some(node), trie.children(s.child).map(|(t, _)| t).collect()))
        .collect();
    let scores = tree.log_probs(&asks)?;
    let mut next = Vec::new();
    for ((step, node), child_scores) in kept.into_iter().zip(nodes).zip(scores) {
        let sum = step.sum + step.logprob;
        let len = step.len + 1;
        for &payload in trie.payloads(step.child) {
            reached.record(payload, sum / len as f32, step.entry);
        }
        for ((token, child), logprob) in trie.children(step.child).zip(child_scores) {
            next.push(Step {
                entry: step.entry,
                at: Some(node),
                sum,
                len,
                token,
                child,
                logprob,
            });
        }
    }
    Ok(next)
}

/// The entries the beams reached, each at its best mean log-probability and the entry
/// point it was reached from.
#[derive(Default)]
struct Reached(HashMap<u32, (f32, usize)>);

impl Reached {
    fn record(&mut self, payload: u32, mean: f32, entry: usize) {
        let slot = self.0.entry(payload).or_insert((f32::NEG_INFINITY, entry));
        if mean > slot.0 {
            *slot = (mean, entry);
        }
    }

    fn best_first(self, limit: usize) -> Vec<BeamMatch> {
        let mut matches: Vec<BeamMatch> = self
            .0
            .into_iter()
            .map(|(payload, (mean_logprob, after_words))| BeamMatch {
                payload,
                mean_logprob,
                after_words,
            })
            .collect();
        // Payloads order ties, since the map's order changes from one process to the next;
        // matches tied with the last one kept stay, since payload numbers follow the order
        // the entries were added in, and only the caller knows a tie-break that does not.
        matches.sort_by(|a, b| {
            b.mean_logprob
                .total_cmp(&a.mean_logprob)
                .then(a.payload.cmp(&b.payload))
        });
        let keep = match limit.checked_sub(1).and_then(|last| matches.get(last)) {
            Some(last) => {
                let last = last.mean_logprob;
                limit
                    + matches[limit..]
                        .iter()
                        .take_while(|m| m.mean_logprob == last)
                        .count()
            }
            None => limit,
        };
        matches.truncate(keep);
        matches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries tied with the last one kept are all returned, whatever their payloads, so
    /// that the caller's tie-break decides which of them stay.
    #[test]
    fn ties_at_the_limit_are_kept() {
        let best_first = |limit| -> Vec<u32> {
            let mut reached = Reached::default();
            for (payload, mean) in [(4, -1.0), (9, -2.0), (1, -2.0), (7, -2.0), (3, -3.0)] {
                reached.record(payload, mean, 0);
            }
            reached
                .best_first(limit)
                .into_iter()
                .map(|m| m.payload)
                .collect()
        };
        assert_eq!(best_first(2), [4, 1, 7, 9]);
        assert_eq!(best_first(0), Vec::<u32>::new());
    }
}
