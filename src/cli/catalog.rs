//! `voice-search index` and `voice-search search`: the catalog from the command line.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{progress_bar, DEFAULT_INDEX};
use anyhow::Context;
use clap::{Args, Subcommand};
use voice_search::search::import::{self, ImportEvent};
use voice_search::search::{CarrierPhrases, CatalogIndex, QueryEngine, SearchRequest};

#[derive(Subcommand)]
pub(crate) enum IndexCommand {
    /// Load documents from a JSON Lines file (one object per line, `id` required).
    Import {
        file: PathBuf,
        #[arg(long, env = "VOICE_SEARCH_INDEX", default_value = DEFAULT_INDEX)]
        index: PathBuf,
        /// Documents per commit; everything up to the last commit survives a crash.
        #[arg(long, default_value_t = import::DEFAULT_BATCH)]
        batch_size: usize,
    },
    /// Print the document count, size on disk and last commit time.
    Stats {
        #[arg(long, env = "VOICE_SEARCH_INDEX", default_value = DEFAULT_INDEX)]
        index: PathBuf,
    },
}

#[derive(Args)]
pub(crate) struct SearchArgs {
    query: String,
    #[arg(long, env = "VOICE_SEARCH_INDEX", default_value = DEFAULT_INDEX)]
    index: PathBuf,
    /// Keep only this category (repeatable).
    #[arg(long)]
    category: Vec<String>,
    #[arg(long, default_value_t = 5)]
    limit: usize,
    /// TOML file replacing the built-in carrier phrases.
    #[arg(long, env = "VOICE_SEARCH_CARRIER_PHRASES")]
    carrier_phrases: Option<PathBuf>,
}

pub(crate) fn import_catalog(
    index: &CatalogIndex,
    file: &Path,
    batch_size: usize,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let bar = progress_bar(text.lines().count() as u64, "lines");
    let started = Instant::now();
    let summary = import::import_jsonl(
        index,
        BufReader::new(text.as_bytes()),
        batch_size,
        |event| match event {
            ImportEvent::Rejected { line, error } => {
                bar.suspend(|| eprintln!("line {line}: {error}"))
            }
            ImportEvent::Committed { line, .. } => {
                bar.set_position(line as u64);
                // On stdout, one line per commit: what a caller may rely on after a crash.
                bar.suspend(|| println!("committed through line {line}"));
            }
        },
    )?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}: {} added, {} replaced, {} rejected in {seconds:.1} s ({:.0} documents/s)",
        file.display(),
        summary.added,
        summary.replaced,
        summary.rejected,
        (summary.added + summary.replaced) as f64 / seconds
    );
    Ok(())
}

pub(crate) fn index_stats(path: &Path) -> anyhow::Result<()> {
    let stats = CatalogIndex::open_read_only(path)?.stats()?;
    println!("index:          {}", path.display());
    println!("documents:      {}", stats.document_count);
    println!("size on disk:   {} bytes", stats.size_bytes);
    match stats.last_commit {
        Some(at) => println!(
            "last commit:    {} s after the Unix epoch",
            at.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        ),
        None => println!("last commit:    never"),
    }
    Ok(())
}

pub(crate) fn search(args: SearchArgs) -> anyhow::Result<()> {
    let engine = QueryEngine::new(
        Arc::new(CatalogIndex::open_read_only(&args.index)?),
        CarrierPhrases::load(args.carrier_phrases.as_deref())?,
    );
    let results = engine.search(&SearchRequest {
        query: args.query,
        categories: args.category,
        page_size: args.limit,
        page_token: String::new(),
    })?;
    println!("query: {}", results.interpreted_query);
    for (rank, hit) in results.hits.iter().enumerate() {
        println!(
            "{:>2}. {:<16} {:>7.2}  [{}] {}",
            rank + 1,
            hit.id,
            hit.score,
            hit.category,
            hit.title
        );
    }
    Ok(())
}

pub(crate) fn index(command: IndexCommand) -> anyhow::Result<()> {
    match command {
        IndexCommand::Import {
            file,
            index,
            batch_size,
        } => import_catalog(&CatalogIndex::open(&index)?, &file, batch_size),
        IndexCommand::Stats { index } => index_stats(&index),
    }
}
