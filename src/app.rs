//! The composition root: everything a running server holds, opened once from its
//! settings. `voice-search serve`, `eval` and the tests all start from [`App::open`]
//! ([`App::start`] for a writer or follower, which meets the snapshot store first);
//! [`crate::service::serve`] only puts an `App` on the network.

use std::path::PathBuf;
use std::sync::Arc;

use crate::asr::Whisper;
use crate::config::ServeConfig;
use crate::fleet::{FleetError, FleetStatus, Follower, Publisher, Role, SnapshotStore};
use crate::monitor::capture::CaptureError;
use crate::monitor::drift::DriftError;
use crate::monitor::{Baseline, Capture, DriftMonitor, Monitor};
use crate::pipeline::Pipeline;
use crate::search::{import, CarrierPhrases, CatalogIndex, PageTokens, QueryEngine, SearchError};
use crate::voice::Voice;
use crate::workers::WorkerPool;

/// Why the running parts could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("catalog index: {0}")]
    Index(#[from] SearchError),
    #[error("drift baseline: {0}")]
    Drift(#[from] DriftError),
    #[error("{0}")]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("page token secret {path}: {reason}")]
    PageTokenSecret { path: PathBuf, reason: String },
}

/// How a writer or follower keeps its catalog in step with the fleet; run by the server
/// beside its services.
pub enum Replication {
    Publish(Publisher),
    Follow(Follower),
}

/// The running parts: the catalog index and its query engine, the pipeline (model and
/// catalog biasing), the monitor, the transcription pool, and the voice front door that
/// runs utterances and streams on them.
pub struct App {
    pub index: Arc<CatalogIndex>,
    pub engine: Arc<QueryEngine>,
    pub pipeline: Pipeline,
    pub monitor: Arc<Monitor>,
    pub pool: WorkerPool,
    pub voice: Voice,
    /// The role, and where the replica stands with the snapshot store.
    pub fleet: Arc<FleetStatus>,
    pub replication: Option<Replication>,
}

impl App {
    /// Opens the index (loading the demo catalog into an empty one when configured),
    /// the model (its absence leaves search and the catalog working), the monitor and
    /// the pool.
    pub fn open(config: &ServeConfig) -> Result<Self, AppError> {
        let index = Arc::new(match config.role {
            Role::Follower => CatalogIndex::open_follower(&config.index)?,
            Role::Standalone | Role::Writer => CatalogIndex::open(&config.index)?,
        });
        if config.role != Role::Follower
            && config.demo_catalog
            && index.stats()?.document_count == 0
        {
            let summary = import::import_jsonl(
                &index,
                import::DEMO_CATALOG.as_bytes(),
                import::DEFAULT_BATCH,
                |_| {},
            )?;
            tracing::info!(
                documents = summary.added,
                "empty index: loaded the built-in demo catalog"
            );
        }
        tracing::info!(index = %config.index.display(), documents = index.stats()?.document_count, "catalog index open");
        let carriers = CarrierPhrases::load(config.carrier_phrases.as_deref())?;
        let mut engine = QueryEngine::new(index.clone(), carriers);
        if let Some(path) = &config.page_token_secret_file {
            let refused = |reason: String| AppError::PageTokenSecret {
                path: path.clone(),
                reason,
            };
            let secret = std::fs::read(path).map_err(|e| refused(e.to_string()))?;
            let tokens = PageTokens::from_secret(&secret).map_err(|e| refused(e.to_string()))?;
            engine = engine.with_page_tokens(tokens);
        }
        let engine = Arc::new(engine);
        let whisper = match Whisper::load_with(
            &config.model,
            config.precision,
            config.encoder_window,
        ) {
            Ok(whisper) => {
                tracing::info!(model = %config.model.display(), precision = %config.precision, encoder_window = %config.encoder_window, "speech model loaded");
                Some(Arc::new(whisper))
            }
            // Search and the catalog work without a model; the voice RPCs say what is
            // missing.
            Err(error) => {
                tracing::warn!(model = %config.model.display(), %error, "no speech model: voice RPCs answer FAILED_PRECONDITION");
                None
            }
        };
        let pipeline = Pipeline::new(whisper, Some(engine.clone()));
        let baseline = config
            .drift_baseline
            .as_deref()
            .map(Baseline::load)
            .transpose()?;
        let capture = config.capture().map(Capture::open).transpose()?;
        let monitor = Arc::new(Monitor::new(
            DriftMonitor::new(baseline, config.drift_window),
            capture,
            Some(engine.clone()),
        ));
        if pipeline.whisper().is_some() {
            monitor.metrics.set_model(
                &config.model.file_name().map_or_else(
                    || config.model.display().to_string(),
                    |name| name.to_string_lossy().into_owned(),
                ),
                folder_bytes(&config.model),
            );
        }
        let pool = WorkerPool::new(config.pool_size());
        {
            let monitor = monitor.clone();
            pool.observe_queue_wait(move |wait| monitor.metrics.queue_wait(wait));
        }
        tracing::info!(
            workers = pool.size().workers,
            queue_depth = pool.size().queue_depth,
            "transcription pool started"
        );
        let voice = Voice::new(
            pipeline.clone(),
            pool.clone(),
            monitor.clone(),
            config.voice_limits(),
        );
        Ok(Self {
            index,
            engine,
            pipeline,
            monitor,
            pool,
            voice,
            fleet: Arc::new(FleetStatus::new(config.role)),
            replication: None,
        })
    }

    /// Opens the app for its role: a follower first copies a catalog generation from the
    /// snapshot store (waiting for one as long as it takes, so that it serves only with
    /// a catalog); a writer reads what the store holds, to publish its commits there.
    pub async fn start(config: &ServeConfig) -> Result<Self, AppError> {
        let store = config
            .snapshot_store
            .as_deref()
            .map(SnapshotStore::open)
            .transpose()?;
        let status = Arc::new(FleetStatus::new(config.role));
        let (app, replication) = match (config.role, store) {
            (Role::Follower, Some(store)) => {
                let mut follower = Follower::new(store, &config.index, status.clone());
                let first = follower.first_generation(config.snapshot_poll()).await;
                tracing::info!(
                    generation = first.generation,
                    documents = first.documents,
                    "copied the newest catalog generation"
                );
                (Self::open(config)?, Some(Replication::Follow(follower)))
            }
            (Role::Writer, Some(store)) => {
                // A writer without an index (a new volume) starts from the store's newest
                // generation rather than publish an empty catalog over it.
                if !config
                    .index
                    .join(crate::search::index::VERSION_FILE)
                    .exists()
                {
                    let mut restore = Follower::new(store.clone(), &config.index, status.clone());
                    if let Some(restored) = restore.copy_newest().await? {
                        tracing::info!(
                            generation = restored.generation,
                            documents = restored.documents,
                            "no index here: restored the store's newest catalog generation"
                        );
                    }
                }
                let app = Self::open(config)?;
                let publisher = Publisher::new(
                    store,
                    app.index.clone(),
                    config.publish_settings(),
                    status.clone(),
                )
                .await?;
                (app, Some(Replication::Publish(publisher)))
            }
            _ => (Self::open(config)?, None),
        };
        Ok(Self {
            fleet: status,
            replication,
            ..app
        })
    }
}

/// Bytes of the files in a folder (the model's size for the metrics).
fn folder_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
