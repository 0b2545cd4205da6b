//! Catalog-aware recognition on the real model and a real index: names the transcript
//! garbles are found through the catalog, what the catalog lacks gets low confidence,
//! and the catalog's names follow every committed write.

use voice_search::asr::TranscribeOptions;
use voice_search::pipeline::{HitOptions, HitSource, Pipeline, UtteranceOutcome};
use voice_search::proto::catalog_client::CatalogClient;
use voice_search::proto::voice_search_client::VoiceSearchClient;
use voice_search::proto::{
    self, DeleteDocumentRequest, Document, RecognitionConfig, StreamingVoiceSearchConfig,
    UpsertDocumentsRequest, VoiceSearchRequest,
};

use crate::common::server::{test_config, TestServer};
use crate::common::{fixture_bytes, fixture_pipeline, wav_format};

fn run(pipeline: &Pipeline, clip: &str, catalog_bias: bool) -> UtteranceOutcome {
    let format = wav_format();
    let hits = HitOptions {
        max_hits: 5,
        catalog_bias,
        ..Default::default()
    };
    pipeline
        .run_bytes(
            &fixture_bytes(clip),
            &format,
            &TranscribeOptions::default(),
            Some(&hits),
        )
        .unwrap()
}

fn first_id(outcome: &UtteranceOutcome) -> Option<&str> {
    outcome.hits.first().map(|h| h.hit.id.as_str())
}

#[test]
fn a_name_the_transcript_garbles_is_found_through_the_catalog() {
    let (_index, pipeline) = fixture_pipeline();
    // "play iron man by ozzy osbourne" in pink noise: tiny.en writes "Play Iron and Play
    // Aussie Yassfern.", and text search alone ranks a look-alike first.
    let plain = run(&pipeline, "q0016.wav", false);
    assert!(
        !plain.transcript.text.contains("Ozzy"),
        "{}",
        plain.transcript.text
    );
    assert_ne!(first_id(&plain), Some("song-iron-man"));
    assert!(plain.decision.is_none());

    let biased = run(&pipeline, "q0016.wav", true);
    assert_eq!(
        biased.transcript.text, plain.transcript.text,
        "the free transcript is unchanged"
    );
    assert_eq!(
        first_id(&biased),
        Some("song-iron-man"),
        "{:?}",
        biased.decision
    );
    let first = &biased.hits[0];
    assert_eq!(first.source, HitSource::Acoustic);
    assert!(first.confidence > 0.5, "{}", first.confidence);
    let decision = biased.decision.unwrap();
    assert!(decision.candidates.len() > 1);
    assert!(biased.timings.rescore > std::time::Duration::ZERO);
}

#[test]
fn what_the_catalog_lacks_gets_low_confidence_and_what_it_holds_high() {
    let (_index, pipeline) = fixture_pipeline();
    // "play rehab by amy winehouse" (not in the fixture catalog) and prompts of a phone
    // system: every hit is a guess, and says so.
    for clip in ["q0008.wav", "q0025.wav", "q0068.wav", "q0107.wav"] {
        let outcome = run(&pipeline, clip, true);
        for hit in &outcome.hits {
            assert!(
                hit.confidence < 0.2,
                "{clip}: {} at {} for {:?}",
                hit.hit.id,
                hit.confidence,
                outcome.transcript.text
            );
        }
    }
    for (clip, expected) in [
        ("q0006.wav", "city-dusseldorf"),
        ("q0070.wav", "movie-silence-of-the-lambs"),
        ("q0066.wav", "song-with-or-without-you"),
    ] {
        let outcome = run(&pipeline, clip, true);
        assert_eq!(first_id(&outcome), Some(expected), "{clip}");
        assert!(
            outcome.hits[0].confidence > 0.5,
            "{clip}: {}",
            outcome.hits[0].confidence
        );
        assert!(outcome
            .hits
            .iter()
            .all(|h| (0.0..=1.0).contains(&h.confidence)));
    }
}

#[test]
fn silence_and_noise_still_give_no_text_and_no_hits() {
    let (_index, pipeline) = fixture_pipeline();
    for clip in ["q0118.wav", "q0122.wav"] {
        let outcome = run(&pipeline, clip, true);
        assert_eq!(outcome.transcript.text, "", "{clip}");
        assert!(outcome.hits.is_empty(), "{clip}");
        assert!(outcome.decision.is_none(), "{clip}");
    }
}

fn iron_man() -> Document {
    let attributes = prost_types::Struct {
        fields: [(
            "artist".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(
                    "Ozzy Osbourne".into(),
                )),
            },
        )]
        .into(),
    };
    Document {
        id: "iron".into(),
        title: "Iron Man".into(),
        category: "song".into(),
        attributes: Some(attributes),
        ..Default::default()
    }
}

async fn voice_search(
    voice: &mut VoiceSearchClient<tonic::transport::Channel>,
) -> proto::UtteranceResult {
    voice
        .voice_search(VoiceSearchRequest {
            config: Some(StreamingVoiceSearchConfig {
                recognition: Some(RecognitionConfig {
                    encoding: proto::AudioEncoding::Wav.into(),
                    ..Default::default()
                }),
                search: None,
            }),
            audio: fixture_bytes("q0016.wav"),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
}

#[tokio::test]
async fn a_name_written_through_the_catalog_rpc_is_recognized_once_acknowledged() {
    let server = TestServer::start(test_config()).await;
    server
        .add_documents(&[
            ("aussie", "Aussie Rules", "song"),
            ("crazy", "Crazy Train", "song"),
            ("play", "Play That Funky Music", "song"),
        ])
        .await;
    let mut voice = VoiceSearchClient::new(server.channel().await);
    let mut catalog = CatalogClient::new(server.channel().await);
    let before = voice_search(&mut voice).await;
    assert!(before.hits.iter().all(|h| h.id != "iron"));

    catalog
        .upsert_documents(UpsertDocumentsRequest {
            documents: vec![iron_man()],
        })
        .await
        .unwrap();
    let after = voice_search(&mut voice).await;
    let first = &after.hits[0];
    assert_eq!(first.id, "iron", "{:?}", after.transcript);
    // Only the recognizer's beam over the catalog's names finds a hit so.
    assert_eq!(first.source(), proto::HitSource::Acoustic);
    assert!(first.confidence > 0.5, "{}", first.confidence);

    catalog
        .delete_document(DeleteDocumentRequest { id: "iron".into() })
        .await
        .unwrap();
    let deleted = voice_search(&mut voice).await;
    assert!(deleted.hits.iter().all(|h| h.id != "iron"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn max_alternatives_returns_distinct_n_best_transcripts_within_its_limit() {
    let server = TestServer::start(test_config()).await;
    let mut voice = VoiceSearchClient::new(server.channel().await);
    let ask = |max_alternatives: u32| proto::TranscribeRequest {
        config: Some(RecognitionConfig {
            encoding: proto::AudioEncoding::Wav.into(),
            max_alternatives,
            ..Default::default()
        }),
        audio: fixture_bytes("q0070.wav"),
    };
    let one = voice.transcribe(ask(0)).await.unwrap().into_inner();
    let one = one.transcript.unwrap();
    assert_eq!(one.alternatives.len(), 1);
    assert_eq!(one.alternatives[0].text, one.text);

    let several = voice.transcribe(ask(4)).await.unwrap().into_inner();
    let several = several.transcript.unwrap();
    assert!(
        (2..=4).contains(&several.alternatives.len()),
        "{:?}",
        several.alternatives
    );
    assert_eq!(several.alternatives[0].text, several.text);
    let mut texts: Vec<&str> = several
        .alternatives
        .iter()
        .map(|a| a.text.as_str())
        .collect();
    texts.dedup();
    assert_eq!(
        texts.len(),
        several.alternatives.len(),
        "distinct: {texts:?}"
    );
    assert!(several
        .alternatives
        .iter()
        .all(|a| (0.0..=1.0).contains(&a.confidence)));

    let refused = voice.transcribe(ask(11)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("max_alternatives 11"),
        "{}",
        refused.message()
    );
    server.shutdown().await.unwrap();
}
