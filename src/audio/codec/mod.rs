//! One reader per container and codec, each over the vocabulary of [`super::format`]:
//! raw PCM, WAV, FLAC, and Opus (the packet decoder Ogg and WebM share) in Ogg and in
//! WebM; [`trial`] checks the length of what compresses past telling it.

pub mod flac;
pub mod ogg_opus;
mod opus;
pub mod raw;
pub mod trial;
pub mod wav;
pub mod webm_opus;
