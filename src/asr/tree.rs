//! Decoding a tree of continuations of one prompt in a single pass: every node is a token
//! that sees the prompt and its own ancestors only (a tree attention mask), at the
//! position its depth gives it. Forced scoring of many readings and the
//! catalog-constrained beam both grow such a tree over one window's cross-attention
//! cache, which is never copied per reading.

use candle_core::{Device, Tensor};

use super::model::{DecoderCache, WhisperModel};
use super::AsrError;

/// A node to add: its parent (`None` hangs it under the prompt) and its token.
#[derive(Debug, Clone, Copy)]
pub struct NewNode {
    pub parent: Option<usize>,
    pub token: u32,
}

/// The prompt and the nodes decoded so far, with their keys and values cached.
pub struct TokenTree<'m> {
    model: &'m WhisperModel,
    cache: DecoderCache,
    prompt_len: usize,
    parents: Vec<Option<usize>>,
    depths: Vec<u32>,
    /// The hidden state after the prompt's last token, which predicts the first node.
    prompt_hidden: Tensor,
}

impl<'m> TokenTree<'m> {
    /// Runs `prompt` (start-of-transcript sequence and any forced text) after `fresh`.
    pub fn new(
        model: &'m WhisperModel,
        fresh: &DecoderCache,
        prompt: &[u32],
    ) -> Result<Self, AsrError> {
        let mut cache = fresh.clone();
        let input = Tensor::new(prompt, &Device::Cpu)?.unsqueeze(0)?;
        let hidden = model.decoder.forward(&input, &mut cache)?;
        let prompt_hidden = hidden.squeeze(0)?.narrow(0, prompt.len() - 1, 1)?;
        Ok(Self {
            model,
            cache,
            prompt_len: prompt.len(),
            parents: Vec::new(),
            depths: Vec::new(),
            prompt_hidden,
        })
    }

    /// Log-probabilities of `targets` as the first token after the prompt.
    pub fn prompt_log_probs(&self, targets: &[u32]) -> Result<Vec<f32>, AsrError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .model
            .decoder
            .target_log_probs(&self.prompt_hidden, &[targets.to_vec()])?
            .swap_remove(0))
    }

    /// Adds nodes (parents before children) and returns, for each new node, the
    /// log-probabilities of the tokens `targets` asks to follow it. Node ids count up
    /// from 0 in the order of addition.
    pub fn extend(
        &mut self,
        nodes: &[NewNode],
        targets: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>, AsrError> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.parents.len();
        for node in nodes {
            let depth = node.parent.map_or(0, |p| self.depths[p] + 1);
            self.parents.push(node.parent);
            self.depths.push(depth);
        }
        let total = self.prompt_len + self.parents.len();
        let mut mask = vec![f32::NEG_INFINITY; nodes.len() * total];
        let mut positions = Vec::with_capacity(nodes.len());
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
        let mask = Tensor::from_vec(mask, (nodes.len(), total), &device)?;
        let tokens: Vec<u32> = nodes.iter().map(|n| n.token).collect();
        let input = Tensor::new(tokens.as_slice(), &device)?.unsqueeze(0)?;
        let hidden = self
            .model
            .decoder
            .forward_tree(&input, &positions, &mask, &mut self.cache)?
            .squeeze(0)?;
        let wanted: Vec<usize> = (0..nodes.len())
            .filter(|&i| !targets[i].is_empty())
            .collect();
        let mut out = vec![Vec::new(); nodes.len()];
        if wanted.is_empty() {
            return Ok(out);
        }
        let rows = Tensor::new(
            wanted
                .iter()
                .map(|&i| i as u32)
                .collect::<Vec<_>>()
                .as_slice(),
            &device,
        )?;
        let asked: Vec<Vec<u32>> = wanted.iter().map(|&i| targets[i].clone()).collect();
        let scores = self
            .model
            .decoder
            .target_log_probs(&hidden.index_select(&rows, 0)?, &asked)?;
        for (i, score) in wanted.into_iter().zip(scores) {
            out[i] = score;
        }
        Ok(out)
    }

    /// Nodes added so far; the next one gets this id.
    pub fn node_count(&self) -> usize {
        self.parents.len()
    }
}
