//! What a stream answers: finals in order, the same whatever the chunking (Ogg and WebM
//! Opus and FLAC cut anywhere too), interim results while audio arrives, phrase hints, and the results
//! owed before an error.

use super::*;

/// Two cities and a song: the fixtures' names and a distractor.
const CATALOG: [(&str, &str, &str); 3] = [
    ("dus", "Düsseldorf", "city"),
    ("ber", "Berlin", "city"),
    ("iron", "Iron Man", "song"),
];

#[tokio::test]
async fn several_utterances_each_get_their_final_result_in_order() {
    let server = TestServer::start(test_config()).await;
    server.add_documents(&CATALOG).await;
    let mut client = Client::new(server.channel().await);
    let (first, rate) = linear16("q0004.wav");
    let (second, second_rate) = linear16("q0006.wav");
    assert_eq!(rate, second_rate);
    // 100 ms chunks, as a phone sends them; the last utterance ends by half-closing.
    let mut messages = vec![configure(config(AudioEncoding::Linear16, rate))];
    messages.extend(pieces(&first, 3_200));
    messages.push(end());
    messages.extend(pieces(&second, 3_200));
    messages.push(end());
    messages.extend(pieces(&vec![0; 32_000], 3_200));
    let (responses, ended) = exchange(&mut client, messages).await;
    ended.unwrap();
    let indexes: Vec<u32> = responses.iter().map(|r| r.utterance_index).collect();
    assert_eq!(indexes, [0, 1, 2]);
    let results = finals(&responses);
    assert_eq!(text(results[0]), CONFERENCE);
    assert_eq!(results[1].hits[0].id, "dus", "{:?}", results[1].transcript);
    // Silence: an empty transcript and no hits, never an invented sentence.
    assert_eq!(text(results[2]), "");
    assert!(results[2].hits.is_empty());
    assert!(!results[2].audio.as_ref().unwrap().voice_detected);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn chunking_never_changes_the_result() {
    let server = TestServer::start(test_config()).await;
    server.add_documents(&CATALOG).await;
    let mut client = Client::new(server.channel().await);
    let wav = fixture_bytes("q0016.wav");
    let whole = exchange(
        &mut client,
        vec![configure(config(AudioEncoding::Wav, 0)), audio(&wav), end()],
    )
    .await;
    // 10 ms of 48 kHz 16-bit audio is 960 bytes; the WAV header is cut too.
    let mut messages = vec![configure(config(AudioEncoding::Wav, 0))];
    messages.extend(pieces(&wav, 960));
    messages.push(end());
    let chunked = exchange(&mut client, messages).await;
    whole.1.unwrap();
    chunked.1.unwrap();
    let (whole, chunked) = (finals(&whole.0)[0], finals(&chunked.0)[0]);
    assert_eq!(whole.transcript, chunked.transcript);
    assert_eq!(whole.hits, chunked.hits);
    assert_eq!(whole.hits[0].id, "iron", "{:?}", whole.transcript);
    let unary = client
        .voice_search(VoiceSearchRequest {
            config: Some(config(AudioEncoding::Wav, 0)),
            audio: wav,
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(unary.transcript, whole.transcript);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn opus_and_flac_streamed_in_small_pieces_answer_as_their_wav_does() {
    let server = TestServer::start(test_config()).await;
    server.add_documents(&CATALOG).await;
    let mut client = Client::new(server.channel().await);
    let mut messages = vec![configure(config(AudioEncoding::OggOpus, 0))];
    // Pages cut anywhere: 700 bytes is a few tens of milliseconds of Opus.
    messages.extend(pieces(&fixture_bytes("q0004.opus"), 700));
    messages.push(end());
    let (opus, ended) = exchange(&mut client, messages).await;
    ended.unwrap();
    let (wav, ended) = exchange(
        &mut client,
        vec![
            configure(config(AudioEncoding::Wav, 0)),
            audio(&fixture_bytes("q0004.wav")),
            end(),
        ],
    )
    .await;
    ended.unwrap();
    // Opus is lossy: the words are the WAV's, their confidences a little off.
    assert_eq!(text(finals(&opus)[0]), CONFERENCE);
    assert_eq!(text(finals(&opus)[0]), text(finals(&wav)[0]));
    let audio = finals(&opus)[0].audio.as_ref().unwrap();
    assert_eq!((audio.sample_rate_hz, audio.channels), (48_000, 1));
    let mut messages = vec![configure(config(AudioEncoding::WebmOpus, 0))];
    messages.extend(pieces(&fixture_bytes("q0004.webm"), 700));
    messages.push(end());
    let (webm, ended) = exchange(&mut client, messages).await;
    ended.unwrap();
    assert_eq!(text(finals(&webm)[0]), CONFERENCE);
    // FLAC is lossless: the whole answer is the WAV's.
    let mut messages = vec![configure(config(AudioEncoding::Flac, 0))];
    messages.extend(pieces(&fixture_bytes("q0004.flac"), 700));
    messages.push(end());
    let (flac, ended) = exchange(&mut client, messages).await;
    ended.unwrap();
    assert_eq!(finals(&flac)[0].transcript, finals(&wav)[0].transcript);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn interim_results_come_while_audio_arrives_then_the_final_one() {
    let server = TestServer::start(test_config()).await;
    let mut client = Client::new(server.channel().await);
    let (pcm, rate) = linear16("q0068.wav");
    let mut stream_config = config(AudioEncoding::Linear16, rate);
    stream_config.recognition.as_mut().unwrap().interim_results = true;
    stream_config.search = Some(SearchOptions {
        search_interim: true,
        ..Default::default()
    });
    // The first two seconds in 100 ms chunks; the rest only once an interim result has
    // come, so the test does not depend on how fast the machine is.
    let (sender, receiver) = mpsc::channel(64);
    sender.send(configure(stream_config)).await.unwrap();
    let (head, tail) = pcm.split_at(2 * 2 * rate as usize);
    for chunk in head.chunks(rate as usize / 10 * 2) {
        sender.send(audio(chunk)).await.unwrap();
    }
    let mut stream = client
        .streaming_voice_search(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let interim = stream.message().await.unwrap().expect("an interim result");
    let result = interim.result.as_ref().unwrap();
    assert!(!result.is_final);
    assert_eq!(interim.utterance_index, 0);
    assert!(
        text(result).starts_with("The number"),
        "{:?}",
        result.transcript
    );
    for chunk in tail.chunks(rate as usize / 10 * 2) {
        sender.send(audio(chunk)).await.unwrap();
    }
    sender.send(end()).await.unwrap();
    drop(sender);
    let mut rest = Vec::new();
    while let Some(response) = stream.message().await.unwrap() {
        rest.push(response);
    }
    let (last, interims) = rest.split_last().unwrap();
    assert!(interims
        .iter()
        .all(|r| !r.result.as_ref().unwrap().is_final));
    let result = last.result.as_ref().unwrap();
    assert!(result.is_final);
    assert_eq!(
        text(result),
        "The number you have dialed is not in service. Please check the number and try again."
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn phrase_hints_from_the_config_reach_the_decoder() {
    let server = TestServer::start(test_config()).await;
    let mut client = Client::new(server.channel().await);
    let wav = fixture_bytes("q0006.wav");
    let mut hinted = config(AudioEncoding::Wav, 0);
    hinted.recognition.as_mut().unwrap().phrase_hints = vec!["Düsseldorf".into()];
    let mut transcripts = Vec::new();
    for stream_config in [config(AudioEncoding::Wav, 0), hinted] {
        let (responses, ended) = exchange(
            &mut client,
            vec![configure(stream_config), audio(&wav), end()],
        )
        .await;
        ended.unwrap();
        transcripts.push(text(finals(&responses)[0]).to_string());
    }
    assert!(!transcripts[0].contains("Düsseldorf"), "{transcripts:?}");
    assert!(transcripts[1].contains("Düsseldorf"), "{transcripts:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_error_ends_the_stream_after_the_results_of_earlier_utterances() {
    let server = TestServer::start(ServeConfig {
        max_utterance_seconds: 5.0,
        ..test_config()
    })
    .await;
    let mut client = Client::new(server.channel().await);
    let (speech, rate) = linear16("q0004.wav");
    let (responses, ended) = exchange(
        &mut client,
        vec![
            configure(config(AudioEncoding::Linear16, rate)),
            audio(&speech),
            end(),
            audio(&vec![0; 2 * rate as usize * 6]),
        ],
    )
    .await;
    let status = ended.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{}", status.message());
    assert!(
        status.message().starts_with("utterance 1:"),
        "{}",
        status.message()
    );
    let results = finals(&responses);
    assert_eq!(results.len(), 1);
    assert_eq!(text(results[0]), CONFERENCE);
    server.shutdown().await.unwrap();
}
