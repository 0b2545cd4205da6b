//! A follower's side: the newest generation copied from the store into the follower's
//! own folder and swapped in whole.
//!
//! Files are written under a temporary name and renamed, `meta.json` last, so the folder
//! always holds a whole generation; files the served generation no longer needs are
//! deleted after the swap (searches still running on the old one keep them open).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::store::{Manifest, SnapshotStore};
use super::{FleetError, FleetStatus};
use crate::search::index::{version_file, VERSION_FILE};
use crate::search::schema::SCHEMA_VERSION;
use crate::search::CatalogIndex;

/// tantivy's file naming the commit.
const META_FILE: &str = "meta.json";

/// Copies generations from the store into one folder.
pub struct Follower {
    store: SnapshotStore,
    folder: PathBuf,
    status: Arc<FleetStatus>,
    /// The generation the folder holds.
    current: Option<Manifest>,
}

impl Follower {
    pub fn new(store: SnapshotStore, folder: &Path, status: Arc<FleetStatus>) -> Self {
        Self {
            store,
            folder: folder.to_owned(),
            status,
            current: None,
        }
    }

    /// Waits for a first generation and copies it into the folder, trying again every
    /// `poll` while the store is unreachable or empty (the process has installed no
    /// signal handler yet, so SIGTERM still ends it meanwhile).
    pub async fn first_generation(&mut self, poll: Duration) -> Manifest {
        loop {
            match self.copy_newest().await {
                Ok(Some(manifest)) => {
                    self.status.store_answered();
                    self.status
                        .generation(manifest.generation, manifest.published_at_unix_ms);
                    return manifest;
                }
                Ok(None) => {
                    tracing::info!(store = %self.store.url(), "no catalog generation published yet; waiting for the writer")
                }
                Err(error) => {
                    self.status.store_failed(&error);
                    tracing::warn!(%error, store = %self.store.url(), "no catalog generation yet; retrying");
                }
            }
            tokio::time::sleep(poll.max(Duration::from_millis(100))).await;
        }
    }

    /// Copies the store's newest generation when it is newer than the folder's; returns
    /// its manifest then.
    pub async fn copy_newest(&mut self) -> Result<Option<Manifest>, FleetError> {
        let Some(pointer) = self.store.latest().await? else {
            return Ok(None);
        };
        if self
            .current
            .as_ref()
            .is_some_and(|current| current.generation >= pointer.generation)
        {
            return Ok(None);
        }
        let manifest = self.store.manifest(pointer.generation).await?;
        if manifest.schema_version != SCHEMA_VERSION {
            return Err(FleetError::SchemaVersion {
                generation: manifest.generation,
                found: manifest.schema_version,
                expected: SCHEMA_VERSION,
            });
        }
        self.install(&manifest).await?;
        self.current = Some(manifest.clone());
        Ok(Some(manifest))
    }

    /// Writes the manifest's missing files, then the version file and `meta.json`.
    async fn install(&self, manifest: &Manifest) -> Result<(), FleetError> {
        tokio::fs::create_dir_all(&self.folder)
            .await
            .map_err(|source| self.io(&self.folder, source))?;
        for name in &manifest.files {
            if !is_plain_name(name) {
                return Err(FleetError::Corrupt {
                    what: format!("generation {}", manifest.generation),
                    reason: format!("file name {name:?}"),
                });
            }
            let path = self.folder.join(name);
            // Segment files never change under one name, so one present is the same.
            if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                continue;
            }
            let bytes = self.store.segment_file(name).await?;
            self.write_whole(name, &bytes).await?;
        }
        let version = version_file(manifest.schema_version);
        self.write_whole(VERSION_FILE, version.as_bytes()).await?;
        self.write_whole(META_FILE, manifest.meta_json.as_bytes())
            .await
    }

    /// Writes a file under a temporary name, flushes it and renames it into place.
    async fn write_whole(&self, name: &str, bytes: &[u8]) -> Result<(), FleetError> {
        let path = self.folder.join(name);
        let partial = self.folder.join(format!(".{name}.partial"));
        let write = async {
            let mut file = tokio::fs::File::create(&partial).await?;
            tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
            file.sync_all().await?;
            tokio::fs::rename(&partial, &path).await
        };
        write.await.map_err(|source| self.io(&path, source))
    }

    /// Deletes the segment files of earlier generations that the current one lacks.
    fn prune(&self) {
        let Some(current) = &self.current else {
            return;
        };
        let needed: HashSet<&str> = current.files.iter().map(String::as_str).collect();
        let Ok(entries) = std::fs::read_dir(&self.folder) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // tantivy's own files (meta, locks, `.managed.json`) and ours stay.
            if name.starts_with('.') || name == META_FILE || name == VERSION_FILE {
                continue;
            }
            if !needed.contains(name) {
                if let Err(error) = std::fs::remove_file(entry.path()) {
                    tracing::debug!(%error, file = name, "could not prune an old segment file");
                }
            }
        }
    }

    /// Polls the store every `poll` until `stop`: each newer generation is copied and
    /// swapped into `index`. While the store cannot be reached the index keeps serving
    /// the generation it has; the status, the logs and the metrics say so.
    pub async fn run(
        mut self,
        index: Arc<CatalogIndex>,
        poll: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        self.prune();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.wait_for(|&s| s) => return,
            }
            let copied = match self.copy_newest().await {
                Ok(copied) => copied,
                Err(error) => {
                    if self.status.store_failed(&error) {
                        tracing::warn!(%error, store = %self.store.url(), "snapshot store unreachable: serving the last catalog generation until it answers");
                    } else {
                        tracing::debug!(%error, "snapshot store still unreachable");
                    }
                    continue;
                }
            };
            if self.status.store_answered() {
                tracing::info!(store = %self.store.url(), "snapshot store reachable again");
            }
            if let Some(manifest) = copied {
                let swapped = {
                    let index = index.clone();
                    tokio::task::spawn_blocking(move || index.refresh()).await
                };
                match swapped {
                    Ok(Ok(refresh)) => {
                        self.status
                            .generation(manifest.generation, manifest.published_at_unix_ms);
                        tracing::info!(
                            generation = manifest.generation,
                            opstamp = refresh.opstamp,
                            documents = refresh.documents,
                            added = refresh.added,
                            removed = refresh.removed,
                            "swapped in a catalog generation"
                        );
                        self.prune();
                    }
                    Ok(Err(error)) => {
                        tracing::error!(%error, generation = manifest.generation, "could not open a copied catalog generation; serving the previous one");
                        // Copy it again on the next poll.
                        self.current = None;
                    }
                    Err(panic) => std::panic::resume_unwind(panic.into_panic()),
                }
            }
        }
    }

    fn io(&self, path: &Path, source: std::io::Error) -> FleetError {
        FleetError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// A file name with no path in it, as tantivy names segment files.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}
