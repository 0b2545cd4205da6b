//! Catalog search on a real index on disk: the spoken-query features, each case failing
//! if its feature is removed (`ranking`); writes, durability including `kill -9`, import,
//! the gRPC surface and read-only opening (`catalog`); forged page tokens, unbounded
//! documents and echoed input (`errors`); mutated documents and page tokens (`fuzz`); a
//! full disk under the index (`disk`).

mod catalog;
mod disk;
mod errors;
mod fuzz;
mod ranking;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{json, Value};
use voice_search::proto::catalog_client::CatalogClient;
use voice_search::proto::search_client::SearchClient;
use voice_search::proto::{self, SearchFilters};
use voice_search::search::import::{import_jsonl, ImportEvent};
use voice_search::search::{
    CarrierPhrases, CatalogDocument, CatalogIndex, QueryEngine, SearchError, SearchRequest,
};

use crate::common::server::{test_config, TestServer};

fn doc(value: Value) -> CatalogDocument {
    CatalogDocument::from_json(value).unwrap()
}

/// An engine over a fresh index holding `documents`.
fn engine_with(documents: Vec<Value>) -> (tempfile::TempDir, QueryEngine) {
    let dir = tempfile::tempdir().unwrap();
    let index = CatalogIndex::open(dir.path()).unwrap();
    index
        .upsert(&documents.into_iter().map(doc).collect::<Vec<_>>())
        .unwrap();
    (
        dir,
        QueryEngine::new(Arc::new(index), CarrierPhrases::default()),
    )
}

fn top_ids(engine: &QueryEngine, query: &str) -> Vec<String> {
    engine
        .search(&SearchRequest {
            query: query.into(),
            page_size: 5,
            ..Default::default()
        })
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect()
}

fn first(engine: &QueryEngine, query: &str) -> String {
    top_ids(engine, query)
        .into_iter()
        .next()
        .unwrap_or_default()
}

fn city(id: &str, title: &str, state: &str, popularity: u64) -> Value {
    json!({"id": id, "title": title, "category": "city", "state": state, "body": "A city.", "popularity": popularity})
}

fn song(id: &str, title: &str, artist: &str, popularity: u64) -> Value {
    json!({"id": id, "title": title, "category": "song", "artist": artist, "body": "A song.", "popularity": popularity})
}

fn movie(id: &str, title: &str, popularity: u64) -> Value {
    json!({"id": id, "title": title, "category": "movie", "body": "A film.", "popularity": popularity})
}
