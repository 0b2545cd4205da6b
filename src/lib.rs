//! voice-search: a spoken query from a phone in, catalog search results out.
//!
//! Data flows one way: [`audio`] (bytes to 16 kHz mono) feeds [`asr`] (Whisper), whose
//! transcript feeds [`search`] (the catalog); [`pipeline`] composes the three for the
//! server and for [`eval`], and lets the catalog bias recognition. Around the pipeline:
//! [`workers`] (the bounded transcription pool), [`voice`] (the voice front door:
//! whole utterances and streams, driven by plain events, with their limits), [`monitor`]
//! (metrics, drift, capture), and [`app`], which opens them all from [`config`].
//! [`fleet`] keeps the catalog of many replicas in step through a snapshot store.
//! [`service`] exposes it all over gRPC and knows nothing the library does not (its
//! `auth` holds the API keys); [`client`] is the streaming client the command line and
//! the eval use.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod app;
pub mod asr;
pub mod audio;
pub mod client;
pub mod config;
pub mod eval;
pub mod fleet;
pub mod hex;
pub mod monitor;
pub mod pipeline;
pub mod proto;
pub mod quote;
pub mod search;
pub mod service;
pub mod tls;
pub mod voice;
pub mod workers;
