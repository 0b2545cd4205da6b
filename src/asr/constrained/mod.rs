//! Decoding constrained by the catalog, as data: the catalog's names in the model's own
//! tokens ([`TokenTrie`]), a tree of continuations of one prompt decoded as one sequence
//! ([`TokenTree`]), and forced scoring of readings over a transcribed utterance's
//! acoustic context (`forced.rs`). Nothing here knows what a catalog is: the trie holds
//! token sequences and payloads.

mod forced;
mod tree;
pub mod trie;

pub use forced::{AcousticContext, BeamMatch, Reading, ReadingScore};
pub(in crate::asr) use tree::PromptPass;
pub use tree::TokenTree;
pub use trie::TokenTrie;
