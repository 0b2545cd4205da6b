//! A bulk load: documents arriving in many messages, committed a batch at a time, with
//! the totals of what is committed, so that a load cut short by an error or a client
//! that leaves keeps everything sent validly before it.

use std::sync::Arc;

use super::{CatalogDocument, CatalogIndex, SearchError, UpsertCounts};

/// Most documents per commit of a bulk load (and per `UpsertDocuments` call).
pub const MAX_BATCH: usize = 10_000;

/// Documents gathered for one index. Blocking: commits write the index.
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

    /// Adds documents, committing once a batch is full.
    pub fn add(&mut self, documents: Vec<CatalogDocument>) -> Result<(), SearchError> {
        self.pending.extend(documents);
        if self.pending.len() >= MAX_BATCH {
            self.commit()?;
        }
        Ok(())
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
