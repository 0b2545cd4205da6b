//! Ogg Opus (RFC 7845), as Android and many SDKs record speech. The pages are scanned as
//! they arrive ([`OggScan`]) for the length they declare (their granule positions), so
//! the length limit holds while the bytes stream in, however well they compress; the
//! packets are decoded once the utterance is whole. The stream ends where its last page
//! says: the encoder's pre-skip is dropped at the start and anything past the final
//! granule at the end, so a stream never decodes to more audio than it declared.

use std::io::Cursor;

use super::opus::{parse_head, OpusHead, OpusSamples, OPUS_RATE};
use crate::audio::format::{too_many_samples, MAX_DECODED_SAMPLES};
use crate::audio::{AudioError, AudioFormat, Decoded};

const PAGE_HEADER_BYTES: usize = 27;

/// What the pages received so far declare.
#[derive(Debug, Clone, Default)]
pub struct OggScan {
    /// Bytes of whole pages read so far.
    scanned: usize,
    head: Option<OpusHead>,
    serial: Option<u32>,
    /// The latest granule position a page gave.
    granule: Option<u64>,
}

impl OggScan {
    /// Reads the pages of `bytes` (the utterance so far) that are whole and not yet read.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), AudioError> {
        while let Some(page) = page_at(bytes, self.scanned)? {
            if *self.serial.get_or_insert(page.serial) != page.serial {
                return Err(unsupported(
                    "a second logical stream: send one Opus stream per utterance",
                ));
            }
            if self.head.is_none() {
                self.head = Some(parse_head(page.body)?);
            }
            if page.granule != u64::MAX {
                self.granule = Some(page.granule);
            }
            self.scanned = page.end;
        }
        Ok(())
    }

    /// Audio the pages read so far declare, in seconds.
    pub fn seconds(&self) -> f64 {
        self.frames() as f64 / OPUS_RATE as f64
    }

    /// Frames the pages read so far declare, after the pre-skip.
    fn frames(&self) -> u64 {
        match (self.head, self.granule) {
            (Some(head), Some(granule)) => granule.saturating_sub(head.pre_skip),
            _ => 0,
        }
    }
}

/// One Ogg page's header fields and body.
struct Page<'a> {
    serial: u32,
    granule: u64,
    body: &'a [u8],
    /// Where the next page starts.
    end: usize,
}

/// The page at `at`, `None` if it has not wholly arrived.
fn page_at(bytes: &[u8], at: usize) -> Result<Option<Page<'_>>, AudioError> {
    let Some(header) = bytes.get(at..at + PAGE_HEADER_BYTES) else {
        if bytes.len() > at && !b"OggS".starts_with(&bytes[at..bytes.len().min(at + 4)]) {
            return Err(corrupt(format!("no Ogg page starts at byte {at}")));
        }
        return Ok(None);
    };
    if &header[..4] != b"OggS" || header[4] != 0 {
        return Err(corrupt(format!("no Ogg page starts at byte {at}")));
    }
    let granule = u64::from_le_bytes(header[6..14].try_into().expect("8 bytes"));
    let serial = u32::from_le_bytes(header[14..18].try_into().expect("4 bytes"));
    let segments = usize::from(header[26]);
    let Some(table) = bytes.get(at + PAGE_HEADER_BYTES..at + PAGE_HEADER_BYTES + segments) else {
        return Ok(None);
    };
    let body_start = at + PAGE_HEADER_BYTES + segments;
    let end = body_start + table.iter().map(|&s| usize::from(s)).sum::<usize>();
    Ok(bytes.get(body_start..end).map(|body| Page {
        serial,
        granule,
        body,
        end,
    }))
}

/// Decodes an Ogg Opus utterance. A `prefix` (the start of an utterance still arriving)
/// is decoded up to its last whole page. A rate the client declared must be the one the
/// encoder was given (as Google Speech-to-Text has it), channels the header's.
pub fn decode(bytes: &[u8], prefix: bool, declared: &AudioFormat) -> Result<Decoded, AudioError> {
    let mut scan = OggScan::default();
    scan.update(bytes)?;
    if !prefix && scan.scanned < bytes.len() {
        return Err(corrupt(format!(
            "the stream ends inside a page at byte {}: send the whole stream",
            scan.scanned
        )));
    }
    let head = scan
        .head
        .ok_or_else(|| corrupt("the stream ends before its OpusHead page".into()))?;
    head.check_declared(declared)?;
    if !prefix && scan.granule.is_none() {
        return Err(corrupt(
            "no page says where the stream ends (granule position)".into(),
        ));
    }
    let channels = usize::from(head.channels);
    let wanted = usize::try_from(scan.frames())
        .ok()
        .and_then(|frames| frames.checked_mul(channels))
        .filter(|&wanted| wanted <= MAX_DECODED_SAMPLES)
        .ok_or_else(|| too_many_samples(OPUS_RATE, head.channels))?;
    let mut reader = ogg::PacketReader::new(Cursor::new(&bytes[..scan.scanned]));
    let mut opus = OpusSamples::new(head, wanted).map_err(corrupt)?;
    let mut packets = 0usize;
    while let Some(packet) = reader
        .read_packet()
        .map_err(|error| corrupt(format!("reading the Ogg pages: {error}")))?
    {
        packets += 1;
        // The identification and comment headers come first.
        if packets > 2 && !opus.push(&packet.data).map_err(corrupt)? {
            break;
        }
    }
    Ok(opus.finish())
}

fn corrupt(what: String) -> AudioError {
    AudioError::CorruptOgg(what)
}

fn unsupported(what: &str) -> AudioError {
    AudioError::UnsupportedOgg(what.to_string())
}
