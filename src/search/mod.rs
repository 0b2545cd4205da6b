//! Catalog search, built for spoken queries.
//!
//! [`document`] validates catalog documents, [`schema`] lays out the tantivy index,
//! [`index`] keeps it durable on disk, [`import`] bulk-loads JSON Lines, [`text`] is the analysis both sides share,
//! [`intent`] takes carrier phrases off a query and [`query`] ranks the catalog for it;
//! [`spoken`] holds how each entry is said, for recognition; [`numbers`] is the one
//! table of number words and rule of Roman numerals both sides use.

pub mod bulk;
pub mod candidates;
pub mod document;
pub mod import;
pub mod index;
pub mod intent;
pub mod numbers;
pub mod page;
pub mod query;
pub mod schema;
pub mod sound;
pub mod spoken;
pub mod spoken_catalog;
pub mod text;

use std::path::PathBuf;

pub use candidates::{Candidate, CandidateLimits, CandidateSet};
pub use document::CatalogDocument;
pub use index::{CatalogIndex, CommitFiles, IndexStats, Refresh, UpsertCounts};
pub use intent::{CarrierPhrases, CarrierSplit, Intent};
pub use page::PageTokens;
pub use query::{Matching, QueryEngine, SearchHit, SearchRequest, SearchResults};
pub use sound::SoundKey;
pub use spoken::SpokenEntry;
pub use spoken_catalog::{CatalogChange, SoundAlike, SpokenCatalog};

/// Everything that can go wrong in search and catalog maintenance.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("carrier phrases in {path}: {reason}")]
    CarrierPhrases { path: PathBuf, reason: String },
    #[error(
        "the index at {path} was written with schema version {found:?}; this build reads \
         version {expected}: delete the folder and import the catalog again \
         (voice-search index import FILE.jsonl)"
    )]
    IncompatibleVersion {
        path: PathBuf,
        found: Option<u32>,
        expected: u32,
    },
    #[error(
        "the index at {0} is in use by another process (a running server?): stop it, or load \
         documents through the Catalog RPCs"
    )]
    Locked(PathBuf),
    #[error("the index at {0} was opened read-only")]
    ReadOnly(PathBuf),
    #[error(
        "this replica follows the catalog; write through the writer (voice-search serve \
         --role writer)"
    )]
    Follower,
    #[error(
        "page_token comes from catalog generation {wanted}, which this replica has not \
         reached yet (it has {have}); retry, and another replica or this one shortly will \
         have it"
    )]
    CatalogBehind { wanted: u64, have: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the disk holding the index is full ({0}): this write was not kept, and every \
         acknowledged one is; free space and retry"
    )]
    DiskFull(PathBuf),
    #[error("index error: {0}")]
    Index(String),
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(error: tantivy::TantivyError) -> Self {
        SearchError::Index(error.to_string())
    }
}

impl From<tantivy::directory::error::OpenDirectoryError> for SearchError {
    fn from(error: tantivy::directory::error::OpenDirectoryError) -> Self {
        SearchError::Index(error.to_string())
    }
}
