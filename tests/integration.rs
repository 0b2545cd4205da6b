//! One test binary for every area, so that the crate links once (as meilisearch does).

mod asr;
mod audio;
mod common;
mod deploy;
mod fleet;
mod interop;
mod monitor;
mod recognition;
mod search;
mod server;
mod voice;
mod web;
