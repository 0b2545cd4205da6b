//! Envoy (`deploy/envoy/envoy.yaml`) in front of a writer and two followers: calls spread
//! over all three; a replica taking SIGTERM turns NOT_SERVING and drains without a failed
//! call; `kill -9` of a replica under load loses no unary call; a stream open on a killed
//! replica ends UNAVAILABLE and the client's resend through Envoy succeeds; gRPC-Web
//! reaches a replica through Envoy's filter, and the browsers' WebSocket stream through
//! Envoy's upgrade.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tonic_health::pb::health_check_response::ServingStatus;
use voice_search::client;
use voice_search::proto::search_client::SearchClient;
use voice_search::proto::streaming_voice_search_request::Request;
use voice_search::proto::voice_search_client::VoiceSearchClient;
use voice_search::proto::{
    AudioEncoding, RecognitionConfig, SearchRequest, StreamingVoiceSearchConfig,
    StreamingVoiceSearchRequest,
};

use super::harness::{
    channel, free_port, search_ids, secret_file, upsert, wait_for, Envoy, Replica, ReplicaSpec,
};
use crate::common::{fixture_bytes, fixture_path, MODEL_DIR};

/// Calls each load loop makes at most.
const LOAD_CALLS: usize = 400;

/// Unary searches through `envoy` from four clients (at most `LOAD_CALLS` each) from half
/// a second before `event` until half a second after it; returns (calls, failures), with
/// at least one call made.
async fn under_load(
    envoy: SocketAddr,
    event: impl std::future::Future<Output = ()>,
) -> (usize, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (calls, failures, stopped) = (calls.clone(), failures.clone(), stopped.clone());
        clients.push(tokio::spawn(async move {
            let mut search = SearchClient::new(channel(envoy).await);
            for _ in 0..LOAD_CALLS {
                if *stopped.borrow() {
                    break;
                }
                let answer = search
                    .search(SearchRequest {
                        query: "dusseldorf".into(),
                        page_size: 3,
                        ..Default::default()
                    })
                    .await;
                if let Err(status) = answer {
                    eprintln!("a call through envoy failed: {status:?}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                calls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    event.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(true).unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let calls = calls.load(Ordering::Relaxed);
    assert!(calls > 0, "no call was made");
    (calls, failures.load(Ordering::Relaxed))
}

const CATALOG: &[(&str, &str, &str)] = &[
    ("city-dusseldorf", "Düsseldorf", "city"),
    (
        "movie-silence-of-the-lambs",
        "The Silence of the Lambs",
        "movie",
    ),
    ("movie-lions-for-lambs", "Lions for Lambs", "movie"),
];

#[tokio::test(flavor = "multi_thread")]
async fn envoy_spreads_calls_and_no_call_is_lost_when_replicas_stop_or_die() {
    let folder = tempfile::tempdir().unwrap();
    let spec = |role| ReplicaSpec {
        role,
        store: format!("file://{}", folder.path().join("store").display()),
        env: Vec::new(),
        secret: secret_file(folder.path()),
        drain_delay_seconds: 2.0,
        model: MODEL_DIR.into(),
    };
    let ports = [free_port(), free_port(), free_port()];
    let writer = Replica::start(&spec("writer"), ports[0]).await;
    upsert(writer.addr, CATALOG).await.unwrap();
    let mut followers = [
        Replica::start(&spec("follower"), ports[1]).await,
        Replica::start(&spec("follower"), ports[2]).await,
    ];
    let envoy = Envoy::start(ports).await;
    for follower in &followers {
        wait_for(
            "the catalog on the follower",
            Duration::from_secs(30),
            || async {
                let ids = search_ids(follower.addr, "dusseldorf").await.ok()?;
                ids.contains(&"city-dusseldorf".to_string()).then_some(())
            },
        )
        .await;
    }

    // Calls spread over all three replicas.
    for _ in 0..30 {
        search_ids(envoy.addr, "dusseldorf").await.unwrap();
    }
    for replica in [&writer, &followers[0], &followers[1]] {
        let served = replica
            .metric("voicesearch_requests_total{code=\"OK\",rpc=\"Search\"}")
            .await;
        println!("replica {} answered {served} of 30 searches", replica.addr);
        assert!(served > 0.0, "replica {} got no call", replica.addr);
    }

    // Catalog writes through Envoy reach the writer.
    upsert(envoy.addr, &[("city-berlin", "Berlin", "city")])
        .await
        .unwrap();

    // gRPC-Web, as a browser sends it, through Envoy's filter.
    {
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;
        use tonic_web::GrpcWebClientLayer;
        let http1 = Client::builder(TokioExecutor::new()).build_http();
        let web = tower::ServiceBuilder::new()
            .layer(GrpcWebClientLayer::new())
            .service(http1);
        let origin = format!("http://{}", envoy.addr).parse().unwrap();
        let hits = SearchClient::with_origin(web, origin)
            .search(SearchRequest {
                query: "dusseldorf".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .hits;
        assert_eq!(hits.first().map(|h| h.id.as_str()), Some("city-dusseldorf"));
    }

    // The browsers' WebSocket stream, upgraded by Envoy and carried to a replica over
    // HTTP/2.
    {
        use futures_util::{SinkExt, StreamExt};
        use prost::Message as _;
        use tokio_tungstenite::tungstenite::Message;
        use voice_search::proto::streaming_voice_search_request::Request;
        use voice_search::proto::{
            AudioEncoding, EndOfUtterance, RecognitionConfig, StreamingVoiceSearchConfig,
            StreamingVoiceSearchResponse,
        };
        let url = format!("ws://{}{}", envoy.addr, voice_search::service::STREAM_PATH);
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let config = StreamingVoiceSearchConfig {
            recognition: Some(RecognitionConfig {
                encoding: AudioEncoding::Wav as i32,
                ..Default::default()
            }),
            search: None,
        };
        for request in [
            Request::Config(config),
            Request::Audio(crate::common::fixture_bytes("q0004.wav")),
            Request::EndOfUtterance(EndOfUtterance {}),
        ] {
            socket.send(crate::common::ws_frame(request)).await.unwrap();
        }
        let Some(Ok(Message::Binary(bytes))) = socket.next().await else {
            panic!("no final over the WebSocket through Envoy");
        };
        let result = StreamingVoiceSearchResponse::decode(bytes)
            .unwrap()
            .result
            .unwrap();
        assert_eq!(
            result.transcript.unwrap().text,
            "You will now be placed into the conference."
        );
        socket.close(None).await.unwrap();
    }

    // SIGTERM: health turns NOT_SERVING at once, Envoy stops sending, the replica drains
    // and exits, and no call fails.
    let (calls, failures) = under_load(envoy.addr, async {
        followers[1].terminate();
        wait_for(
            "NOT_SERVING after SIGTERM",
            Duration::from_secs(5),
            || async {
                (followers[1].health().await == Some(ServingStatus::NotServing)).then_some(())
            },
        )
        .await;
        let exit = followers[1].wait_exit(Duration::from_secs(30)).await;
        assert!(exit.success(), "the drained replica exited with {exit}");
    })
    .await;
    println!("SIGTERM under load: {calls} calls through envoy, {failures} failed");
    assert_eq!(failures, 0, "calls failed while a replica drained");

    followers[1] = Replica::start(&spec("follower"), ports[2]).await;
    envoy.wait_healthy(3).await;

    // kill -9 under load: Envoy retries what the dead replica held on another one.
    let (calls, failures) = under_load(envoy.addr, async {
        followers[0].kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    println!("kill -9 under load: {calls} calls through envoy, {failures} failed");
    assert_eq!(failures, 0, "calls failed when a replica was killed");
    envoy.wait_healthy(2).await;

    // A stream open on a replica that dies breaks under the client (through Envoy an
    // HTTP/2 reset, as no proxy can retry a stream already answering), which our client
    // counts as retryable; its resend of the unanswered utterance through Envoy succeeds.
    let target = client::ServerTarget {
        address: envoy.addr.to_string(),
        ..Default::default()
    };
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let message = |request| StreamingVoiceSearchRequest {
        request: Some(request),
    };
    sender
        .send(message(Request::Config(StreamingVoiceSearchConfig {
            recognition: Some(RecognitionConfig {
                encoding: AudioEncoding::Wav as i32,
                ..Default::default()
            }),
            search: None,
        })))
        .await
        .unwrap();
    sender
        .send(message(Request::Audio(
            fixture_bytes("q0070.wav")[..4096].to_vec(),
        )))
        .await
        .unwrap();
    let mut responses = VoiceSearchClient::new(client::connect(&target).await.unwrap())
        .streaming_voice_search(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let mut replicas = [Some(writer), Some(followers.into_iter().nth(1).unwrap())];
    kill_stream_holder(&mut replicas).await;
    let ended = responses.message().await.unwrap_err();
    println!(
        "the stream on the killed replica ended with {:?}: {}",
        ended.code(),
        ended.message()
    );
    assert!(
        client::RetryPolicy::retries(&client::ClientError::Status(ended)),
        "a broken stream must count as retryable"
    );
    drop(sender);

    // Now while our client streams: it resends the utterance that had no final result.
    let restarted = Replica::start(&spec("follower"), ports[1]).await;
    envoy.wait_healthy(2).await;
    let mut replicas = [replicas.into_iter().flatten().next(), Some(restarted)];
    let recording = client::Recording::from_file(&fixture_path("q0070.wav"), false).unwrap();
    let options = client::SendOptions {
        realtime: true,
        ..Default::default()
    };
    let streaming = tokio::spawn(async move {
        client::stream_recording(
            &mut VoiceSearchClient::new(client::connect(&target).await.unwrap()),
            &recording,
            &options,
            |_| {},
        )
        .await
    });
    kill_stream_holder(&mut replicas).await;
    let finals = streaming.await.unwrap().unwrap();
    assert_eq!(finals.len(), 1);
    let text = finals[0]
        .result
        .transcript
        .as_ref()
        .unwrap()
        .text
        .to_lowercase();
    assert!(text.contains("lambs"), "{text}");
    // How often Envoy itself retried upstream, beside our client's resends.
    let retries = envoy.admin("/stats?filter=upstream_rq_retry").await;
    println!("envoy retry counters:\n{}", retries.trim());
}

/// Kills (`kill -9`) whichever of `replicas` holds an open stream, once one does.
async fn kill_stream_holder(replicas: &mut [Option<Replica>; 2]) {
    let holder = wait_for("a stream on a replica", Duration::from_secs(10), || {
        let replicas = &*replicas;
        async move {
            for (i, replica) in replicas.iter().enumerate() {
                if let Some(replica) = replica {
                    if replica.metric("voicesearch_active_streams ").await == 1.0 {
                        return Some(i);
                    }
                }
            }
            None
        }
    })
    .await;
    if let Some(mut replica) = replicas[holder].take() {
        replica.kill();
    }
}
