//! Clients that stop reading: whatever a client reads, its stream ends at
//! `max_stream_seconds`, no more than a few results wait for it, and the end still says
//! why; a client that never reads again is dropped, which gives its stream's place back.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use voice_search::config::ServeConfig;
use voice_search::proto::catalog_client::CatalogClient;
use voice_search::proto::{
    AudioEncoding, Document, SearchOptions, StreamingVoiceSearchRequest,
    StreamingVoiceSearchResponse, UpsertDocumentsRequest,
};

use super::{audio, config, configure, end, linear16, Client};
use crate::common::server::{test_config, TestServer};

const MAX_STREAM_SECONDS: f64 = 10.0;
/// Short utterances ("you will now be"), so that many fit in the stream's audio limit.
const UTTERANCE_SECONDS: f64 = 0.6;
const UTTERANCES: usize = 16;
/// Results the server's queue holds for a client; the transport holds what fits in the
/// client's HTTP/2 window besides and one result being written, and the utterances the
/// workers are transcribing when the limit passes still end in results.
const QUEUED: usize = 8;
/// The narrow client's stream and connection windows.
const WINDOW_BYTES: usize = 65_535;

/// A server whose every result is about half a megabyte: eight documents that the
/// utterance matches, each with a 60 KB body.
async fn server(max_streams: usize) -> TestServer {
    let server = TestServer::start(ServeConfig {
        max_stream_seconds: MAX_STREAM_SECONDS,
        max_streams,
        ..test_config()
    })
    .await;
    let documents = (0..8)
        .map(|i| Document {
            id: format!("doc-{i}"),
            title: format!("you will now be number {i}"),
            body: "filler ".repeat(60_000 / 7),
            ..Default::default()
        })
        .collect();
    CatalogClient::new(server.channel().await)
        .upsert_documents(UpsertDocumentsRequest { documents })
        .await
        .unwrap();
    server
}

/// A connection with the smallest HTTP/2 windows, so that one result fills them.
async fn narrow_client(server: &TestServer) -> Client {
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(WINDOW_BYTES as u32)
        .initial_connection_window_size(WINDOW_BYTES as u32)
        .connect()
        .await
        .unwrap();
    Client::new(channel)
}

/// Opens a stream, sends every utterance without half-closing, and reads nothing; the
/// sender is returned so that the stream stays open from the client's side.
async fn send_without_reading(
    client: &mut Client,
) -> (
    mpsc::Sender<StreamingVoiceSearchRequest>,
    Streaming<StreamingVoiceSearchResponse>,
) {
    let (pcm, rate) = linear16("q0004.wav");
    let utterance = pcm[..(UTTERANCE_SECONDS * rate as f64) as usize * 2].to_vec();
    let mut stream_config = config(AudioEncoding::Linear16, rate);
    stream_config.recognition.as_mut().unwrap().channels = 1;
    stream_config.search = Some(SearchOptions {
        max_hits: 8,
        ..Default::default()
    });
    let (sender, receiver) = mpsc::channel(4);
    sender.send(configure(stream_config)).await.unwrap();
    let feeder = sender.clone();
    tokio::spawn(async move {
        for _ in 0..UTTERANCES {
            if feeder.send(audio(&utterance)).await.is_err() || feeder.send(end()).await.is_err() {
                return;
            }
        }
    });
    let responses = client
        .streaming_voice_search(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    (sender, responses)
}

#[tokio::test]
async fn a_client_that_stops_reading_gets_a_bounded_queue_and_the_reason_at_the_limit() {
    let server = server(4).await;
    let mut client = narrow_client(&server).await;
    let (_open, mut responses) = send_without_reading(&mut client).await;
    // Past the limit, but within the grace the server gives unread results.
    tokio::time::sleep(Duration::from_secs_f64(MAX_STREAM_SECONDS + 1.5)).await;
    let (mut finals, mut smallest) = (0, usize::MAX);
    let ended = loop {
        match responses.message().await {
            Ok(Some(response)) => {
                smallest = smallest.min(prost::Message::encoded_len(&response));
                finals += response.result.map_or(0, |r| r.is_final as usize);
            }
            Ok(None) => panic!("the stream ended well after {finals} finals, past its limit"),
            Err(status) => break status,
        }
    };
    assert!(finals >= 1, "no result reached the client");
    // Most results are half a megabyte, but one whose words match nothing is small, and
    // several such fit in the window.
    let workers = voice_search::workers::PoolSize::default().workers;
    let most = QUEUED + WINDOW_BYTES / smallest + 1 + workers;
    assert!(
        finals <= most,
        "{finals} results waited for a client that did not read (at most {most}: the smallest was {smallest} bytes)"
    );
    assert_eq!(ended.code(), Code::OutOfRange, "{ended:?}");
    assert!(ended.message().contains("open a new stream"), "{ended:?}");
}

#[tokio::test]
async fn a_client_that_never_reads_again_is_dropped_and_its_place_comes_back() {
    let server = server(1).await;
    let mut client = narrow_client(&server).await;
    let (_open, _unread) = send_without_reading(&mut client).await;
    // Results unread hold the stream's place, so the one place stays taken past the
    // stream's end...
    tokio::time::sleep(Duration::from_secs_f64(MAX_STREAM_SECONDS + 1.5)).await;
    let mut other = Client::new(server.channel().await);
    let refused = other
        .streaming_voice_search(tokio_stream::iter(vec![configure(config(
            AudioEncoding::Wav,
            0,
        ))]))
        .await;
    let refused = match refused {
        Ok(response) => response.into_inner().message().await.map(|_| ()),
        Err(status) => Err(status),
    };
    assert_eq!(refused.unwrap_err().code(), Code::ResourceExhausted);
    // ...until the server drops the client that left them unread.
    let mut freed = false;
    for _ in 0..100 {
        let call = other
            .streaming_voice_search(tokio_stream::iter(vec![configure(config(
                AudioEncoding::Wav,
                0,
            ))]))
            .await;
        if let Ok(response) = call {
            if response.into_inner().message().await.is_ok() {
                freed = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the unread stream's place never came back");
}
