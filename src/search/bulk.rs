//! A bulk load: documents arriving in many messages, committed a batch at a time, with
//! the totals of what is committed, so that a load cut short by an error or a client
//! that leaves keeps everything sent validly before it.

use std::sync::Arc;

use super::{CatalogDocument, CatalogIndex, SearchError, UpsertCounts};

/// Most documents per commit of a bulk load (and per `UpsertDocuments` call).
pub const MAX_BATCH: usize = 10_000;

/// Documents gathered for one index. Blocking: a commit writes the index.
pub struct BulkLoad {
    index: Arc<CatalogIndex>,
    pending: Vec<CatalogDocument>,
    committed: UpsertCounts,
}

impl BulkLoad {
    pub fn new(index: Arc<CatalogIndex>) -> Self {
        Self {
            index,
            pending: Vec::new(),
            committed: UpsertCounts::default(),
        }
    }

    /// Adds documents; they wait for the next commit.
    pub fn add(&mut self, documents: Vec<CatalogDocument>) {
        self.pending.extend(documents);
    }

    /// Whether enough documents wait that they should be committed now.
    pub fn batch_full(&self) -> bool {
        self.pending.len() >= MAX_BATCH
    }

    /// Commits what is pending; returns the totals committed so far.
    pub fn commit(&mut self) -> Result<UpsertCounts, SearchError> {
        if !self.pending.is_empty() {
            let counts = self.index.upsert(&std::mem::take(&mut self.pending))?;
            self.committed.added += counts.added;
            self.committed.replaced += counts.replaced;
        }
        Ok(self.committed)
    }
}
