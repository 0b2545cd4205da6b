//! Bulk loading from JSON Lines: batches committed one after another, so that a crash
//! loses at most the batch in flight, and a bad line is reported with its number and
//! skipped rather than stopping the rest.

use std::io::BufRead;

use super::{CatalogDocument, CatalogIndex, SearchError, UpsertCounts};

/// The demo catalog compiled into the binary (see `demo/README.md`): what the server
/// loads into an empty index on its first start.
pub const DEMO_CATALOG: &str = include_str!("../../demo/catalog.jsonl");

/// Documents per commit unless told otherwise.
pub const DEFAULT_BATCH: usize = 1000;

/// What happened during an import, as it happens.
#[derive(Debug)]
pub enum ImportEvent<'a> {
    /// A line that could not be used (1-based number), and why.
    Rejected { line: usize, error: &'a SearchError },
    /// Everything up to and including `line` is committed and will survive a crash.
    Committed { line: usize, counts: UpsertCounts },
}

/// Totals of an import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub added: u64,
    pub replaced: u64,
    pub rejected: u64,
}

/// Reads JSON Lines from `input` into the index. Blank lines are skipped.
pub fn import_jsonl(
    index: &CatalogIndex,
    input: impl BufRead,
    batch_size: usize,
    mut on_event: impl FnMut(ImportEvent<'_>),
) -> Result<ImportSummary, SearchError> {
    let mut summary = ImportSummary::default();
    let mut batch = Vec::with_capacity(batch_size);
    let mut last_line = 0;
    for (number, line) in input.lines().enumerate() {
        let number = number + 1;
        last_line = number;
        let line = line.map_err(|source| SearchError::Io {
            path: "input".into(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match CatalogDocument::from_json_str(&line) {
            Ok(document) => batch.push(document),
            Err(error) => {
                summary.rejected += 1;
                on_event(ImportEvent::Rejected {
                    line: number,
                    error: &error,
                });
            }
        }
        if batch.len() >= batch_size.max(1) {
            commit(index, &mut batch, number, &mut summary, &mut on_event)?;
        }
    }
    commit(index, &mut batch, last_line, &mut summary, &mut on_event)?;
    Ok(summary)
}

fn commit(
    index: &CatalogIndex,
    batch: &mut Vec<CatalogDocument>,
    line: usize,
    summary: &mut ImportSummary,
    on_event: &mut impl FnMut(ImportEvent<'_>),
) -> Result<(), SearchError> {
    if batch.is_empty() {
        return Ok(());
    }
    let counts = index.upsert(batch)?;
    batch.clear();
    summary.added += counts.added;
    summary.replaced += counts.replaced;
    on_event(ImportEvent::Committed { line, counts });
    Ok(())
}
