//! One streaming session: the utterances of a stream as their audio arrives, with the
//! per-utterance and per-stream length limits and the schedule of interim results.
//! The driver in `voice/mod.rs` feeds it chunks and runs what it hands back.

use crate::audio::{AudioError, AudioFormat, UtteranceBuffer};

/// Audio between two interim results, in seconds.
pub const INTERIM_EVERY_SECONDS: f64 = 1.0;

/// Why a stream cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("utterance {index}: {source}")]
    Audio { index: u32, source: AudioError },
    #[error("utterance {index} holds no audio: send audio before end_of_utterance")]
    EmptyUtterance { index: u32 },
    #[error(
        "the stream carried {seconds:.1} s of audio; the limit is {limit:.1} s per stream: \
         open a new stream"
    )]
    StreamTooLong { seconds: f64, limit: f64 },
}

/// Limits of one stream.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub max_utterance_seconds: f64,
    pub max_stream_seconds: f64,
}

/// A whole utterance, ready for the pipeline.
#[derive(Debug)]
pub struct Utterance {
    pub index: u32,
    pub bytes: Vec<u8>,
    /// Its length as counted against the stream's limit so far: for FLAC and WebM, what
    /// the checks while it streamed found ([`Session::settle`] counts the rest).
    pub counted_seconds: f64,
}

/// The state of one stream after its config.
#[derive(Debug)]
pub struct Session {
    buffer: UtteranceBuffer,
    limits: SessionLimits,
    interim: bool,
    /// Index of the utterance being received.
    index: u32,
    /// Audio in the utterances already finished, in seconds.
    finished_seconds: f64,
    /// Audio of the current utterance when its last interim result was started.
    interim_at_seconds: f64,
}

impl Session {
    pub fn new(format: AudioFormat, limits: SessionLimits, interim: bool) -> Self {
        Self {
            buffer: UtteranceBuffer::new(format, limits.max_utterance_seconds),
            limits,
            interim,
            index: 0,
            finished_seconds: 0.0,
            interim_at_seconds: 0.0,
        }
    }

    /// Adds a chunk of the current utterance.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), SessionError> {
        let index = self.index;
        self.buffer
            .push(chunk)
            .map_err(|source| SessionError::Audio { index, source })?;
        let seconds = self.finished_seconds + self.buffer.seconds();
        if seconds > self.limits.max_stream_seconds {
            return Err(SessionError::StreamTooLong {
                seconds,
                limit: self.limits.max_stream_seconds,
            });
        }
        Ok(())
    }

    /// The audio so far of the current utterance when an interim result is due (interim
    /// results asked for, and a second of new audio since the last one); marks it done.
    pub fn interim_due(&mut self) -> Option<(u32, Vec<u8>)> {
        let seconds = self.buffer.seconds();
        if !self.interim || seconds - self.interim_at_seconds < INTERIM_EVERY_SECONDS {
            return None;
        }
        self.interim_at_seconds = seconds;
        Some((self.index, self.buffer.bytes().to_vec()))
    }

    /// Closes the current utterance; the next chunk starts a new one.
    pub fn finish_utterance(&mut self) -> Result<Utterance, SessionError> {
        let index = self.index;
        if self.buffer.is_empty() {
            return Err(SessionError::EmptyUtterance { index });
        }
        let (bytes, seconds) = self
            .buffer
            .finish()
            .map_err(|source| SessionError::Audio { index, source })?;
        self.finished_seconds += seconds;
        self.interim_at_seconds = 0.0;
        self.index += 1;
        Ok(Utterance {
            index,
            bytes,
            counted_seconds: seconds,
        })
    }

    /// Counts the rest of a finished utterance's length once its decode has measured it
    /// (`counted` is what [`Utterance::counted_seconds`] said), for the stream's limit.
    pub fn settle(&mut self, counted: f64, measured: f64) {
        self.finished_seconds += (measured - counted).max(0.0);
    }

    /// Whether audio has arrived since the last utterance was finished.
    pub fn has_audio(&self) -> bool {
        !self.buffer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::Encoding;

    fn session(interim: bool) -> Session {
        Session::new(
            AudioFormat {
                encoding: Encoding::Linear16,
                sample_rate: Some(16_000),
                channels: Some(1),
            },
            SessionLimits {
                max_utterance_seconds: 2.0,
                max_stream_seconds: 3.0,
            },
            interim,
        )
    }

    const HALF_SECOND: usize = 16_000;

    #[test]
    fn utterances_are_numbered_and_empty_ones_refused() {
        let mut session = session(false);
        assert!(matches!(
            session.finish_utterance(),
            Err(SessionError::EmptyUtterance { index: 0 })
        ));
        session.push(&[0; HALF_SECOND]).unwrap();
        assert!(session.interim_due().is_none());
        let first = session.finish_utterance().unwrap();
        assert_eq!((first.index, first.bytes.len()), (0, HALF_SECOND));
        assert!(!session.has_audio());
        session.push(&[0; 2]).unwrap();
        assert_eq!(session.finish_utterance().unwrap().index, 1);
    }

    #[test]
    fn interim_results_come_once_per_second_of_audio() {
        let mut session = session(true);
        session.push(&[0; HALF_SECOND]).unwrap();
        assert!(session.interim_due().is_none());
        session.push(&[0; HALF_SECOND]).unwrap();
        let (index, bytes) = session.interim_due().unwrap();
        assert_eq!((index, bytes.len()), (0, 2 * HALF_SECOND));
        assert!(session.interim_due().is_none());
        session.push(&[0; HALF_SECOND]).unwrap();
        assert!(session.interim_due().is_none());
    }

    #[test]
    fn limits_hold_per_utterance_and_per_stream() {
        let mut session = session(false);
        let too_long = session.push(&[0; 5 * HALF_SECOND]).unwrap_err();
        assert!(matches!(
            too_long,
            SessionError::Audio {
                index: 0,
                source: AudioError::TooLong { .. }
            }
        ));
        let mut session = self::session(false);
        session.push(&[0; 4 * HALF_SECOND]).unwrap();
        session.finish_utterance().unwrap();
        session.push(&[0; 2 * HALF_SECOND]).unwrap();
        assert!(matches!(
            session.push(&[0; 2 * HALF_SECOND]),
            Err(SessionError::StreamTooLong { .. })
        ));
    }

    #[test]
    fn a_length_measured_by_the_decode_counts_against_the_stream() {
        let mut session = session(false);
        session.push(&[0; 2 * HALF_SECOND]).unwrap();
        let utterance = session.finish_utterance().unwrap();
        assert_eq!(utterance.counted_seconds, 1.0);
        session.settle(utterance.counted_seconds, 2.5);
        assert!(matches!(
            session.push(&[0; 2 * HALF_SECOND]),
            Err(SessionError::StreamTooLong { .. })
        ));
    }
}
