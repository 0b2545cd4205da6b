//! Prometheus metrics: one registry per server, rendered in the text format.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::pipeline::UtteranceOutcome;

/// Latency buckets, in seconds: 5 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
];
/// Real-time factor buckets: processing time over audio time.
const RTF_BUCKETS: &[f64] = &[0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0];

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    pub active_streams: IntGauge,
    pub queued_utterances: IntGauge,
    pub busy_workers: IntGauge,
    pub index_documents: IntGauge,
    model: IntGaugeVec,
    model_size_bytes: IntGauge,
    stage_seconds: HistogramVec,
    end_to_end_seconds: Histogram,
    audio_seconds: prometheus::Counter,
    utterances: IntCounterVec,
    real_time_factor: Histogram,
    drift_psi: GaugeVec,
    captured: IntCounter,
    queue_wait_seconds: Histogram,
    catalog_generation: IntGauge,
    catalog_generation_age_seconds: prometheus::Gauge,
    snapshot_store_up: IntGauge,
    snapshot_store_failures: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Self {
            requests: IntCounterVec::new(
                Opts::new("voicesearch_requests_total", "RPCs answered, by method and gRPC status code"),
                &["rpc", "code"],
            )
            .expect("valid metric"),
            active_streams: IntGauge::new(
                "voicesearch_active_streams",
                "StreamingVoiceSearch streams open now",
            )
            .expect("valid metric"),
            queued_utterances: IntGauge::new(
                "voicesearch_queued_utterances",
                "Utterances waiting for a transcription worker",
            )
            .expect("valid metric"),
            busy_workers: IntGauge::new(
                "voicesearch_busy_workers",
                "Transcription workers running an utterance",
            )
            .expect("valid metric"),
            index_documents: IntGauge::new(
                "voicesearch_index_documents",
                "Documents in the catalog index",
            )
            .expect("valid metric"),
            model: IntGaugeVec::new(
                Opts::new("voicesearch_model_info", "The speech model loaded (value 1)"),
                &["model"],
            )
            .expect("valid metric"),
            model_size_bytes: IntGauge::new(
                "voicesearch_model_size_bytes",
                "Size of the speech model's weights on disk",
            )
            .expect("valid metric"),
            stage_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "voicesearch_stage_seconds",
                    "Time per utterance in each stage: decode, front_end (normalize, voice \
                     activity, resample), mel, encoder, decoder, search, rescore (catalog \
                     biasing: constrained beam, candidates, forced scoring)",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["stage"],
            )
            .expect("valid metric"),
            end_to_end_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "voicesearch_utterance_latency_seconds",
                    "From the end of an utterance (its last message) to its final result sent",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            audio_seconds: prometheus::Counter::new(
                "voicesearch_audio_seconds_total",
                "Seconds of audio in the utterances processed",
            )
            .expect("valid metric"),
            utterances: IntCounterVec::new(
                Opts::new(
                    "voicesearch_utterances_total",
                    "Utterances with a final result, by whether speech was transcribed",
                ),
                &["speech"],
            )
            .expect("valid metric"),
            real_time_factor: Histogram::with_opts(
                HistogramOpts::new(
                    "voicesearch_real_time_factor",
                    "Processing time over audio time per utterance (below 1 is faster than real time)",
                )
                .buckets(RTF_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            drift_psi: GaugeVec::new(
                Opts::new(
                    "voicesearch_drift_psi",
                    "Population stability index of each feature's recent window against the baseline",
                ),
                &["feature"],
            )
            .expect("valid metric"),
            captured: IntCounter::new(
                "voicesearch_captured_utterances_total",
                "Utterances kept in the capture folder for labelling",
            )
            .expect("valid metric"),
            queue_wait_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "voicesearch_queue_wait_seconds",
                    "From an utterance queued (its end) to a transcription worker taking it: \
                     the signal to scale replicas on",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            catalog_generation: IntGauge::new(
                "voicesearch_catalog_generation",
                "A follower's catalog generation served, a writer's newest published (0 standalone)",
            )
            .expect("valid metric"),
            catalog_generation_age_seconds: prometheus::Gauge::new(
                "voicesearch_catalog_generation_age_seconds",
                "Seconds since that generation was published",
            )
            .expect("valid metric"),
            snapshot_store_up: IntGauge::new(
                "voicesearch_snapshot_store_up",
                "1 while the snapshot store answered the last call, 0 after a failure",
            )
            .expect("valid metric"),
            snapshot_store_failures: IntCounter::new(
                "voicesearch_snapshot_store_failures_total",
                "Failed rounds with the snapshot store (publishes or polls)",
            )
            .expect("valid metric"),
            registry,
        };
        for collector in metrics.collectors() {
            metrics
                .registry
                .register(collector)
                .expect("each metric registered once");
        }
        metrics
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.active_streams.clone()),
            Box::new(self.queued_utterances.clone()),
            Box::new(self.busy_workers.clone()),
            Box::new(self.index_documents.clone()),
            Box::new(self.model.clone()),
            Box::new(self.model_size_bytes.clone()),
            Box::new(self.stage_seconds.clone()),
            Box::new(self.end_to_end_seconds.clone()),
            Box::new(self.audio_seconds.clone()),
            Box::new(self.utterances.clone()),
            Box::new(self.real_time_factor.clone()),
            Box::new(self.drift_psi.clone()),
            Box::new(self.captured.clone()),
            Box::new(self.queue_wait_seconds.clone()),
            Box::new(self.catalog_generation.clone()),
            Box::new(self.catalog_generation_age_seconds.clone()),
            Box::new(self.snapshot_store_up.clone()),
            Box::new(self.snapshot_store_failures.clone()),
        ]
    }

    /// How long an utterance waited for a transcription worker.
    pub fn queue_wait(&self, wait: std::time::Duration) {
        self.queue_wait_seconds.observe(wait.as_secs_f64());
    }

    /// Mirrors a replica's standing with the snapshot store (read at each scrape).
    pub fn fleet(&self, state: &crate::fleet::FleetState) {
        self.catalog_generation.set(state.generation as i64);
        if state.published_at_unix_ms > 0 {
            let age_ms =
                crate::fleet::store::now_unix_ms().saturating_sub(state.published_at_unix_ms);
            self.catalog_generation_age_seconds
                .set(age_ms as f64 / 1000.0);
        }
        self.snapshot_store_up
            .set(i64::from(state.store_error.is_none()));
        let counted = self.snapshot_store_failures.get();
        self.snapshot_store_failures
            .inc_by(state.store_failures.saturating_sub(counted));
    }

    /// One RPC answered with `code` ("OK", "INVALID_ARGUMENT"...).
    pub fn request(&self, rpc: &str, code: &str) {
        self.requests.with_label_values(&[rpc, code]).inc();
    }

    pub fn set_model(&self, name: &str, size_bytes: u64) {
        self.model.with_label_values(&[name]).set(1);
        self.model_size_bytes.set(size_bytes as i64);
    }

    /// One utterance's final result sent, `latency` after the utterance ended.
    pub fn utterance(&self, outcome: &UtteranceOutcome, latency: std::time::Duration) {
        let t = &outcome.timings;
        let asr = &outcome.transcript.timings;
        for (stage, duration) in [
            ("decode", t.decode),
            ("front_end", t.front_end),
            ("mel", asr.mel),
            ("encoder", asr.encoder),
            ("decoder", asr.decoder),
            ("search", t.search),
            ("rescore", t.rescore),
        ] {
            self.stage_seconds
                .with_label_values(&[stage])
                .observe(duration.as_secs_f64());
        }
        self.end_to_end_seconds.observe(latency.as_secs_f64());
        let audio = outcome.audio.duration_seconds;
        self.audio_seconds.inc_by(audio);
        let speech = !outcome.transcript.text.trim().is_empty();
        self.utterances
            .with_label_values(&[if speech { "true" } else { "false" }])
            .inc();
        if audio > 0.0 {
            let processing = t.decode + t.front_end + t.transcription + t.search + t.rescore;
            self.real_time_factor
                .observe(processing.as_secs_f64() / audio);
        }
    }

    pub fn drift(&self, feature: &str, psi: f64) {
        self.drift_psi.with_label_values(&[feature]).set(psi);
    }

    pub fn captured(&self) {
        self.captured.inc();
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
