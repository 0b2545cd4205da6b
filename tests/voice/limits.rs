//! What a stream may not do: bad input, oversized messages, silence, a full queue, too
//! many streams; and a client that leaves frees what it held.

use super::*;

#[tokio::test]
async fn bad_input_over_the_stream_gets_its_status_and_the_server_goes_on() {
    let server = TestServer::start(ServeConfig {
        max_utterance_seconds: 5.0,
        max_stream_seconds: 8.0,
        ..test_config()
    })
    .await;
    let mut client = Client::new(server.channel().await);
    let raw16k = config(AudioEncoding::Linear16, 16_000);
    let mut unknown = config(AudioEncoding::Wav, 0);
    unknown.recognition.as_mut().unwrap().encoding = 42;
    let nan: Vec<u8> = [0.1f32, f32::NAN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let four_seconds = vec![0u8; 2 * 16_000 * 4];
    let cases: Vec<(&str, Vec<StreamingVoiceSearchRequest>, Code, &str)> = vec![
        (
            "audio before the config",
            vec![audio(&[0; 320]), configure(raw16k.clone())],
            Code::InvalidArgument,
            "before the config",
        ),
        (
            "a second config",
            vec![configure(raw16k.clone()), configure(raw16k.clone())],
            Code::InvalidArgument,
            "second config",
        ),
        (
            "an empty message",
            vec![StreamingVoiceSearchRequest { request: None }],
            Code::InvalidArgument,
            "nothing set",
        ),
        (
            "an unknown encoding",
            vec![configure(unknown)],
            Code::InvalidArgument,
            "encoding 42 is unknown",
        ),
        (
            "a sample rate out of range",
            vec![configure(config(AudioEncoding::Linear16, 4_000))],
            Code::InvalidArgument,
            "4000 Hz",
        ),
        (
            "a corrupt WAV header",
            vec![
                configure(config(AudioEncoding::Wav, 0)),
                audio(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk"),
                end(),
            ],
            Code::InvalidArgument,
            "WAV",
        ),
        (
            "an odd byte count for LINEAR16",
            vec![configure(raw16k.clone()), audio(&[0; 101]), end()],
            Code::InvalidArgument,
            "101 bytes",
        ),
        (
            "NaN floats",
            vec![
                configure(config(AudioEncoding::Float32, 16_000)),
                audio(&nan),
                end(),
            ],
            Code::InvalidArgument,
            "NaN",
        ),
        (
            "an empty utterance",
            vec![configure(raw16k.clone()), end()],
            Code::InvalidArgument,
            "utterance 0 holds no audio",
        ),
        (
            "a too-long utterance",
            vec![
                configure(raw16k.clone()),
                audio(&four_seconds),
                audio(&four_seconds),
            ],
            Code::OutOfRange,
            "limit is 5.0 s",
        ),
        (
            "a too-long stream",
            vec![
                configure(raw16k.clone()),
                audio(&four_seconds),
                end(),
                audio(&four_seconds),
                end(),
                audio(&four_seconds),
            ],
            Code::OutOfRange,
            "per stream",
        ),
    ];
    for (what, messages, code, message) in cases {
        let (_, ended) = exchange(&mut client, messages).await;
        let status = ended.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(
            status.message().contains(message),
            "{what}: {}",
            status.message()
        );
        assert_still_answers(&mut client).await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused() {
    let server = TestServer::start(ServeConfig {
        max_message_bytes: 128 * 1024,
        ..test_config()
    })
    .await;
    let mut client = Client::new(server.channel().await);
    let (_, ended) = exchange(
        &mut client,
        vec![
            configure(config(AudioEncoding::Linear16, 16_000)),
            audio(&vec![0; 200 * 1024]),
            end(),
        ],
    )
    .await;
    let status = ended.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{}", status.message());
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );
    assert_still_answers(&mut client).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_stream_is_closed_with_deadline_exceeded() {
    let server = TestServer::start(ServeConfig {
        idle_timeout_seconds: 0.5,
        ..test_config()
    })
    .await;
    let mut client = Client::new(server.channel().await);
    let (sender, receiver) = mpsc::channel(1);
    sender
        .send(configure(config(AudioEncoding::Linear16, 16_000)))
        .await
        .unwrap();
    let mut stream = client
        .streaming_voice_search(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    // The sender stays alive, so the stream is open but silent.
    let status = stream.message().await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{}",
        status.message()
    );
    drop(sender);
    assert_still_answers(&mut client).await;
    server.shutdown().await.unwrap();
}

/// Opens a stream that sends one utterance and then stays open; returns the sender that
/// keeps it open and the response stream.
async fn open_utterance(
    client: &mut Client,
    wav: &[u8],
) -> Result<
    (
        mpsc::Sender<StreamingVoiceSearchRequest>,
        tonic::Streaming<StreamingVoiceSearchResponse>,
    ),
    Status,
> {
    let (sender, receiver) = mpsc::channel(4);
    sender
        .send(configure(config(AudioEncoding::Wav, 0)))
        .await
        .unwrap();
    sender.send(audio(wav)).await.unwrap();
    sender.send(end()).await.unwrap();
    let stream = client
        .streaming_voice_search(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    Ok((sender, stream))
}

#[tokio::test]
async fn a_full_queue_answers_resource_exhausted_and_the_rest_succeed() {
    let server = TestServer::start(ServeConfig {
        workers: 1,
        queue_depth: 2,
        ..test_config()
    })
    .await;
    let client = Client::new(server.channel().await);
    let wav = fixture_bytes("q0068.wav");
    let calls = (0..8).map(|_| {
        let mut client = client.clone();
        let wav = wav.clone();
        tokio::spawn(async move {
            exchange(
                &mut client,
                vec![configure(config(AudioEncoding::Wav, 0)), audio(&wav), end()],
            )
            .await
        })
    });
    let (mut answered, mut refused) = (0, 0);
    for call in calls.collect::<Vec<_>>() {
        let (responses, ended) = call.await.unwrap();
        match ended {
            Ok(()) => {
                answered += 1;
                assert!(text(finals(&responses)[0]).starts_with("The number you have dialed"));
            }
            Err(status) => {
                refused += 1;
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("retry"), "{status:?}");
            }
        }
    }
    assert!(answered >= 2, "{answered} answered");
    assert!(refused >= 1, "nothing refused");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    let server = TestServer::start(ServeConfig {
        max_streams: 1,
        ..test_config()
    })
    .await;
    let mut client = Client::new(server.channel().await);
    let (held, _responses) = open_utterance(&mut client, &fixture_bytes("q0004.wav"))
        .await
        .unwrap();
    let (_, ended) = exchange(&mut client, vec![configure(config(AudioEncoding::Wav, 0))]).await;
    assert_eq!(ended.unwrap_err().code(), Code::ResourceExhausted);
    drop(held);
    drop(_responses);
    // The slot comes back once the first stream is gone.
    let mut answered = false;
    for _ in 0..50 {
        let (responses, ended) = exchange(
            &mut client,
            vec![
                configure(config(AudioEncoding::Wav, 0)),
                audio(&fixture_bytes("q0004.wav")),
            ],
        )
        .await;
        if ended.is_ok() {
            assert_eq!(text(finals(&responses)[0]), CONFERENCE);
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "the stream slot never came back");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_leaves_frees_its_queue_place_and_stops_its_work() {
    let server = TestServer::start(ServeConfig {
        workers: 1,
        queue_depth: 1,
        ..test_config()
    })
    .await;
    let mut client = Client::new(server.channel().await);
    // A long utterance keeps the one worker busy.
    let long: Vec<u8> = {
        let (pcm, _) = linear16("q0068.wav");
        pcm.repeat(5)
    };
    let mut busy_config = config(AudioEncoding::Linear16, 8_000);
    busy_config.recognition.as_mut().unwrap().channels = 1;
    let mut busy_client = client.clone();
    let busy = tokio::spawn(async move {
        exchange(
            &mut busy_client,
            vec![configure(busy_config), audio(&long), end()],
        )
        .await
    });
    server
        .wait_for_metric("voicesearch_busy_workers", 1.0)
        .await;
    // This one takes the only queue place, then its client goes away.
    let (sender, responses) = open_utterance(&mut client, &fixture_bytes("q0004.wav"))
        .await
        .unwrap();
    server
        .wait_for_metric("voicesearch_queued_utterances", 1.0)
        .await;
    drop(sender);
    drop(responses);
    // Its place comes back while the worker is still busy with the long utterance.
    server
        .wait_for_metric("voicesearch_queued_utterances", 0.0)
        .await;
    // The long utterance is still running: nothing has reached the drift window, which
    // a worker feeds as it finishes an utterance (before it takes the next job).
    assert_eq!(
        server.drift_report().await.utterances_in_window,
        0,
        "the queued job was not given back when its client left"
    );
    // Its place is free again while the worker is still busy.
    let mut waiting_client = client.clone();
    let waiting = tokio::spawn(async move {
        exchange(
            &mut waiting_client,
            vec![
                configure(config(AudioEncoding::Wav, 0)),
                audio(&fixture_bytes("q0004.wav")),
            ],
        )
        .await
    });
    server
        .wait_for_metric("voicesearch_queued_utterances", 1.0)
        .await;
    // The long utterance's client goes away too: its running job stops early, so the
    // waiting utterance is the only one ever to finish.
    busy.abort();
    let (responses, ended) = waiting.await.unwrap();
    ended.unwrap();
    assert_eq!(text(finals(&responses)[0]), CONFERENCE);
    assert_eq!(
        server.drift_report().await.utterances_in_window,
        1,
        "the running job went on after its client left"
    );
    server.shutdown().await.unwrap();
}
