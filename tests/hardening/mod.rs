//! What an adversarial client found, one test per defect, each failing before its fix:
//! forged page tokens, unbounded documents and echoed input (`catalog`), lying audio
//! headers and chunking (`audio`), silent and unresponsive connections (`connections`),
//! clients that stop reading (`streams`), who may call what (`keys`) and TLS (`tls`);
//! seeded property tests of the parsers (`fuzz`).

mod audio;
mod catalog;
mod connections;
mod fuzz;
mod keys;
mod streams;
mod tls;
