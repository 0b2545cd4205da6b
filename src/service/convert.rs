//! Conversions between the wire types and the library's, decided once: documents and
//! JSON values, hits, transcripts, audio descriptions, drift reports, and the voice
//! requests (audio format, recognition and hit options, stream messages and results).

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};
use tonic::Status;

use crate::asr::{TranscribeOptions, Transcript};
use crate::audio::{AudioFormat, AudioInfo, Encoding};
use crate::monitor::drift::{DriftReport, DriftState, FeatureDrift};
use crate::pipeline::{HitOptions, HitSource, RankedHit, UtteranceOutcome};
use crate::proto::streaming_voice_search_request::Request as StreamRequest;
use crate::proto::{self, AudioEncoding, RecognitionConfig};
use crate::search::query::MAX_PAGE_SIZE;
use crate::search::{CatalogDocument, SearchHit, UpsertCounts};
use crate::voice::{Inbound, StreamConfig, StreamResult};

/// Keys of the document fields the proto names; everything else travels in `attributes`.
const NAMED_FIELDS: [&str; 5] = ["id", "title", "body", "category", "popularity"];

/// A wire document as the JSON object the catalog stores.
fn document_to_json(document: proto::Document) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("id".into(), Value::String(document.id));
    map.insert("title".into(), Value::String(document.title));
    map.insert("body".into(), Value::String(document.body));
    map.insert("category".into(), Value::String(document.category));
    if let Some(popularity) = document.popularity {
        // NaN and the infinities have no JSON number: kept as text, which validation
        // refuses by name instead of reading the field as absent.
        let value = Number::from_f64(popularity)
            .map_or_else(|| Value::String(popularity.to_string()), Value::Number);
        map.insert("popularity".into(), value);
    }
    for (key, value) in document.attributes.map(|s| s.fields).unwrap_or_default() {
        if !NAMED_FIELDS.contains(&key.as_str()) {
            map.insert(key, from_proto_value(value));
        }
    }
    map
}

/// Validates wire documents; the error names the first bad one by position and id.
pub fn validate(
    documents: Vec<proto::Document>,
    context: &str,
) -> Result<Vec<CatalogDocument>, Status> {
    documents
        .into_iter()
        .enumerate()
        .map(|(i, document)| {
            CatalogDocument::from_json(Value::Object(document_to_json(document)))
                .map_err(|e| Status::invalid_argument(format!("{context}document {i}: {e}")))
        })
        .collect()
}

/// A stored JSON object as a wire document.
pub fn json_to_document(map: &Map<String, Value>) -> proto::Document {
    let text = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let attributes = map
        .iter()
        .filter(|(key, _)| !NAMED_FIELDS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), to_proto_value(value)))
        .collect();
    proto::Document {
        id: match map.get("id") {
            Some(Value::Number(n)) => n.to_string(),
            _ => text("id"),
        },
        title: text("title"),
        body: text("body"),
        category: text("category"),
        popularity: map.get("popularity").and_then(Value::as_f64),
        attributes: Some(prost_types::Struct { fields: attributes }),
    }
}

fn to_proto_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_proto_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), to_proto_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn from_proto_value(value: prost_types::Value) -> Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        // Whole numbers stay integers, so that `"year": 1994` round-trips as it came.
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
            Value::Number(Number::from(n as i64))
        }
        Some(Kind::NumberValue(n)) => Number::from_f64(n).map_or(Value::Null, Value::Number),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.into_iter().map(from_proto_value).collect())
        }
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .into_iter()
                .map(|(k, v)| (k, from_proto_value(v)))
                .collect(),
        ),
    }
}

/// A text search hit: no confidence (typed text has no acoustic evidence).
impl From<SearchHit> for proto::Hit {
    fn from(hit: SearchHit) -> Self {
        proto::Hit {
            document: Some(json_to_document(&hit.source)),
            id: hit.id,
            title: hit.title,
            score: hit.score,
            snippet: hit.snippet,
            category: hit.category,
            confidence: 0.0,
            source: proto::HitSource::Text.into(),
        }
    }
}

/// A voice hit, with its confidence and how it was found.
impl From<RankedHit> for proto::Hit {
    fn from(ranked: RankedHit) -> Self {
        let source = match ranked.source {
            HitSource::Text => proto::HitSource::Text,
            HitSource::SoundAlike => proto::HitSource::SoundAlike,
            HitSource::Acoustic => proto::HitSource::Acoustic,
        };
        proto::Hit {
            confidence: ranked.confidence,
            source: source.into(),
            ..proto::Hit::from(ranked.hit)
        }
    }
}

impl From<Transcript> for proto::Transcript {
    fn from(transcript: Transcript) -> Self {
        proto::Transcript {
            text: transcript.text,
            confidence: transcript.confidence,
            no_speech_probability: transcript.no_speech_prob,
            language: transcript.language,
            alternatives: transcript
                .alternatives
                .into_iter()
                .map(|a| proto::TranscriptAlternative {
                    text: a.text,
                    confidence: a.confidence,
                })
                .collect(),
            segments: transcript
                .segments
                .into_iter()
                .map(|s| proto::Segment {
                    start_seconds: s.start_seconds,
                    end_seconds: s.end_seconds,
                    text: s.text,
                })
                .collect(),
            words: transcript
                .words
                .into_iter()
                .map(|w| proto::WordInfo {
                    word: w.word,
                    start_offset: Some(offset(w.start_seconds)),
                    end_offset: Some(offset(w.end_seconds)),
                    confidence: w.confidence,
                })
                .collect(),
        }
    }
}

/// Seconds from the start of an utterance as a protobuf duration.
fn offset(seconds: f32) -> prost_types::Duration {
    let nanos = (f64::from(seconds.max(0.0)) * 1e9).round() as i64;
    prost_types::Duration {
        seconds: nanos / 1_000_000_000,
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

impl From<&AudioInfo> for proto::AudioInfo {
    fn from(info: &AudioInfo) -> Self {
        proto::AudioInfo {
            duration_seconds: info.duration_seconds as f32,
            sample_rate_hz: info.sample_rate,
            channels: info.channels as u32,
            loudness_dbfs: info.loudness_db,
            gain_db: info.gain_db,
            clipped_fraction: info.clipped_fraction,
            voice_detected: info.voice.speech,
        }
    }
}

impl From<DriftReport> for proto::DriftReport {
    fn from(report: DriftReport) -> Self {
        proto::DriftReport {
            window_size: report.window_size as u32,
            utterances_in_window: report.utterances_in_window as u32,
            baseline_source: report.baseline_source,
            features: report
                .features
                .into_iter()
                .map(|row| proto::FeatureDrift {
                    feature: row.feature,
                    reference: row.reference,
                    current: row.current,
                    psi: row.psi,
                    state: match row.state {
                        DriftState::Stable => proto::DriftState::Stable,
                        DriftState::Watch => proto::DriftState::Watch,
                        DriftState::Drift => proto::DriftState::Drift,
                        DriftState::Filling => proto::DriftState::Filling,
                    } as i32,
                })
                .collect(),
        }
    }
}

/// A wire report as the library's, for printing.
impl From<proto::DriftReport> for DriftReport {
    fn from(report: proto::DriftReport) -> Self {
        DriftReport {
            window_size: report.window_size as usize,
            utterances_in_window: report.utterances_in_window as usize,
            baseline_source: report.baseline_source,
            features: report
                .features
                .into_iter()
                .map(|row| FeatureDrift {
                    state: match row.state() {
                        proto::DriftState::Stable => DriftState::Stable,
                        proto::DriftState::Watch => DriftState::Watch,
                        proto::DriftState::Drift => DriftState::Drift,
                        proto::DriftState::Filling | proto::DriftState::Unspecified => {
                            DriftState::Filling
                        }
                    },
                    feature: row.feature,
                    reference: row.reference,
                    current: row.current,
                    psi: row.psi,
                })
                .collect(),
        }
    }
}

/// The wire audio description as the front end's.
pub fn audio_format(config: &RecognitionConfig) -> Result<AudioFormat, Status> {
    let encoding = match AudioEncoding::try_from(config.encoding) {
        Ok(AudioEncoding::Linear16) => Encoding::Linear16,
        Ok(AudioEncoding::Float32) => Encoding::Float32,
        Ok(AudioEncoding::Wav) => Encoding::Wav,
        Ok(AudioEncoding::Mulaw) => Encoding::Mulaw,
        Ok(AudioEncoding::OggOpus) => Encoding::OggOpus,
        Ok(AudioEncoding::Flac) => Encoding::Flac,
        Ok(AudioEncoding::WebmOpus) => Encoding::WebmOpus,
        Ok(AudioEncoding::Unspecified) => {
            return Err(Status::invalid_argument(
                "encoding is unspecified: set LINEAR16, FLOAT32, WAV, MULAW, FLAC, OGG_OPUS or WEBM_OPUS",
            ))
        }
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "encoding {} is unknown: use LINEAR16, FLOAT32, WAV, MULAW, FLAC, OGG_OPUS or WEBM_OPUS",
                config.encoding
            )))
        }
    };
    let channels = u16::try_from(config.channels).map_err(|_| {
        Status::invalid_argument(format!(
            "{} channels are out of range: it must be 1 to 8",
            config.channels
        ))
    })?;
    let format = AudioFormat {
        encoding,
        sample_rate: Some(config.sample_rate_hz).filter(|&r| r != 0),
        // Unset: from the header for every format that has one, else mono.
        channels: match (encoding, channels) {
            (encoding, 0) if encoding.is_self_describing() => None,
            (_, 0) => Some(1),
            (_, n) => Some(n),
        },
    };
    format.validate()?;
    Ok(format)
}

/// Most transcripts one utterance may ask for, as Google Speech-to-Text allows.
const MAX_ALTERNATIVES: usize = 10;

/// Most characters of all phrase hints together, checked before any tokenizing; the
/// decoder's prompt bounds them in tokens after.
const MAX_HINT_CHARS: usize = 2_000;

/// Phrase hints are words or names: bounded, and without control characters.
fn check_hints(hints: &[String]) -> Result<(), Status> {
    let chars: usize = hints.iter().map(|hint| hint.chars().count()).sum();
    if chars > MAX_HINT_CHARS {
        return Err(Status::invalid_argument(format!(
            "the phrase hints hold {chars} characters together; the limit is {MAX_HINT_CHARS}"
        )));
    }
    for (index, hint) in hints.iter().enumerate() {
        if let Some(control) = hint.chars().find(|c| c.is_control()) {
            return Err(Status::invalid_argument(format!(
                "phrase hint {index} holds the control character U+{:04X}: hints are words or names",
                u32::from(control)
            )));
        }
    }
    Ok(())
}

/// How to transcribe, from the wire config.
pub fn transcribe_options(config: &RecognitionConfig) -> Result<TranscribeOptions, Status> {
    check_hints(&config.phrase_hints)?;
    let alternatives = match config.max_alternatives as usize {
        n if n > MAX_ALTERNATIVES => {
            return Err(Status::invalid_argument(format!(
                "max_alternatives {n} is over the limit of {MAX_ALTERNATIVES}"
            )))
        }
        n => n.max(1),
    };
    Ok(TranscribeOptions {
        language: Some(config.language.clone()).filter(|l| !l.is_empty()),
        word_times: config.enable_word_time_offsets,
        phrase_hints: config.phrase_hints.clone(),
        alternatives,
        ..TranscribeOptions::default()
    })
}

/// Hits wanted, from the wire options.
pub fn hit_options(search: Option<&proto::SearchOptions>) -> Result<HitOptions, Status> {
    let max_hits = match search.map_or(0, |s| s.max_hits as usize) {
        0 => crate::pipeline::DEFAULT_MAX_HITS,
        n if n > MAX_PAGE_SIZE => {
            return Err(Status::invalid_argument(format!(
                "max_hits {n} is over the limit of {MAX_PAGE_SIZE}"
            )))
        }
        n => n,
    };
    let categories = search
        .and_then(|s| s.filters.as_ref())
        .map(|f| f.categories.clone())
        .unwrap_or_default();
    Ok(HitOptions {
        max_hits,
        categories,
        catalog_bias: !search.is_some_and(|s| s.disable_catalog_bias),
    })
}

impl TryFrom<proto::StreamingVoiceSearchConfig> for StreamConfig {
    type Error = Status;

    fn try_from(config: proto::StreamingVoiceSearchConfig) -> Result<Self, Status> {
        let recognition = config.recognition.ok_or_else(|| {
            Status::invalid_argument(
                "config.recognition is missing: it must say how the audio is encoded",
            )
        })?;
        Ok(Self {
            format: audio_format(&recognition)?,
            options: transcribe_options(&recognition)?,
            hits: hit_options(config.search.as_ref())?,
            interim_results: recognition.interim_results,
            search_interim: config.search.as_ref().is_some_and(|s| s.search_interim),
        })
    }
}

impl TryFrom<proto::StreamingVoiceSearchRequest> for Inbound {
    type Error = Status;

    fn try_from(message: proto::StreamingVoiceSearchRequest) -> Result<Self, Status> {
        match message.request {
            Some(StreamRequest::Config(config)) => Ok(Self::Config(config.try_into()?)),
            Some(StreamRequest::Audio(chunk)) => Ok(Self::Audio(chunk)),
            Some(StreamRequest::EndOfUtterance(_)) => Ok(Self::EndOfUtterance),
            None => Err(Status::invalid_argument(
                "a message with nothing set: set config, audio or end_of_utterance",
            )),
        }
    }
}

/// One utterance's result on the wire.
pub fn utterance_result(is_final: bool, outcome: UtteranceOutcome) -> proto::UtteranceResult {
    proto::UtteranceResult {
        is_final,
        audio: Some(proto::AudioInfo::from(&outcome.audio)),
        transcript: Some(proto::Transcript::from(outcome.transcript)),
        hits: outcome.hits.into_iter().map(proto::Hit::from).collect(),
    }
}

impl From<StreamResult> for proto::StreamingVoiceSearchResponse {
    fn from(result: StreamResult) -> Self {
        Self {
            utterance_index: result.index,
            result: Some(utterance_result(result.is_final, result.outcome)),
        }
    }
}

impl From<UpsertCounts> for proto::UpsertDocumentsResponse {
    fn from(counts: UpsertCounts) -> Self {
        Self {
            added: counts.added,
            replaced: counts.replaced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::audio_format;
    use crate::proto::{AudioEncoding, RecognitionConfig};

    #[test]
    fn unset_channels_come_from_the_header_wherever_there_is_one() {
        let channels_of = |encoding: AudioEncoding, channels: u32| {
            let config = RecognitionConfig {
                encoding: encoding.into(),
                sample_rate_hz: 16_000,
                channels,
                ..Default::default()
            };
            audio_format(&config).unwrap().channels
        };
        for encoding in [
            AudioEncoding::Wav,
            AudioEncoding::Flac,
            AudioEncoding::OggOpus,
            AudioEncoding::WebmOpus,
        ] {
            assert_eq!(channels_of(encoding, 0), None, "{encoding:?}");
            assert_eq!(channels_of(encoding, 2), Some(2), "{encoding:?}");
        }
        assert_eq!(channels_of(AudioEncoding::Linear16, 0), Some(1));
    }
}
