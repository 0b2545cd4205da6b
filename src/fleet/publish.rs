//! The writer's side: each commit of the index published as a generation.
//!
//! Order of writes: the segment files the store lacks, then the manifest, then `LATEST`.
//! Commits that come faster than they can be published are published together (the
//! newest one), since each generation is the whole catalog.
//!
//! Deletion rule: the newest [`PublishSettings::keep`] generations stay; an older one is
//! deleted only once it has been superseded for [`PublishSettings::grace`], and a segment
//! file only once no remaining generation needs it. A follower copies the generation
//! `LATEST` named when it looked, so it has at least the grace period to finish copying;
//! one slower than that finds a file gone, gives the copy up and starts again from
//! `LATEST` on its next poll.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::store::{now_unix_ms, Manifest, SnapshotStore};
use super::{FleetError, FleetStatus};
use crate::search::index::CommitFiles;
use crate::search::schema::SCHEMA_VERSION;
use crate::search::CatalogIndex;

/// How many generations stay, and for how long a superseded one does.
#[derive(Debug, Clone, Copy)]
pub struct PublishSettings {
    pub keep: usize,
    pub grace: Duration,
}

impl Default for PublishSettings {
    fn default() -> Self {
        Self {
            keep: 5,
            grace: Duration::from_secs(120),
        }
    }
}

/// Attempts at one commit when a merge removes its files while they are uploaded.
const ATTEMPTS: usize = 5;

/// Publishes a writer's commits.
pub struct Publisher {
    store: SnapshotStore,
    index: Arc<CatalogIndex>,
    settings: PublishSettings,
    status: Arc<FleetStatus>,
    /// Segment files known to be in the store.
    uploaded: HashSet<String>,
    /// The newest generation published, and the commit it holds.
    published: Option<(u64, String)>,
}

impl Publisher {
    /// Reads what the store holds already.
    pub async fn new(
        store: SnapshotStore,
        index: Arc<CatalogIndex>,
        settings: PublishSettings,
        status: Arc<FleetStatus>,
    ) -> Result<Self, FleetError> {
        let uploaded = store.segment_files().await?;
        let published = match store.latest().await? {
            Some(pointer) => {
                let manifest = store.manifest(pointer.generation).await?;
                // Publishing an older catalog over a newer one would lose what the
                // newer one acknowledged.
                if manifest.opstamp > index.opstamp() {
                    return Err(FleetError::StoreAhead {
                        generation: manifest.generation,
                        store_opstamp: manifest.opstamp,
                        local_opstamp: index.opstamp(),
                    });
                }
                status.generation(manifest.generation, manifest.published_at_unix_ms);
                Some((manifest.generation, manifest.meta_json))
            }
            None => None,
        };
        Ok(Self {
            store,
            index,
            settings,
            status,
            uploaded,
            published,
        })
    }

    /// The newest generation published.
    pub fn generation(&self) -> Option<u64> {
        self.published.as_ref().map(|(generation, _)| *generation)
    }

    /// Publishes the index's last commit unless the store's newest generation holds it
    /// already; returns the generation published.
    pub async fn publish(&mut self) -> Result<Option<u64>, FleetError> {
        let mut attempt = 0;
        let commit = loop {
            attempt += 1;
            let commit = self.commit_files().await?;
            if self.published.as_ref().map(|(_, meta)| meta) == Some(&commit.meta_json) {
                return Ok(None);
            }
            match self.upload(&commit).await {
                Ok(()) => break commit,
                // A merge replaced the commit's segments meanwhile: take the new meta.
                Err(FleetError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && attempt < ATTEMPTS =>
                {
                    continue
                }
                Err(error) => return Err(error),
            }
        };
        let generation = self.generation().map_or(1, |g| g + 1);
        let manifest = Manifest {
            generation,
            published_at_unix_ms: now_unix_ms(),
            schema_version: SCHEMA_VERSION,
            opstamp: commit.opstamp,
            documents: commit.documents,
            meta_json: commit.meta_json,
            files: commit.files,
        };
        self.store.publish(&manifest).await?;
        self.status
            .generation(generation, manifest.published_at_unix_ms);
        tracing::info!(
            generation,
            opstamp = manifest.opstamp,
            documents = manifest.documents,
            store = %self.store.url(),
            "published a catalog generation"
        );
        self.published = Some((generation, manifest.meta_json));
        self.collect_garbage().await?;
        Ok(Some(generation))
    }

    async fn commit_files(&self) -> Result<CommitFiles, FleetError> {
        let index = self.index.clone();
        Ok(tokio::task::spawn_blocking(move || index.commit_files())
            .await
            .expect("listing a commit's files does not panic")?)
    }

    /// Uploads the commit's files the store lacks.
    async fn upload(&mut self, commit: &CommitFiles) -> Result<(), FleetError> {
        for name in &commit.files {
            if self.uploaded.contains(name) {
                continue;
            }
            let path = self.index.path().join(name);
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|source| FleetError::Io { path, source })?;
            self.store.put_segment_file(name, bytes.into()).await?;
            self.uploaded.insert(name.clone());
        }
        Ok(())
    }

    /// Deletes what the rule at the top of this module allows.
    async fn collect_garbage(&mut self) -> Result<(), FleetError> {
        let generations = self.store.generations().await?;
        let now = now_unix_ms();
        let grace = self.settings.grace.as_millis() as u64;
        let old = generations.len().saturating_sub(self.settings.keep.max(1));
        let mut kept = Vec::new();
        let mut deleted_any = false;
        for (i, &generation) in generations.iter().enumerate() {
            // When the next generation replaced it.
            let superseded_at = match generations.get(i + 1) {
                Some(&next) if i < old => {
                    Some(self.store.manifest(next).await?.published_at_unix_ms)
                }
                _ => None,
            };
            match superseded_at {
                Some(at) if now.saturating_sub(at) >= grace => {
                    self.store.delete_manifest(generation).await?;
                    deleted_any = true;
                }
                _ => kept.push(generation),
            }
        }
        if !deleted_any {
            return Ok(());
        }
        let mut needed = HashSet::new();
        for generation in kept {
            needed.extend(self.store.manifest(generation).await?.files);
        }
        for name in self.store.segment_files().await? {
            if !needed.contains(&name) {
                self.store.delete_segment_file(&name).await?;
                self.uploaded.remove(&name);
            }
        }
        Ok(())
    }

    /// Publishes the current commit, then each later one, until `stop` resolves. A
    /// failure is logged and tried again (backing off up to `retry_max`); the writer
    /// keeps taking writes meanwhile.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, retry_max: Duration) {
        let mut commits = self.index.commits();
        let mut backoff = Duration::from_millis(100);
        loop {
            commits.borrow_and_update();
            match self.publish().await {
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    if self.status.store_answered() {
                        tracing::info!(store = %self.store.url(), "snapshot store reachable again");
                    }
                }
                Err(error) => {
                    self.status.store_failed(&error);
                    tracing::warn!(%error, store = %self.store.url(), retry_in = ?backoff, "could not publish the catalog; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|&s| s) => return,
                    }
                    backoff = (backoff * 2).min(retry_max);
                    continue;
                }
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|&s| s) => return,
            }
        }
    }
}
