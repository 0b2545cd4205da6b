//! The tokenizer and Whisper's special tokens, looked up by name in `tokenizer.json` so
//! that English-only and multilingual vocabularies (which number them differently) both
//! work.

use tokenizers::Tokenizer;

use super::AsrError;

/// Seconds one timestamp token step stands for.
pub const TIMESTAMP_SECONDS: f32 = 0.02;

/// Ids of the special tokens decoding needs.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub end_of_text: u32,
    pub start_of_transcript: u32,
    pub start_of_prev: u32,
    pub start_of_lm: Option<u32>,
    pub translate: Option<u32>,
    pub transcribe: Option<u32>,
    pub no_speech: u32,
    pub no_timestamps: u32,
    /// The first timestamp token (`<|0.00|>`): the one after `<|notimestamps|>`.
    pub timestamp_begin: u32,
    /// Language tokens by code ("en" -> `<|en|>`), for multilingual models.
    pub languages: Vec<(String, u32)>,
}

/// ISO 639-1 codes of Whisper's languages, in token order.
const LANGUAGES: &[&str] = &[
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it",
    "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur",
    "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn",
    "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si",
    "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo",
    "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln",
    "ha", "ba", "jw", "su", "yue",
];

impl SpecialTokens {
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self, AsrError> {
        let id = |name: &str| tokenizer.token_to_id(name);
        let required = |name: &str| {
            id(name).ok_or_else(|| AsrError::Weights(format!("tokenizer.json has no {name} token")))
        };
        let no_timestamps = required("<|notimestamps|>")?;
        Ok(Self {
            end_of_text: required("<|endoftext|>")?,
            start_of_transcript: required("<|startoftranscript|>")?,
            start_of_prev: required("<|startofprev|>")?,
            start_of_lm: id("<|startoflm|>"),
            translate: id("<|translate|>"),
            transcribe: id("<|transcribe|>"),
            no_speech: id("<|nospeech|>")
                .or_else(|| id("<|nocaptions|>"))
                .ok_or_else(|| {
                    AsrError::Weights(
                        "tokenizer.json has no <|nospeech|> or <|nocaptions|> token".into(),
                    )
                })?,
            no_timestamps,
            timestamp_begin: no_timestamps + 1,
            languages: LANGUAGES
                .iter()
                .filter_map(|code| Some((code.to_string(), id(&format!("<|{code}|>"))?)))
                .collect(),
        })
    }

    pub fn language(&self, code: &str) -> Option<u32> {
        self.languages
            .iter()
            .find(|(c, _)| c == code)
            .map(|&(_, id)| id)
    }

    /// Tokens never sampled as text.
    pub fn never_sampled(&self) -> Vec<u32> {
        [
            Some(self.start_of_transcript),
            Some(self.start_of_prev),
            self.start_of_lm,
            self.translate,
            self.transcribe,
            Some(self.no_speech),
        ]
        .into_iter()
        .flatten()
        .chain(self.languages.iter().map(|&(_, id)| id))
        .collect()
    }
}
