//! A bounded soak on a real server: three streams speak in real time (100 ms chunks,
//! 100 ms apart), one of them asking for interim results, several utterances each,
//! while text searches run twice a second; every utterance gets its right final result,
//! every search answers, and no call fails. The voice latency and the process's memory
//! are printed per utterance round, for the README's figures, never asserted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use voice_search::proto::search_client::SearchClient;
use voice_search::proto::{AudioEncoding, SearchRequest};

use super::{audio, config, configure, end, finals, linear16, text, Client, CONFERENCE};
use crate::common::server::{test_config, TestServer};

const STREAMS: usize = 3;
const UTTERANCES_PER_STREAM: usize = 4;
/// However slow the machine, the soak ends by then.
const SOAK_BOUND: Duration = Duration::from_secs(300);

/// Resident memory of this process (the server runs in it), in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One stream of `UTTERANCES_PER_STREAM` utterances sent in real time; each final's
/// latency from its end of utterance.
async fn speak(server: &TestServer, interim: bool) -> Vec<Duration> {
    let mut client = Client::new(server.channel().await);
    let (pcm, rate) = linear16("q0004.wav");
    let mut stream_config = config(AudioEncoding::Linear16, rate);
    stream_config.recognition.as_mut().unwrap().interim_results = interim;
    let (sender, receiver) = mpsc::channel(64);
    sender.send(configure(stream_config)).await.unwrap();
    let mut responses = client
        .streaming_voice_search(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let chunk = rate as usize / 10 * 2;
    let sending = tokio::spawn(async move {
        let mut ended = Vec::new();
        for _ in 0..UTTERANCES_PER_STREAM {
            for piece in pcm.chunks(chunk) {
                sender.send(audio(piece)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sender.send(end()).await.unwrap();
            ended.push(Instant::now());
        }
        ended
    });
    let mut received = Vec::new();
    let mut answered = Vec::new();
    while let Some(response) = responses.message().await.unwrap() {
        if response.result.as_ref().is_some_and(|r| r.is_final) {
            answered.push(Instant::now());
        }
        received.push(response);
    }
    let ended = sending.await.unwrap();
    let finals = finals(&received);
    assert_eq!(finals.len(), UTTERANCES_PER_STREAM);
    for result in &finals {
        assert_eq!(text(result), CONFERENCE);
    }
    ended
        .iter()
        .zip(&answered)
        .map(|(ended, answered)| answered.saturating_duration_since(*ended))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_searches_together_keep_answering() {
    let server = TestServer::start(test_config()).await;
    server
        .add_documents(&[("m1", "The Conference", "movie"), ("m2", "Heat", "movie")])
        .await;
    let rss_before = rss_mib();
    let searched = AtomicUsize::new(0);
    let soak = async {
        let speakers: Vec<_> = (0..STREAMS)
            .map(|index| speak(&server, index == 0))
            .collect();
        let voices = futures_util::future::join_all(speakers);
        let searches = async {
            let mut client = SearchClient::new(server.channel().await);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let response = client
                    .search(SearchRequest {
                        query: "conference".into(),
                        page_size: 1,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(response.hits[0].id, "m1");
                searched.fetch_add(1, Ordering::Relaxed);
            }
        };
        tokio::select! {
            latencies = voices => latencies,
            _ = searches => unreachable!("searches run until the voices end"),
        }
    };
    let latencies = tokio::time::timeout(SOAK_BOUND, soak)
        .await
        .expect("the soak ends within its bound");
    let mut all: Vec<Duration> = latencies.into_iter().flatten().collect();
    all.sort();
    println!(
        "soak: {} utterances over {STREAMS} streams and {} searches, final latency p50 {:?}, max {:?}; RSS {:.0} -> {:.0} MiB",
        all.len(),
        searched.load(Ordering::Relaxed),
        all[all.len() / 2],
        all[all.len() - 1],
        rss_before,
        rss_mib()
    );
    server.shutdown().await.unwrap();
}
