//! The fleet on its real parts, as separate processes on loopback: `voice-search serve`
//! replicas in each role, a snapshot store (a folder, and an S3 API from moto), and Envoy
//! in front ([`harness`]). [`replication`] checks the catalog's way from the writer to
//! the followers, [`balancer`] the calls' way through Envoy, [`store`] the store's
//! deletion rule in process.

mod balancer;
pub mod harness;
mod replication;
mod store;
