//! Transcription: the window loop over an utterance (seeking as openai-whisper does),
//! the temperature fallback, language, and segments. The network is [`super::model`]'s,
//! one decoding pass is [`super::decode`]'s; this is the policy around them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;

use super::decode::{self, compression_ratio, DecodeRequest, DecodeResult};
use super::mel::{MelExtractor, HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE};
use super::model::DecoderCache;
use super::tokens::TIMESTAMP_SECONDS;
use super::window::ShortWindow;
use super::word_times::{TimedText, WordTime};
use super::{
    AcousticContext, AsrError, AsrTimings, Segment, Transcript, TranscriptAlternative, Whisper,
};

/// How to transcribe.
#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    /// ISO 639-1 code; `None` is English for English-only models and detected otherwise.
    pub language: Option<String>,
    /// 1 decodes greedily; more uses beam search at temperature 0.
    pub beam_size: usize,
    /// Produce segment timestamps (always on for audio longer than one window).
    pub timestamps: bool,
    /// Time each word (one more decoder pass per window).
    pub word_times: bool,
    /// Words or names to make likelier, passed as the decoder's previous text.
    pub phrase_hints: Vec<String>,
    /// Tried in turn while a result looks like a failure (openai-whisper's fallback; see
    /// `decode_with_fallback` for what counts as one).
    pub temperatures: Vec<f32>,
    /// Above this compression ratio a result is a repetition loop.
    pub compression_ratio_threshold: f32,
    /// Below this average log-probability a result is unreliable: with a high no-speech
    /// probability nothing was said, and in long-form audio the window is decoded again.
    pub logprob_threshold: f32,
    /// Above this no-speech probability (with an unreliable result) nothing was said.
    pub no_speech_threshold: f32,
    /// Above this no-speech probability nothing was said, however confident the text:
    /// Whisper writes a fluent "you" over digital silence. On the dev set speech never
    /// scored above 0.5.
    pub no_speech_certain: f32,
    /// Transcripts to return, best first: above 1, a single-window utterance is decoded
    /// by a beam at least this wide and its other finished hypotheses come back too.
    pub alternatives: usize,
    /// Set from another thread to stop at the next window or decoding pass with
    /// [`AsrError::Cancelled`]: nobody is waiting for the transcript any more.
    pub cancelled: Option<Arc<AtomicBool>>,
}

impl TranscribeOptions {
    /// These options, stopping once `flag` is raised.
    pub fn cancelled_by(self, flag: Arc<AtomicBool>) -> Self {
        Self {
            cancelled: Some(flag),
            ..self
        }
    }

    pub(super) fn check_cancelled(&self) -> Result<(), AsrError> {
        match &self.cancelled {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(AsrError::Cancelled),
            _ => Ok(()),
        }
    }
}

/// Tokens allowed per window: a base plus a rate no speech reaches (about 4 tokens per
/// second is fast speech), so that a repetition loop stops early instead of running to
/// the context limit.
fn token_budget(window_seconds: f32) -> usize {
    const BASE_TOKENS: f32 = 16.0;
    const TOKENS_PER_SECOND: f32 = 6.0;
    (BASE_TOKENS + TOKENS_PER_SECOND * window_seconds).ceil() as usize
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: None,
            beam_size: 1,
            timestamps: false,
            word_times: false,
            phrase_hints: Vec::new(),
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: 2.4,
            logprob_threshold: -1.0,
            no_speech_threshold: 0.6,
            no_speech_certain: 0.85,
            alternatives: 1,
            cancelled: None,
        }
    }
}

/// Where a window being decoded comes from.
#[derive(Debug, Clone, Copy)]
struct WindowKind {
    /// Encoded short ([`super::EncoderWindow::Short`]), not as the whole 30 s.
    short: bool,
    /// One of several windows of audio longer than 30 s.
    long_form: bool,
}

/// Where a window sits in the utterance, and how it is decoded.
struct WindowPlace {
    offset_seconds: f32,
    seconds: f32,
    /// Audio follows the window.
    more_audio: bool,
    /// One of several windows of audio longer than 30 s.
    long_form: bool,
    timestamps: bool,
}

/// What the windows of one utterance have given so far.
struct Heard {
    /// The decoder's previous text: the phrase hints, then each window's tokens.
    prompt: Vec<u32>,
    /// Detected (or asked for) in the first window, kept for the others.
    language: Option<u32>,
    segments: Vec<Segment>,
    words: Vec<WordTime>,
    first_no_speech: Option<f32>,
    logprob_sum: f32,
    token_count: usize,
    prob_sum: f32,
    timings: AsrTimings,
    /// A single window's context and n-best texts.
    context: Option<AcousticContext>,
    other_texts: Vec<TranscriptAlternative>,
}

impl Heard {
    fn new(prompt: Vec<u32>) -> Self {
        Self {
            prompt,
            language: None,
            segments: Vec::new(),
            words: Vec::new(),
            first_no_speech: None,
            logprob_sum: 0.0,
            token_count: 0,
            prob_sum: 0.0,
            timings: AsrTimings::default(),
            context: None,
            other_texts: Vec::new(),
        }
    }
}

/// The segments of one window.
struct WindowSegments {
    /// Segments closed by a timestamp (or the whole window without timestamps).
    complete: Vec<Segment>,
    /// Text after the last timestamp that no timestamp closed.
    unfinished: Option<Segment>,
    /// Where, in seconds from the window's start, the next window should begin when
    /// the model did not transcribe the window to its end.
    resume_seconds: Option<f32>,
}

impl Whisper {
    /// Transcribes 16 kHz mono samples.
    pub fn transcribe(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, AsrError> {
        Ok(self.transcribe_in_context(samples, options)?.0)
    }

    /// Transcribes, and keeps what scoring other readings of the same audio needs
    /// ([`Whisper::score_readings`]) when the audio fits one window and held speech.
    /// Audio over 30 s is decoded window by window, seeking as openai-whisper does.
    pub fn transcribe_in_context(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
    ) -> Result<(Transcript, Option<AcousticContext>), AsrError> {
        let mel = MelExtractor::shared(self.model.config.num_mel_bins);
        let long_form = samples.len() > N_SAMPLES;
        let mut heard = Heard::new(self.encode_hints(&options.phrase_hints)?);
        let mut seek = 0usize;
        while seek < samples.len() {
            let window = &samples[seek..samples.len().min(seek + N_SAMPLES)];
            // A sliver left at the end holds nothing to decode.
            if window.len() < SAMPLE_RATE / 10 && seek > 0 {
                break;
            }
            options.check_cancelled()?;
            let place = WindowPlace {
                offset_seconds: seek as f32 / SAMPLE_RATE as f32,
                seconds: window.len() as f32 / SAMPLE_RATE as f32,
                more_audio: seek + window.len() < samples.len(),
                long_form,
                timestamps: options.timestamps || long_form,
            };
            let result = self.decode_window(window, mel, &place, options, &mut heard)?;
            let advance = self.take_window(result, &place, options, &mut heard)?;
            seek += advance.unwrap_or(window.len()).min(window.len());
        }
        self.transcript(heard, options)
    }

    /// One window's best decoding: from a short encoding where the window allows one,
    /// else (or when that loops) from the whole window.
    fn decode_window(
        &self,
        window: &[f32],
        mel: &MelExtractor,
        place: &WindowPlace,
        options: &TranscribeOptions,
        heard: &mut Heard,
    ) -> Result<DecodeResult, AsrError> {
        let started = Instant::now();
        let features = mel.log_mel(window);
        heard.timings.mel += started.elapsed();
        let budget = token_budget(place.seconds);
        let short = self.encode_short(&features, window.len(), place.long_form, heard)?;
        if let Some((audio, frames)) = short {
            let decoded = self.decode_audio(audio, Some(frames), place, budget, options, heard)?;
            if let Some(result) = decoded {
                return Ok(result);
            }
        }
        let started = Instant::now();
        let features = Tensor::from_vec(features, (1, mel.n_mels(), N_FRAMES), &self.device)?;
        let audio = self.model.encoder.forward(&features)?;
        heard.timings.encoder += started.elapsed();
        self.decode_audio(audio, None, place, budget, options, heard)?
            .ok_or(AsrError::NoTemperatures)
    }

    /// Decodes a window's audio states (`short`: the frames a short window computed,
    /// with the silent pass behind them); `None` when a short window loops.
    fn decode_audio(
        &self,
        audio: Tensor,
        short: Option<usize>,
        place: &WindowPlace,
        budget: usize,
        options: &TranscribeOptions,
        heard: &mut Heard,
    ) -> Result<Option<DecodeResult>, AsrError> {
        let started = Instant::now();
        // Cross-attention keys and values: once per window, for every decoding pass.
        let fresh = match (short, &self.short_window) {
            (Some(frames), Some(window)) => window.cache(&self.model.decoder, &audio, frames)?,
            _ => self.model.decoder.cache(&audio)?,
        };
        let language_token = self.window_language(&mut heard.language, options, &fresh)?;
        let result = self.decode_with_fallback(
            &fresh,
            &heard.prompt,
            language_token,
            place.timestamps,
            budget,
            options,
            WindowKind {
                short: short.is_some(),
                long_form: place.long_form,
            },
        )?;
        heard.timings.decoder += started.elapsed();
        Ok(result)
    }

    /// Adds a window's result to what was heard; returns where the next window starts,
    /// in samples from this one's start, when the model stopped short of its end.
    fn take_window(
        &self,
        result: DecodeResult,
        place: &WindowPlace,
        options: &TranscribeOptions,
        heard: &mut Heard,
    ) -> Result<Option<usize>, AsrError> {
        if !place.long_form {
            for alternative in &result.alternatives {
                heard.other_texts.push(TranscriptAlternative {
                    text: self.text(&alternative.tokens)?.trim().to_string(),
                    avg_logprob: alternative.avg_logprob,
                    confidence: alternative.mean_prob,
                });
            }
            heard.context = Some(AcousticContext {
                prompt: result.prompt.clone(),
            });
        }
        heard.first_no_speech.get_or_insert(result.no_speech_prob);
        let silent = result.no_speech_prob > options.no_speech_certain
            || (result.no_speech_prob > options.no_speech_threshold
                && result.avg_logprob < options.logprob_threshold);
        if silent {
            return Ok(None);
        }
        let window_segments = self.segments(
            &result.tokens,
            place.timestamps,
            place.offset_seconds,
            place.seconds,
        )?;
        heard.segments.extend(window_segments.complete);
        let advance = match window_segments.resume_seconds {
            // Decode what follows the last complete segment again, in the next window.
            Some(resume) if place.more_audio => {
                Some(((resume * SAMPLE_RATE as f32) as usize).max(SAMPLE_RATE))
            }
            _ => {
                heard.segments.extend(window_segments.unfinished);
                None
            }
        };
        if options.word_times {
            let words = self.window_words(&result, place, advance.is_some(), heard)?;
            heard.words.extend(words);
        }
        heard.logprob_sum += result.sum_logprob;
        heard.token_count += result.token_probs.len();
        heard.prob_sum += result.token_probs.iter().sum::<f32>();
        heard.prompt.extend(
            result
                .tokens
                .iter()
                .filter(|&&t| t < self.special.end_of_text),
        );
        Ok(advance)
    }

    /// The words of a window's kept text (up to its last timestamp when the next window
    /// decodes the rest again), timed from the start of the audio.
    fn window_words(
        &self,
        result: &DecodeResult,
        place: &WindowPlace,
        resumed: bool,
        heard: &Heard,
    ) -> Result<Vec<WordTime>, AsrError> {
        let begin = self.special.timestamp_begin;
        let kept = match result.tokens.iter().rposition(|&t| t >= begin) {
            Some(last) if resumed => last + 1,
            _ => result.tokens.len(),
        };
        let (tokens, probs): (Vec<u32>, Vec<f32>) = result.tokens[..kept]
            .iter()
            .zip(&result.token_probs)
            .filter(|(&token, _)| token < self.special.end_of_text)
            .unzip();
        let text = TimedText {
            tokens: &tokens,
            probs: &probs,
            frames: (place.seconds * SAMPLE_RATE as f32) as usize / HOP_LENGTH,
            language: heard.language,
        };
        let mut words = self.word_times(result.prompt.cache(), &text)?;
        for word in &mut words {
            word.start_seconds = place.offset_seconds + word.start_seconds.min(place.seconds);
            word.end_seconds = place.offset_seconds + word.end_seconds.min(place.seconds);
        }
        Ok(words)
    }

    /// The ISO 639-1 code of a language token; English when there is none.
    pub(super) fn language_code(&self, token: Option<u32>) -> String {
        self.special
            .languages
            .iter()
            .find(|(_, id)| Some(*id) == token)
            .map_or_else(|| "en".to_string(), |(code, _)| code.clone())
    }

    /// The transcript of everything heard, and the acoustic context when it holds text.
    fn transcript(
        &self,
        heard: Heard,
        options: &TranscribeOptions,
    ) -> Result<(Transcript, Option<AcousticContext>), AsrError> {
        let text = heard
            .segments
            .iter()
            .map(|s| s.text.trim())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let language = self.language_code(heard.language);
        let per_token = |sum: f32| {
            if heard.token_count > 0 {
                sum / heard.token_count as f32
            } else {
                0.0
            }
        };
        let (avg_logprob, confidence) = (per_token(heard.logprob_sum), per_token(heard.prob_sum));
        let mut alternatives = Vec::new();
        if !text.is_empty() {
            alternatives.push(TranscriptAlternative {
                text: text.clone(),
                avg_logprob,
                confidence,
            });
            for other in heard.other_texts {
                if alternatives.len() < options.alternatives
                    && !alternatives.iter().any(|a| a.text == other.text)
                {
                    alternatives.push(other);
                }
            }
        }
        let transcript = Transcript {
            alternatives,
            text,
            segments: heard.segments,
            words: heard.words,
            language,
            no_speech_prob: heard.first_no_speech.unwrap_or(1.0),
            avg_logprob,
            confidence,
            timings: heard.timings,
        };
        let context = heard.context.filter(|_| !transcript.text.is_empty());
        Ok((transcript, context))
    }

    /// The audio states of a window from its first frames and the silent pass, and the
    /// frames computed, when the model keeps one, the window holds a short utterance and
    /// a sound.
    fn encode_short(
        &self,
        features: &[f32],
        samples: usize,
        long_form: bool,
        heard: &mut Heard,
    ) -> Result<Option<(Tensor, usize)>, AsrError> {
        let (Some(short), Some(frames), false) =
            (&self.short_window, ShortWindow::frames(samples), long_form)
        else {
            return Ok(None);
        };
        let started = Instant::now();
        let n_mels = self.model.config.num_mel_bins;
        let audio = short.encode(&self.model.encoder, features, n_mels, frames, &self.device)?;
        heard.timings.encoder += started.elapsed();
        Ok(audio.map(|audio| (audio, frames)))
    }

    /// The language of the first window, detected once, for every later window.
    fn window_language(
        &self,
        language: &mut Option<u32>,
        options: &TranscribeOptions,
        fresh: &DecoderCache,
    ) -> Result<u32, AsrError> {
        match *language {
            Some(token) => Ok(token),
            None => {
                let token = self.language_token(options.language.as_deref(), fresh)?;
                *language = Some(token);
                Ok(token)
            }
        }
    }

    /// Decodes at rising temperatures while the result looks like a failure: a
    /// repetition loop (compression ratio) or, in long-form audio, an unlikely text
    /// (average log-probability), unless the model says nobody spoke. From a short
    /// window, a repetition loop gives `None` instead: the whole window is worth encoding
    /// before any sampling. A single-window utterance keeps an unlikely greedy text: an
    /// unfamiliar name is unlikely by nature, and re-scoring against the catalog is what
    /// recovers it; on the dev set the retries changed no WER or top-1 hit and were most
    /// of the slowest twentieth of latencies (up to five more decodes).
    #[allow(clippy::too_many_arguments)]
    fn decode_with_fallback(
        &self,
        fresh: &DecoderCache,
        prompt: &[u32],
        language: u32,
        timestamps: bool,
        max_tokens: usize,
        options: &TranscribeOptions,
        window: WindowKind,
    ) -> Result<Option<DecodeResult>, AsrError> {
        // (result, whether its compression ratio passed)
        let mut tried: Vec<(DecodeResult, bool)> = Vec::new();
        for (i, &temperature) in options.temperatures.iter().enumerate() {
            options.check_cancelled()?;
            let request = DecodeRequest {
                prompt,
                language: self.is_multilingual().then_some(language),
                timestamps,
                temperature,
                beam_size: options.beam_size.max(options.alternatives),
                seed: 0x5EED + i as u64,
                max_tokens,
            };
            let result = decode::decode(&self.model, &self.special, fresh, &request)?;
            let text = self.text(&result.tokens)?;
            let too_repetitive = compression_ratio(&text) > options.compression_ratio_threshold;
            let too_unlikely = window.long_form && result.avg_logprob < options.logprob_threshold;
            let nobody_spoke = result.no_speech_prob > options.no_speech_threshold;
            if nobody_spoke || !(too_repetitive || too_unlikely) {
                return Ok(Some(result));
            }
            if window.short && too_repetitive {
                return Ok(None);
            }
            tried.push((result, !too_repetitive));
        }
        // Every pass failed: keep the likeliest one that is not a repetition loop (as
        // faster-whisper does) rather than the last, hottest sample.
        let any_passed = tried.iter().any(|(_, passed)| *passed);
        tried
            .into_iter()
            .filter(|(_, passed)| *passed || !any_passed)
            .map(|(result, _)| result)
            .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
            .map(Some)
            .ok_or(AsrError::NoTemperatures)
    }

    /// The language token to decode with: the requested one (checked), English for
    /// English-only models, or the most likely one for multilingual models.
    fn language_token(
        &self,
        requested: Option<&str>,
        fresh: &DecoderCache,
    ) -> Result<u32, AsrError> {
        let english = self
            .special
            .language("en")
            .unwrap_or(self.special.start_of_transcript);
        if !self.is_multilingual() {
            return match requested {
                None | Some("") | Some("en") => Ok(english),
                Some(other) => Err(AsrError::Language(
                    other.to_string(),
                    format!("{} is an English-only model; load a multilingual one (for example whisper-base)", self.name),
                )),
            };
        }
        if let Some(code) = requested.filter(|c| !c.is_empty()) {
            return self.special.language(code).ok_or_else(|| {
                AsrError::Language(
                    code.to_string(),
                    "use an ISO 639-1 code Whisper knows, such as en, de or fr".into(),
                )
            });
        }
        let mut cache = fresh.clone();
        let input = Tensor::new(&[[self.special.start_of_transcript]], &self.device)?;
        let hidden = self.model.decoder.forward(&input, &mut cache)?;
        let logits = self
            .model
            .decoder
            .logits(&hidden.squeeze(1)?)?
            .swap_remove(0);
        Ok(self
            .special
            .languages
            .iter()
            .map(|&(_, id)| id)
            .max_by(|&a, &b| logits[a as usize].total_cmp(&logits[b as usize]))
            .unwrap_or(english))
    }

    /// Splits a window's tokens into segments (times offset by `offset` seconds).
    fn segments(
        &self,
        tokens: &[u32],
        timestamps: bool,
        offset: f32,
        window_seconds: f32,
    ) -> Result<WindowSegments, AsrError> {
        let whole = |text: String| Segment {
            start_seconds: offset,
            end_seconds: offset + window_seconds,
            text: text.trim().to_string(),
        };
        if !timestamps {
            let text = self.text(tokens)?;
            let complete = if text.trim().is_empty() {
                Vec::new()
            } else {
                vec![whole(text)]
            };
            return Ok(WindowSegments {
                complete,
                unfinished: None,
                resume_seconds: None,
            });
        }
        let begin = self.special.timestamp_begin;
        let time = |t: u32| (t - begin) as f32 * TIMESTAMP_SECONDS;
        let mut complete = Vec::new();
        let mut start: Option<u32> = None;
        let mut last_end = None;
        let mut text_tokens = Vec::new();
        for &token in tokens {
            if token < begin {
                text_tokens.push(token);
                continue;
            }
            match start {
                Some(opening) if !text_tokens.is_empty() => {
                    complete.push(Segment {
                        start_seconds: offset + time(opening),
                        end_seconds: offset + time(token),
                        text: self.text(&text_tokens)?.trim().to_string(),
                    });
                    text_tokens.clear();
                    start = None;
                    last_end = Some(time(token));
                }
                _ => start = Some(token),
            }
        }
        let rest = self.text(&text_tokens)?;
        let unfinished = (!rest.trim().is_empty()).then(|| Segment {
            start_seconds: offset + start.map_or(0.0, time),
            end_seconds: offset + window_seconds,
            text: rest.trim().to_string(),
        });
        // As openai-whisper seeks: a window whose tokens end with text and one timestamp
        // was heard to its end; otherwise the model stopped early (or cut a segment off),
        // and the next window starts where the last complete segment ended.
        let single_timestamp_ending = tokens.len() >= 2
            && tokens[tokens.len() - 1] >= begin
            && tokens[tokens.len() - 2] < begin;
        let resume_seconds = if single_timestamp_ending {
            None
        } else {
            last_end
        };
        Ok(WindowSegments {
            complete,
            unfinished,
            resume_seconds,
        })
    }
}
