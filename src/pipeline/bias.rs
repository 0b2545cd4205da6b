//! Catalog biasing: the catalog's names as a token trie for the recognizer's constrained
//! beam, kept in step with the catalog. The trie is built from the spoken forms when the
//! pipeline starts and changed by every committed upsert and delete (the catalog tells
//! its followers before the write is acknowledged), so a name added through the Catalog
//! RPCs can be recognized by the next utterance.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::asr::{AsrError, TokenTree, TokenTrie, Whisper};
use crate::search::{CatalogChange, SpokenCatalog, SpokenEntry};

/// The trie and which entry each payload stands for.
#[derive(Default)]
struct BiasState {
    trie: TokenTrie,
    /// Payload -> entry id (`None` once removed, until the payload is reused).
    ids: Vec<Option<String>>,
    /// Entry id -> its payload and the sequences it put into the trie.
    entries: HashMap<String, (u32, Vec<Vec<u32>>)>,
    free: Vec<u32>,
}

/// The catalog's names in the model's tokens.
pub struct CatalogBias {
    state: RwLock<BiasState>,
}

/// What the trie holds, for reporting.
#[derive(Debug, Clone, Copy)]
pub struct BiasStats {
    pub entries: usize,
    pub sequences: usize,
    pub nodes: usize,
    pub memory_bytes: usize,
}

impl CatalogBias {
    /// Builds the trie from every entry of `spoken` and follows its changes.
    pub fn follow(whisper: Arc<Whisper>, spoken: &SpokenCatalog) -> Arc<Self> {
        let bias = Arc::new(Self {
            state: RwLock::new(BiasState::default()),
        });
        let weak = Arc::downgrade(&bias);
        let follower_model = whisper.clone();
        let held = spoken.follow(move |change| {
            if let Some(bias) = weak.upgrade() {
                let mut state = bias.write();
                match change {
                    CatalogChange::Added(entry) => state.add(&follower_model, entry),
                    CatalogChange::Removed(entry) => state.remove(&entry.id),
                }
            }
        });
        {
            let mut state = bias.write();
            for entry in &held {
                state.add(&whisper, entry);
            }
        }
        bias
    }

    pub fn stats(&self) -> BiasStats {
        let state = self.read();
        BiasStats {
            entries: state.entries.len(),
            sequences: state.trie.len(),
            nodes: state.trie.node_count(),
            memory_bytes: state.trie.memory_bytes(),
        }
    }

    /// The entries beams of `width` over the trie reach, entered after each count of
    /// transcript `words` in `entries`, best first: (entry id, after how many words).
    /// The beams grow `tree`, which scoring then reuses.
    pub fn propose(
        &self,
        whisper: &Whisper,
        tree: &mut TokenTree,
        words: &[&str],
        entries: &[usize],
        width: usize,
        limit: usize,
    ) -> Result<Vec<(String, usize)>, AsrError> {
        let state = self.read();
        if state.trie.is_empty() {
            return Ok(Vec::new());
        }
        let matches =
            whisper.constrained_search(tree, words, entries, &state.trie, width, limit)?;
        let mut reached: Vec<(f32, String, usize)> = matches
            .into_iter()
            .filter_map(|m| {
                let id = state.ids.get(m.payload as usize)?.clone()?;
                Some((m.mean_logprob, id, m.after_words))
            })
            .collect();
        // Ids break ties (two towns of one name share a path), so that the proposals do
        // not depend on the order the entries were loaded in.
        reached.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        reached.truncate(limit);
        Ok(reached
            .into_iter()
            .map(|(_, id, after_words)| (id, after_words))
            .collect())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BiasState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BiasState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl BiasState {
    fn add(&mut self, whisper: &Whisper, entry: &SpokenEntry) {
        self.remove(&entry.id);
        let mut sequences: Vec<Vec<u32>> = Vec::new();
        for name in &entry.names {
            // As written, and with a lowercase first letter ("the Godfather" after
            // "Watch"), the two casings Whisper writes a name in mid-sentence.
            let lowered = lower_first(name);
            for text in [name.as_str(), lowered.as_str()] {
                if let Ok(tokens) = whisper.text_tokens(text) {
                    if !tokens.is_empty() && !sequences.contains(&tokens) {
                        sequences.push(tokens);
                    }
                }
            }
        }
        let payload = match self.free.pop() {
            Some(p) => {
                self.ids[p as usize] = Some(entry.id.clone());
                p
            }
            None => {
                self.ids.push(Some(entry.id.clone()));
                (self.ids.len() - 1) as u32
            }
        };
        for tokens in &sequences {
            self.trie.insert(tokens, payload);
        }
        self.entries.insert(entry.id.clone(), (payload, sequences));
    }

    fn remove(&mut self, id: &str) {
        if let Some((payload, sequences)) = self.entries.remove(id) {
            for tokens in &sequences {
                self.trie.remove(tokens, payload);
            }
            self.ids[payload as usize] = None;
            self.free.push(payload);
        }
    }
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}
