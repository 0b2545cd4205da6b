//! API keys over a real server: without one, or with one the server does not know, a
//! call is UNAUTHENTICATED; a search key searches but cannot write the catalog
//! (PERMISSION_DENIED); a key with the catalog role can; a key over its rate, or past
//! its open streams, is RESOURCE_EXHAUSTED; health stays open to all.

use std::num::NonZeroU32;

use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use voice_search::client::{ApiKey, ServerChannel};
use voice_search::proto::catalog_client::CatalogClient;
use voice_search::proto::search_client::SearchClient;
use voice_search::proto::{Document, SearchRequest, UpsertDocumentsRequest};
use voice_search::service::auth::keys::{add_key, KeyLimits, Role};

use crate::common::server::{test_config, TestServer};

/// A channel whose calls carry `key` as a bearer token (none when empty).
async fn keyed(server: &TestServer, key: &str) -> ServerChannel {
    let key = ApiKey::new((!key.is_empty()).then_some(key)).unwrap();
    InterceptedService::new(server.channel().await, key)
}

async fn search_code(server: &TestServer, key: &str) -> Code {
    let mut client = SearchClient::new(keyed(server, key).await);
    let request = SearchRequest {
        query: "anything".into(),
        page_size: 1,
        ..Default::default()
    };
    match client.search(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// A server that reads its keys from `path`.
async fn keyed_server(path: std::path::PathBuf) -> TestServer {
    TestServer::start(voice_search::config::ServeConfig {
        api_keys: Some(path),
        ..test_config()
    })
    .await
}

/// A one-document write.
fn heat() -> UpsertDocumentsRequest {
    UpsertDocumentsRequest {
        documents: vec![Document {
            id: "m1".into(),
            title: "Heat".into(),
            category: "movie".into(),
            ..Default::default()
        }],
    }
}

async fn upsert(server: &TestServer, key: &str) -> Result<(), Status> {
    let mut client = CatalogClient::new(keyed(server, key).await);
    client.upsert_documents(heat()).await.map(|_| ())
}

#[tokio::test]
async fn keys_decide_who_may_search_and_who_may_write() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("keys.toml");
    let search_key = add_key(&path, "phone-app", &[Role::Search], KeyLimits::default()).unwrap();
    let loader_key = add_key(
        &path,
        "loader",
        &[Role::Search, Role::Catalog],
        KeyLimits::default(),
    )
    .unwrap();
    let rated = KeyLimits {
        calls_per_minute: NonZeroU32::new(3),
        ..KeyLimits::default()
    };
    let limited_key = add_key(&path, "batch", &[Role::Search], rated).unwrap();
    let server = keyed_server(path).await;

    assert_eq!(search_code(&server, "").await, Code::Unauthenticated);
    assert_eq!(
        search_code(&server, "vsk_not_a_key").await,
        Code::Unauthenticated
    );
    assert_eq!(search_code(&server, &search_key).await, Code::Ok);
    assert_eq!(search_code(&server, &loader_key).await, Code::Ok);

    let denied = upsert(&server, &search_key).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("phone-app"),
        "{}",
        denied.message()
    );
    upsert(&server, &loader_key).await.unwrap();

    for _ in 0..3 {
        assert_eq!(search_code(&server, &limited_key).await, Code::Ok);
    }
    assert_eq!(
        search_code(&server, &limited_key).await,
        Code::ResourceExhausted
    );
    assert_eq!(
        search_code(&server, &search_key).await,
        Code::Ok,
        "another key's calls"
    );

    let mut health = HealthClient::new(server.channel().await);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(status.is_ok(), "health needs no key: {status:?}");
}

#[tokio::test]
async fn a_key_holds_at_most_its_streams_open() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("keys.toml");
    let one_stream = KeyLimits {
        max_streams: NonZeroU32::new(1),
        ..KeyLimits::default()
    };
    let key = add_key(&path, "loader", &[Role::Catalog], one_stream).unwrap();
    let server = keyed_server(path).await;
    let (send, batches) = tokio::sync::mpsc::channel(4);
    send.send(heat()).await.unwrap();
    let mut first_client = CatalogClient::new(keyed(&server, &key).await);
    let first = tokio::spawn(async move {
        first_client
            .bulk_upsert_documents(tokio_stream::wrappers::ReceiverStream::new(batches))
            .await
    });
    // Once the first stream is open (its headers reached the server), a second one is
    // refused; before that, a second one simply runs.
    let mut second = CatalogClient::new(keyed(&server, &key).await);
    let mut refused = None;
    for _ in 0..100 {
        match second
            .bulk_upsert_documents(tokio_stream::iter(vec![heat()]))
            .await
        {
            Err(status) => {
                refused = Some(status);
                break;
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let refused = refused.expect("a second stream was never refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("loader"),
        "{}",
        refused.message()
    );

    drop(send);
    first.await.unwrap().unwrap();
    second
        .bulk_upsert_documents(tokio_stream::iter(vec![heat()]))
        .await
        .unwrap();
}
