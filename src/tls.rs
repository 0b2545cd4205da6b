//! The process's TLS crypto provider. rustls is built here with two (ring, which tonic
//! uses, and aws-lc-rs, which the S3 client's HTTP stack brings), and with two it will
//! not choose one itself: every TLS entry point names ring first.

/// Makes ring the process-wide provider, once.
pub fn use_ring_for_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
