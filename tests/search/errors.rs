//! The catalog and search under hostile input: forged or huge page tokens, paging depth,
//! oversized documents, and client input echoed into status messages.

use std::sync::Arc;

use serde_json::json;
use tonic::Code;
use voice_search::proto::catalog_client::CatalogClient;
use voice_search::proto::search_client::SearchClient;
use voice_search::proto::voice_search_client::VoiceSearchClient;
use voice_search::proto::{
    self, AudioEncoding, GetDocumentRequest, RecognitionConfig, SearchRequest, TranscribeRequest,
    UpsertDocumentsRequest,
};
use voice_search::search::page::MAX_RESULT_WINDOW;
use voice_search::search::{CarrierPhrases, CatalogDocument, CatalogIndex, QueryEngine};

use crate::common::fixture_bytes;
use crate::common::server::{test_config, TestServer};

/// A status message a client's metadata limit always takes.
const SHORT_MESSAGE: usize = 1024;

#[tokio::test]
async fn forged_and_huge_page_tokens_are_invalid_argument() {
    let server = TestServer::start(test_config()).await;
    let cities: Vec<(String, String)> = (0..30)
        .map(|i| (format!("c{i}"), format!("Springfield {i}")))
        .collect();
    let documents: Vec<(&str, &str, &str)> = cities
        .iter()
        .map(|(id, title)| (id.as_str(), title.as_str(), "city"))
        .collect();
    server.add_documents(&documents).await;
    let mut client = SearchClient::new(server.channel().await);
    let search = |token: String| SearchRequest {
        query: "springfield".into(),
        page_size: 10,
        page_token: token,
        ..Default::default()
    };
    let first = client
        .search(search(String::new()))
        .await
        .unwrap()
        .into_inner();
    let issued = first.next_page_token;
    assert!(!issued.is_empty());
    let (_, tag) = issued.split_once('.').unwrap();
    // The offsets that once aborted the process or leaked a panic, with a tag copied
    // from a real token, a token for another query, and a megabyte of garbage.
    for forged in [
        format!("1099511627776.{tag}"),
        format!("100000000000.{tag}"),
        format!("4611686018427387904.{tag}"),
        format!("20.{tag}"),
        "x".repeat(1 << 20),
    ] {
        let status = client.search(search(forged)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(status.message().len() < SHORT_MESSAGE);
    }
    let other = SearchRequest {
        query: "shelbyville".into(),
        page_token: issued.clone(),
        ..Default::default()
    };
    assert_eq!(
        client.search(other).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let second = client.search(search(issued)).await.unwrap().into_inner();
    assert_eq!(second.hits.len(), 10);
    server.shutdown().await.unwrap();
}

#[test]
fn paging_stops_at_the_result_window() {
    let dir = tempfile::tempdir().unwrap();
    let index = CatalogIndex::open(dir.path()).unwrap();
    let documents: Vec<CatalogDocument> = (0..MAX_RESULT_WINDOW + 150)
        .map(|i| {
            CatalogDocument::from_json(json!({"id": format!("d{i}"), "title": format!("Springfield {i}"), "category": "city"}))
                .unwrap()
        })
        .collect();
    index.upsert(&documents).unwrap();
    let engine = QueryEngine::new(Arc::new(index), CarrierPhrases::default());
    let (mut seen, mut token, mut pages) = (0, String::new(), 0);
    loop {
        let page = engine
            .search(&voice_search::search::SearchRequest {
                query: "springfield".into(),
                categories: Vec::new(),
                page_size: 100,
                page_token: token,
            })
            .unwrap();
        seen += page.hits.len();
        pages += 1;
        token = page.next_page_token;
        if token.is_empty() || pages > 20 {
            break;
        }
    }
    assert_eq!(seen, MAX_RESULT_WINDOW);
}

fn document(id: &str, title: &str, fields: usize, field_bytes: usize) -> proto::Document {
    let filler = "word ".repeat(field_bytes / 5);
    proto::Document {
        id: id.into(),
        title: title.into(),
        category: "movie".into(),
        attributes: Some(prost_types::Struct {
            fields: (0..fields)
                .map(|i| {
                    let value = prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(filler.clone())),
                    };
                    (format!("extra_{i}"), value)
                })
                .collect(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn documents_are_bounded_as_a_whole_and_their_pages_fit_a_response() {
    let server = TestServer::start(test_config()).await;
    let mut catalog = CatalogClient::new(server.channel().await);
    let upsert = |documents| UpsertDocumentsRequest { documents };
    let huge = document("huge", "Huge Movie", 250, 60_000);
    let status = catalog
        .upsert_documents(upsert(vec![huge]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("the limit is"),
        "{}",
        status.message()
    );

    // The largest documents allowed, many of them matching one query, still come back.
    let large: Vec<_> = (0..40)
        .map(|i| document(&format!("big{i}"), "Big Movie", 2, 60_000))
        .collect();
    catalog.upsert_documents(upsert(large)).await.unwrap();
    let mut search = SearchClient::new(server.channel().await);
    let (mut ids, mut token, mut pages) = (std::collections::BTreeSet::new(), String::new(), 0);
    loop {
        let page = search
            .search(SearchRequest {
                query: "big movie".into(),
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        ids.extend(page.hits.into_iter().map(|h| h.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(ids.len(), 40, "every document once, over {pages} pages");
    assert!(pages > 1);

    let popular = |id: &str, popularity: f64| {
        let mut bad = document(id, "Odd", 0, 0);
        bad.popularity = Some(popularity);
        bad
    };
    // One word over 1 KiB in a title well under the 64 KiB field limit.
    let long_word = document("long", &"x".repeat(2_000), 0, 0);
    let bad = [
        popular("neg", -5.0),
        popular("nan", f64::NAN),
        popular("inf", f64::INFINITY),
        long_word,
    ];
    for bad in bad {
        let id = bad.id.clone();
        let status = catalog
            .upsert_documents(upsert(vec![bad]))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{id}: {}",
            status.message()
        );
        assert!(
            id == "long" || status.message().contains("popularity"),
            "{id}: {}",
            status.message()
        );
    }
    server.shutdown().await.unwrap();
}

#[test]
fn the_hits_of_a_spoken_query_fit_a_response_too() {
    // The voice path names its hits by id (the re-ranked candidates); 40 of the largest
    // documents allowed would be 4.8 MB, past a gRPC client's 4 MiB.
    let dir = tempfile::tempdir().unwrap();
    let index = CatalogIndex::open(dir.path()).unwrap();
    let documents: Vec<CatalogDocument> = (0..40)
        .map(|i| {
            CatalogDocument::from_json(json!({
                "id": format!("big{i}"), "title": "Big Movie", "category": "movie",
                "a": "x".repeat(60_000), "b": "y".repeat(60_000),
            }))
            .unwrap()
        })
        .collect();
    index.upsert(&documents).unwrap();
    let engine = QueryEngine::new(Arc::new(index), CarrierPhrases::default());
    let chosen: Vec<(String, f32)> = (0..40).map(|i| (format!("big{i}"), 1.0)).collect();
    let hits = engine.hits_by_id(&chosen, &[]).unwrap();
    let bytes: usize = hits
        .iter()
        .map(|hit| serde_json::to_string(&hit.source).unwrap().len())
        .sum();
    assert!(!hits.is_empty() && hits.len() < 40, "{} hits", hits.len());
    assert!(bytes < 4 * 1024 * 1024, "{bytes} bytes of hits");
    assert_eq!(hits[0].id, "big0", "the best hit comes first");
}

#[tokio::test]
async fn client_input_is_quoted_short_in_status_messages() {
    let server = TestServer::start(test_config()).await;
    let status = CatalogClient::new(server.channel().await)
        .get_document(GetDocumentRequest {
            id: "i".repeat(1 << 20),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    assert!(status.message().len() < SHORT_MESSAGE);

    let status = VoiceSearchClient::new(server.channel().await)
        .transcribe(TranscribeRequest {
            config: Some(RecognitionConfig {
                encoding: AudioEncoding::Wav as i32,
                language: "q".repeat(100_000),
                ..Default::default()
            }),
            audio: fixture_bytes("q0004.wav"),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().len() < SHORT_MESSAGE);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_query_that_folds_into_thousands_of_words_searches_only_the_first() {
    let server = TestServer::start(test_config()).await;
    server.add_documents(&[("m1", "Bismillah", "song")]).await;
    let results = SearchClient::new(server.channel().await)
        .search(SearchRequest {
            query: "\u{FDFD}".repeat(1024),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let searched = results.interpreted_query.split_whitespace().count();
    assert!(
        (1..=voice_search::search::query::MAX_QUERY_WORDS).contains(&searched),
        "{searched} words searched"
    );
    server.shutdown().await.unwrap();
}
