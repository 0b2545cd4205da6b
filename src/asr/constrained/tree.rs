//! Decoding a tree of continuations of one prompt: every node is a token that sees the
//! prompt and its own ancestors only (a tree attention mask), at the position its depth
//! gives it, so that many continuations decode as one sequence over a single copy of the
//! window's cross-attention cache. The catalog-constrained beam and forced scoring of
//! readings grow one such tree per utterance: a node is decoded once, whoever asks for
//! it first, and once a node's normalizer is known, any later question about what
//! follows it costs one dot product.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::asr::model::{DecoderCache, WhisperModel};
use crate::asr::AsrError;

/// Where a continuation hangs: `None` is the end of the prompt, `Some(id)` a node.
pub type Parent = Option<usize>;

/// The prompt and the nodes of one utterance's tree, with their keys and values cached.
pub struct TokenTree<'m> {
    model: &'m WhisperModel,
    cache: DecoderCache,
    prompt_len: usize,
    parents: Vec<Parent>,
    tokens: Vec<u32>,
    depths: Vec<u32>,
    children: HashMap<(Parent, u32), usize>,
    /// Nodes from this id on are added but not decoded yet.
    decoded: usize,
    /// The final hidden state after the prompt's last token, and after each decoded node.
    prompt_hidden: Vec<f32>,
    hidden: Vec<Vec<f32>>,
    /// Log-sum-exp of the logits after a prompt or node, once computed.
    normalizers: HashMap<Parent, f32>,
}

/// A prompt (start-of-transcript sequence and any forced text) run through the decoder:
/// the cache after it and the final hidden state after its last token. Decoding a window
/// runs its prompt first, so a tree grown over the same window starts from that pass.
#[derive(Clone)]
pub struct PromptPass {
    cache: DecoderCache,
    len: usize,
    last_hidden: Vec<f32>,
}

impl std::fmt::Debug for PromptPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PromptPass({} tokens)", self.len)
    }
}

impl PromptPass {
    /// The decoder's cache after the start sequence: the window's audio among it.
    pub(in crate::asr) fn cache(&self) -> &DecoderCache {
        &self.cache
    }

    /// The pass that left `cache` and the hidden states [1, prompt length, d_model].
    pub fn from_hidden(cache: DecoderCache, hidden: &Tensor) -> Result<Self, AsrError> {
        let len = hidden.dim(1)?;
        let last_hidden = hidden
            .squeeze(0)?
            .narrow(0, len - 1, 1)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
        Ok(Self {
            cache,
            len,
            last_hidden,
        })
    }
}

impl<'m> TokenTree<'m> {
    /// A tree over the window of `prompt`, hanging after it.
    pub fn new(model: &'m WhisperModel, prompt: &PromptPass) -> Self {
        Self {
            model,
            cache: prompt.cache.clone(),
            prompt_len: prompt.len,
            parents: Vec::new(),
            tokens: Vec::new(),
            depths: Vec::new(),
            children: HashMap::new(),
            decoded: 0,
            prompt_hidden: prompt.last_hidden.clone(),
            hidden: Vec::new(),
            normalizers: HashMap::new(),
        }
    }

    /// The node for `token` after `parent`: the one already there, or a new one, decoded
    /// with the others added before the next [`TokenTree::log_probs`].
    pub fn add(&mut self, parent: Parent, token: u32) -> usize {
        if let Some(&id) = self.children.get(&(parent, token)) {
            return id;
        }
        let depth = parent.map_or(0, |p| self.depths[p] + 1);
        let id = self.parents.len();
        self.parents.push(parent);
        self.tokens.push(token);
        self.depths.push(depth);
        self.children.insert((parent, token), id);
        id
    }

    /// The node for `token` after `parent`, if the tree has one.
    pub fn find(&self, parent: Parent, token: u32) -> Option<usize> {
        self.children.get(&(parent, token)).copied()
    }

    /// Nodes in the tree, decoded or not.
    pub fn len(&self) -> usize {
        self.parents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parents.is_empty()
    }

    /// How many more tokens fit after `at` within the decoder's context.
    pub fn room_after(&self, at: Parent) -> usize {
        let used = self.prompt_len + at.map_or(0, |node| self.depths[node] as usize + 1);
        self.model.config.max_target_positions.saturating_sub(used)
    }

    /// For each ask (a prompt or node, and tokens), the log-probabilities of those tokens
    /// following it. Decodes the nodes added since the last call in one pass, then
    /// computes the normalizers not known yet in one pass over the vocabulary.
    pub fn log_probs(&mut self, asks: &[(Parent, Vec<u32>)]) -> Result<Vec<Vec<f32>>, AsrError> {
        self.decode_added()?;
        // Everything asked of each row whose normalizer is new, asked in one pass.
        let mut fresh: Vec<(Parent, Vec<u32>)> = Vec::new();
        let mut row_of: HashMap<Parent, usize> = HashMap::new();
        for (at, tokens) in asks {
            if self.normalizers.contains_key(at) {
                continue;
            }
            let row = *row_of.entry(*at).or_insert_with(|| {
                fresh.push((*at, Vec::new()));
                fresh.len() - 1
            });
            fresh[row].1.extend(tokens);
        }
        for (_, tokens) in &mut fresh {
            tokens.sort_unstable();
            tokens.dedup();
        }
        let mut fresh_scores = Vec::new();
        if !fresh.is_empty() {
            let hidden: Vec<&[f32]> = fresh.iter().map(|(at, _)| self.hidden_after(*at)).collect();
            let targets: Vec<Vec<u32>> = fresh.iter().map(|(_, t)| t.clone()).collect();
            let (normalizers, scores) = self.model.decoder.target_log_probs(&hidden, &targets);
            for ((at, _), normalizer) in fresh.iter().zip(normalizers) {
                self.normalizers.insert(*at, normalizer);
            }
            fresh_scores = scores;
        }
        Ok(asks
            .iter()
            .map(|(at, tokens)| match row_of.get(at) {
                Some(&row) => {
                    let (known, scores) = (&fresh[row].1, &fresh_scores[row]);
                    tokens
                        .iter()
                        .map(|t| {
                            known
                                .binary_search(t)
                                .map_or(f32::NEG_INFINITY, |i| scores[i])
                        })
                        .collect()
                }
                None => {
                    let normalizer = self.normalizers[at];
                    let hidden = self.hidden_after(*at);
                    tokens
                        .iter()
                        .map(|&t| self.model.decoder.logit(hidden, t) - normalizer)
                        .collect()
                }
            })
            .collect())
    }

    fn hidden_after(&self, at: Parent) -> &[f32] {
        match at {
            Some(node) => &self.hidden[node],
            None => &self.prompt_hidden,
        }
    }

    /// Decodes the nodes added since the last pass, each seeing the prompt and its own
    /// ancestors.
    fn decode_added(&mut self) -> Result<(), AsrError> {
        let first = self.decoded;
        let count = self.parents.len() - first;
        if count == 0 {
            return Ok(());
        }
        let total = self.prompt_len + self.parents.len();
        let mut mask = vec![f32::NEG_INFINITY; count * total];
        let mut positions = Vec::with_capacity(count);
        for (row, id) in (first..self.parents.len()).enumerate() {
            let visible = &mut mask[row * total..(row + 1) * total];
            visible[..self.prompt_len].fill(0.0);
            let mut ancestor = Some(id);
            while let Some(a) = ancestor {
                visible[self.prompt_len + a] = 0.0;
                ancestor = self.parents[a];
            }
            positions.push(self.prompt_len as u32 + self.depths[id]);
        }
        let device = Device::Cpu;
        let mask = Tensor::from_vec(mask, (count, total), &device)?;
        let input = Tensor::new(&self.tokens[first..], &device)?.unsqueeze(0)?;
        let hidden = self
            .model
            .decoder
            .forward_tree(&input, &positions, &mask, &mut self.cache)?
            .squeeze(0)?
            .to_vec2::<f32>()?;
        self.hidden.extend(hidden);
        self.decoded = self.parents.len();
        Ok(())
    }
}
