//! A writer and two followers through a real snapshot store (a folder, and moto's S3 API
//! on loopback): what the writer acknowledges reaches both followers by text and by
//! voice, deletes too; followers refuse writes; searches running while generations swap
//! never fail; a page token issued by one replica opens the next page on another; a
//! writer on an empty volume starts from the store's newest generation; and a follower
//! cut off from the store keeps serving its last generation, says so, and catches up once
//! the store is back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use voice_search::proto::catalog_client::CatalogClient;
use voice_search::proto::search_client::SearchClient;
use voice_search::proto::voice_search_client::VoiceSearchClient;
use voice_search::proto::{
    AudioEncoding, DeleteDocumentRequest, GetStatsRequest, RecognitionConfig, SearchOptions,
    SearchRequest, StreamingVoiceSearchConfig, VoiceSearchRequest,
};

use super::harness::{
    channel, search_ids, secret_file, upsert, wait_for, Relay, Replica, ReplicaSpec, S3Server,
};
use crate::common::{fixture_bytes, MODEL_DIR};

/// Longest any change may take to reach a follower before the test fails (the lag
/// measured is printed; the target is 2 s at the default poll).
const CHANGE_LIMIT: Duration = Duration::from_secs(30);

/// The catalog the writer starts with: the fixture clips' look-alikes, without the film
/// the voice clip names.
const CATALOG: &[(&str, &str, &str)] = &[
    ("city-dusseldorf", "Düsseldorf", "city"),
    ("city-berlin", "Berlin", "city"),
    ("movie-berlin-calling", "Berlin Calling", "movie"),
    (
        "movie-berlin-alexanderplatz",
        "Berlin Alexanderplatz",
        "movie",
    ),
    ("movie-lions-for-lambs", "Lions for Lambs", "movie"),
    ("song-rehab", "Rehab", "song"),
];

/// Waits until `query` on `addr` finds (or, with `found` false, no longer finds) `id`;
/// returns how long that took.
async fn until_search(addr: std::net::SocketAddr, query: &str, id: &str, found: bool) -> Duration {
    let started = Instant::now();
    wait_for(
        &format!("{query:?} -> {id} {found} on {addr}"),
        CHANGE_LIMIT,
        || async {
            let ids = search_ids(addr, query).await.ok()?;
            (ids.iter().any(|hit| hit == id) == found).then_some(())
        },
    )
    .await;
    started.elapsed()
}

async fn voice_hits(addr: std::net::SocketAddr, clip: &str) -> Vec<String> {
    let response = VoiceSearchClient::new(channel(addr).await)
        .voice_search(VoiceSearchRequest {
            config: Some(StreamingVoiceSearchConfig {
                recognition: Some(RecognitionConfig {
                    encoding: AudioEncoding::Wav as i32,
                    ..Default::default()
                }),
                search: Some(SearchOptions {
                    max_hits: 3,
                    ..Default::default()
                }),
            }),
            audio: fixture_bytes(clip),
        })
        .await
        .unwrap()
        .into_inner();
    response
        .result
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.id)
        .collect()
}

/// The writer and two followers started on `spec`'s store (followers through
/// `follower_env`), the catalog loaded; the checks common to every store.
async fn fleet_serves_what_the_writer_acknowledges(
    writer_spec: ReplicaSpec,
    follower_spec: ReplicaSpec,
) -> (Replica, [Replica; 2]) {
    let writer = Replica::start(&writer_spec, 0).await;
    upsert(writer.addr, CATALOG).await.unwrap();
    let followers = [
        Replica::start(&follower_spec, 0).await,
        Replica::start(&follower_spec, 0).await,
    ];
    for follower in &followers {
        until_search(follower.addr, "dusseldorf", "city-dusseldorf", true).await;
    }

    // Searches keep running on a follower while the writer commits and the follower
    // swaps generations under them: none may fail or miss a document that stays.
    let searching = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = {
        let addr = followers[0].addr;
        let (searching, failures) = (searching.clone(), failures.clone());
        tokio::spawn(async move {
            for _ in 0..2_000 {
                if *stopped.borrow() {
                    break;
                }
                match search_ids(addr, "dusseldorf").await {
                    Ok(ids) if ids.first().map(String::as_str) == Some("city-dusseldorf") => {}
                    other => {
                        eprintln!("search during a swap: {other:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                searching.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for batch in 0..6 {
        let id = format!("song-batch-{batch}");
        let title = format!("Batch Song Number {batch}");
        upsert(writer.addr, &[(id.as_str(), title.as_str(), "song")])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Lag: from the writer's acknowledgement to the document found on each follower.
    upsert(
        writer.addr,
        &[(
            "movie-silence-of-the-lambs",
            "The Silence of the Lambs",
            "movie",
        )],
    )
    .await
    .unwrap();
    for follower in &followers {
        let lag = until_search(
            follower.addr,
            "silence of the lambs",
            "movie-silence-of-the-lambs",
            true,
        )
        .await;
        println!(
            "fleet lag: the writer's upsert found on follower {} after {lag:?}",
            follower.addr
        );
    }
    // The load may have run its 2,000 searches and dropped its receiver already.
    stop.send_replace(true);
    load.await.unwrap();
    let (searched, failed) = (
        searching.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    println!("searches on a follower while its generations swapped: {searched}, failed: {failed}");
    assert!(searched > 0);
    assert_eq!(failed, 0, "searches failed while generations swapped");

    // The added film is heard in speech on every follower: the recognizer's names moved
    // with the generation.
    for follower in &followers {
        let hits = voice_hits(follower.addr, "q0070.wav").await;
        assert_eq!(
            hits.first().map(String::as_str),
            Some("movie-silence-of-the-lambs"),
            "{hits:?}"
        );
    }

    // A follower refuses writes, naming its role.
    let refused = upsert(followers[0].addr, &[("x", "X", "song")])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("follows the catalog"),
        "{}",
        refused.message()
    );

    // A page token from one follower opens the next page on the other.
    let first = SearchClient::new(channel(followers[0].addr).await)
        .search(SearchRequest {
            query: "berlin".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let second = SearchClient::new(channel(followers[1].addr).await)
        .search(SearchRequest {
            query: "berlin".into(),
            page_size: 1,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.hits.len(), 1);
    assert_ne!(second.hits[0].id, first.hits[0].id);

    // A delete disappears from both.
    CatalogClient::new(channel(writer.addr).await)
        .delete_document(DeleteDocumentRequest {
            id: "movie-lions-for-lambs".into(),
        })
        .await
        .unwrap();
    for follower in &followers {
        until_search(
            follower.addr,
            "lions for lambs",
            "movie-lions-for-lambs",
            false,
        )
        .await;
    }
    (writer, followers)
}

async fn stats(addr: std::net::SocketAddr) -> voice_search::proto::CatalogStats {
    CatalogClient::new(channel(addr).await)
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_and_two_followers_share_the_catalog_through_a_folder() {
    let folder = tempfile::tempdir().unwrap();
    let store = format!("file://{}", folder.path().join("store").display());
    let spec = |role| ReplicaSpec {
        role,
        store: store.clone(),
        env: Vec::new(),
        secret: secret_file(folder.path()),
        drain_delay_seconds: 0.0,
        model: MODEL_DIR.into(),
    };
    let (mut writer, followers) =
        fleet_serves_what_the_writer_acknowledges(spec("writer"), spec("follower")).await;
    let written = stats(writer.addr).await;
    assert_eq!(written.role, "writer");
    for follower in &followers {
        let stats = stats(follower.addr).await;
        assert_eq!(stats.role, "follower");
        assert_eq!(stats.commit_opstamp, written.commit_opstamp);
        assert_eq!(stats.document_count, written.document_count);
        assert!(stats.snapshot_store_error.is_empty());
        assert!(follower.metric("voicesearch_catalog_generation ").await >= 1.0);
    }

    // A replica without its model tells the balancer to send it nothing.
    let modelless = Replica::spawn(
        &ReplicaSpec {
            model: folder.path().join("no-model-here"),
            ..spec("follower")
        },
        0,
    );
    wait_for(
        "a follower without a model to answer health",
        CHANGE_LIMIT,
        || async { (modelless.health().await? == ServingStatus::NotServing).then_some(()) },
    )
    .await;

    // A writer on a new, empty volume starts from the store's newest generation (nothing
    // acknowledged is lost), and its next commit is the next generation.
    writer.kill();
    let writer = Replica::start(&spec("writer"), 0).await;
    let restored = stats(writer.addr).await;
    assert_eq!(restored.document_count, written.document_count);
    assert_eq!(restored.snapshot_generation, written.snapshot_generation);
    upsert(writer.addr, &[("city-hamburg", "Hamburg", "city")])
        .await
        .unwrap();
    for follower in &followers {
        until_search(follower.addr, "hamburg", "city-hamburg", true).await;
        until_search(follower.addr, "dusseldorf", "city-dusseldorf", true).await;
        assert!(stats(follower.addr).await.snapshot_generation > written.snapshot_generation);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn followers_cut_off_from_s3_keep_serving_and_catch_up() {
    let s3 = S3Server::start("voice-search").await;
    let relay = Relay::start(s3.endpoint.trim_start_matches("http://").parse().unwrap()).await;
    let folder = tempfile::tempdir().unwrap();
    let spec = |role, endpoint: &str| ReplicaSpec {
        role,
        store: "s3://voice-search/fleet".into(),
        env: S3Server::env(endpoint),
        secret: secret_file(folder.path()),
        drain_delay_seconds: 0.0,
        model: MODEL_DIR.into(),
    };
    let relayed = format!("http://127.0.0.1:{}", relay.port);
    let (writer, followers) = fleet_serves_what_the_writer_acknowledges(
        spec("writer", &s3.endpoint),
        spec("follower", &relayed),
    )
    .await;

    relay.cut();
    upsert(writer.addr, &[("city-hamburg", "Hamburg", "city")])
        .await
        .unwrap();
    for follower in &followers {
        let error = wait_for(
            "the follower to notice the store is gone",
            CHANGE_LIMIT,
            || async {
                let stats = stats(follower.addr).await;
                (!stats.snapshot_store_error.is_empty()).then_some(stats.snapshot_store_error)
            },
        )
        .await;
        println!("follower {} says: {error}", follower.addr);
        assert_eq!(follower.metric("voicesearch_snapshot_store_up ").await, 0.0);
        // Still serving its last generation, without the document it cannot see.
        assert_eq!(
            search_ids(follower.addr, "dusseldorf")
                .await
                .unwrap()
                .first()
                .map(String::as_str),
            Some("city-dusseldorf")
        );
        assert!(!search_ids(follower.addr, "hamburg")
            .await
            .unwrap()
            .contains(&"city-hamburg".to_string()));
    }

    relay.restore();
    for follower in &followers {
        let caught_up = until_search(follower.addr, "hamburg", "city-hamburg", true).await;
        println!(
            "follower {} caught up {caught_up:?} after the store returned",
            follower.addr
        );
        assert!(stats(follower.addr).await.snapshot_store_error.is_empty());
    }
}
