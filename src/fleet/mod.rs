//! The catalog across replicas. One `writer` owns the tantivy index and publishes each
//! commit to a snapshot store (S3-compatible object storage or a folder) as an immutable
//! generation; `follower`s copy the newest generation into a folder of their own and swap
//! it in whole. A `standalone` server does neither.
//!
//! [`store`] is the store's layout (segment files, generation manifests, the pointer to
//! the newest), [`publish`] the writer's side, [`follow`] the followers'. The order of
//! writes is what keeps readers safe: a generation's files, then its manifest, then the
//! pointer, so that no reader ever finds a generation whose files are missing.

pub mod follow;
pub mod publish;
pub mod store;

use std::path::PathBuf;

use serde::Deserialize;

pub use follow::Follower;
pub use publish::Publisher;
pub use store::{Manifest, Pointer, SnapshotStore};

/// What a server does with the catalog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// One process: its own index, read and written, published nowhere.
    #[default]
    Standalone,
    /// The one process that writes the catalog, publishing each commit.
    Writer,
    /// A read-only replica fed from the snapshot store.
    Follower,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Writer => "writer",
            Role::Follower => "follower",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "standalone" => Ok(Role::Standalone),
            "writer" => Ok(Role::Writer),
            "follower" => Ok(Role::Follower),
            other => Err(format!(
                "unknown role {other:?}: standalone, writer or follower"
            )),
        }
    }
}

/// Everything that can go wrong between a replica and the snapshot store.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("snapshot store {0:?}: expected s3://BUCKET/PREFIX or file:///ABSOLUTE/PATH")]
    Url(String),
    #[error("snapshot store: {0}")]
    Store(#[from] object_store::Error),
    #[error("snapshot store: no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot store: {what} is not valid: {reason}")]
    Corrupt { what: String, reason: String },
    #[error(
        "generation {generation} was written with catalog schema version {found}; this build \
         reads version {expected}: upgrade the followers and the writer together"
    )]
    SchemaVersion {
        generation: u64,
        found: u32,
        expected: u32,
    },
    #[error(
        "the snapshot store's newest generation ({generation}, commit {store_opstamp}) is \
         newer than this writer's index (commit {local_opstamp}): another writer publishes \
         to this prefix, or this index is an older copy. Stop the other writer, or move \
         this index folder away so that the writer starts from the store's generation"
    )]
    StoreAhead {
        generation: u64,
        store_opstamp: u64,
        local_opstamp: u64,
    },
    #[error("catalog index: {0}")]
    Index(#[from] crate::search::SearchError),
}

/// Where a replica stands with the snapshot store, for `GetStats`, the metrics and logs.
#[derive(Debug, Default)]
pub struct FleetStatus {
    role: Role,
    state: std::sync::Mutex<FleetState>,
}

/// A copy of [`FleetStatus`]'s state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetState {
    /// A writer's newest published generation, a follower's served one; 0 before any.
    pub generation: u64,
    pub published_at_unix_ms: u64,
    /// Why the last call to the store failed; `None` once one succeeds.
    pub store_error: Option<String>,
    /// Failed rounds with the store (publishes or polls) since start.
    pub store_failures: u64,
}

impl FleetStatus {
    pub fn new(role: Role) -> Self {
        Self {
            role,
            state: Default::default(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn state(&self) -> FleetState {
        self.lock().clone()
    }

    /// A generation published (writer) or swapped in (follower).
    pub fn generation(&self, generation: u64, published_at_unix_ms: u64) {
        let mut state = self.lock();
        state.generation = generation;
        state.published_at_unix_ms = published_at_unix_ms;
    }

    /// The store answered; true when it had failed before.
    pub fn store_answered(&self) -> bool {
        self.lock().store_error.take().is_some()
    }

    /// The store failed; true when it had answered before.
    pub fn store_failed(&self, error: &FleetError) -> bool {
        let mut state = self.lock();
        state.store_failures += 1;
        state.store_error.replace(error.to_string()).is_none()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FleetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
