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

/// Makes each metric and registers it in one step.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn add<M: prometheus::core::Collector + Clone + 'static>(
        &self,
        metric: prometheus::Result<M>,
    ) -> M {
        let metric = metric.expect("valid metric");
        self.0
            .register(Box::new(metric.clone()))
            .expect("each metric registered once");
        metric
    }

    fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help))
    }

    fn gauge(&self, name: &str, help: &str) -> prometheus::Gauge {
        self.add(prometheus::Gauge::new(name, help))
    }

    fn int_counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help))
    }

    fn counter(&self, name: &str, help: &str) -> prometheus::Counter {
        self.add(prometheus::Counter::new(name, help))
    }

    fn int_counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.add(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        ))
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        self.add(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        ))
    }
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    pub active_streams: IntGauge,
    pub queued_utterances: IntGauge,
    pub busy_workers: IntGauge,
    pub index_documents: IntGauge,
    pub index_writes_failing: IntGauge,
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
        let r = Registrar(&registry);
        Self {
            requests: r.int_counter_vec(
                "voicesearch_requests_total",
                "RPCs answered, by method and gRPC status code",
                &["rpc", "code"],
            ),
            active_streams: r.int_gauge(
                "voicesearch_active_streams",
                "StreamingVoiceSearch streams open now",
            ),
            queued_utterances: r.int_gauge(
                "voicesearch_queued_utterances",
                "Utterances waiting for a transcription worker",
            ),
            busy_workers: r.int_gauge(
                "voicesearch_busy_workers",
                "Transcription workers running an utterance",
            ),
            index_documents: r.int_gauge(
                "voicesearch_index_documents",
                "Documents in the catalog index",
            ),
            index_writes_failing: r.int_gauge(
                "voicesearch_index_writes_failing",
                "1 while the last catalog write failed (a full disk, say), else 0",
            ),
            model: r.int_gauge_vec(
                "voicesearch_model_info",
                "The speech model loaded (value 1)",
                &["model"],
            ),
            model_size_bytes: r.int_gauge(
                "voicesearch_model_size_bytes",
                "Size of the speech model's weights on disk",
            ),
            stage_seconds: r.histogram_vec(
                "voicesearch_stage_seconds",
                "Time per utterance in each stage: decode, front_end (normalize, voice activity, resample), mel, encoder, decoder, search, rescore (catalog biasing: constrained beam, candidates, forced scoring)",
                LATENCY_BUCKETS,
                &["stage"],
            ),
            end_to_end_seconds: r.histogram(
                "voicesearch_utterance_latency_seconds",
                "From the end of an utterance (its last message) to its final result sent",
                LATENCY_BUCKETS,
            ),
            audio_seconds: r.counter(
                "voicesearch_audio_seconds_total",
                "Seconds of audio in the utterances processed",
            ),
            utterances: r.int_counter_vec(
                "voicesearch_utterances_total",
                "Utterances with a final result, by whether speech was transcribed",
                &["speech"],
            ),
            real_time_factor: r.histogram(
                "voicesearch_real_time_factor",
                "Processing time over audio time per utterance (below 1 is faster than real time)",
                RTF_BUCKETS,
            ),
            drift_psi: r.gauge_vec(
                "voicesearch_drift_psi",
                "Population stability index of each feature's recent window against the baseline",
                &["feature"],
            ),
            captured: r.int_counter(
                "voicesearch_captured_utterances_total",
                "Utterances kept in the capture folder for labelling",
            ),
            queue_wait_seconds: r.histogram(
                "voicesearch_queue_wait_seconds",
                "From an utterance queued (its end) to a transcription worker taking it: the signal to scale replicas on",
                LATENCY_BUCKETS,
            ),
            catalog_generation: r.int_gauge(
                "voicesearch_catalog_generation",
                "A follower's catalog generation served, a writer's newest published (0 standalone)",
            ),
            catalog_generation_age_seconds: r.gauge(
                "voicesearch_catalog_generation_age_seconds",
                "Seconds since that generation was published",
            ),
            snapshot_store_up: r.int_gauge(
                "voicesearch_snapshot_store_up",
                "1 while the snapshot store answered the last call, 0 after a failure",
            ),
            snapshot_store_failures: r.int_counter(
                "voicesearch_snapshot_store_failures_total",
                "Failed rounds with the snapshot store (publishes or polls)",
            ),
            registry,
        }
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
