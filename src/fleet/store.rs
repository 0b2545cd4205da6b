//! The snapshot store's layout, under the prefix the URL names:
//!
//! - `segments/NAME`: a file of tantivy's segments, written once and never changed (its
//!   name holds the segment's id, and a delete file's its opstamp too);
//! - `generations/NNNNNNNNNNNNNNNNNNNN.json`: a generation's [`Manifest`] (the commit's
//!   `meta.json` and the files it needs);
//! - `LATEST`: the [`Pointer`] to the newest generation, replaced last.
//!
//! Every object is written whole by one PUT (S3) or a rename (a folder), so a reader sees
//! either the old object or the new one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::{Deserialize, Serialize};

use super::FleetError;

/// Longest any one call to the store may take; past it the call counts as failed and the
/// caller tries again later (a follower keeps serving what it has).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The newest generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    pub generation: u64,
    pub published_at_unix_ms: u64,
}

/// One published commit of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub generation: u64,
    pub published_at_unix_ms: u64,
    /// The catalog schema version of the index (followers refuse another).
    pub schema_version: u32,
    /// tantivy's commit opstamp: the same number on the writer and every follower.
    pub opstamp: u64,
    pub documents: u64,
    /// tantivy's `meta.json` of the commit.
    pub meta_json: String,
    /// The segment files the commit needs, by name.
    pub files: Vec<String>,
}

/// A snapshot store: S3-compatible object storage or a local folder, through the
/// `object_store` crate.
#[derive(Clone)]
pub struct SnapshotStore {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    url: String,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl SnapshotStore {
    /// Opens `s3://BUCKET/PREFIX` (credentials, region and endpoint from the standard AWS
    /// variables; plain HTTP allowed when `AWS_ENDPOINT_URL` says `http://`) or
    /// `file:///ABSOLUTE/PATH` (created when missing).
    pub fn open(url: &str) -> Result<Self, FleetError> {
        let bad_url = || FleetError::Url(url.to_string());
        crate::tls::use_ring_for_tls();
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad_url());
            }
            let endpoint = std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .unwrap_or_default();
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(2),
                        base: 2.0,
                    },
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(10),
                })
                .with_client_options(
                    ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(3))
                        .with_timeout(CALL_TIMEOUT),
                );
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err()
            {
                builder = builder.with_region("us-east-1");
            }
            // A local or self-hosted S3 server is addressed by path, not by bucket host.
            if !endpoint.is_empty() {
                builder = builder.with_virtual_hosted_style_request(false);
            }
            return Ok(Self {
                store: Arc::new(builder.build()?),
                prefix: StorePath::from(prefix.trim_matches('/')),
                url: url.to_string(),
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            let path = std::path::Path::new(path);
            if !path.is_absolute() {
                return Err(bad_url());
            }
            std::fs::create_dir_all(path).map_err(|source| FleetError::Io {
                path: path.to_owned(),
                source,
            })?;
            return Ok(Self {
                store: Arc::new(LocalFileSystem::new_with_prefix(path)?),
                prefix: StorePath::default(),
                url: url.to_string(),
            });
        }
        Err(bad_url())
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, relative: &str) -> StorePath {
        relative
            .split('/')
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    /// The newest generation, or `None` while nothing was published.
    pub async fn latest(&self) -> Result<Option<Pointer>, FleetError> {
        match self.get(&self.key("LATEST")).await {
            Ok(bytes) => Ok(Some(parse(&bytes, "LATEST")?)),
            Err(FleetError::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub async fn manifest(&self, generation: u64) -> Result<Manifest, FleetError> {
        let key = manifest_key(generation);
        parse(&self.get(&self.key(&key)).await?, &key)
    }

    pub async fn segment_file(&self, name: &str) -> Result<Bytes, FleetError> {
        self.get(&self.key(&format!("segments/{name}"))).await
    }

    pub async fn put_segment_file(&self, name: &str, bytes: Bytes) -> Result<(), FleetError> {
        self.put(&self.key(&format!("segments/{name}")), bytes)
            .await
    }

    /// Writes a manifest, then points `LATEST` at it.
    pub async fn publish(&self, manifest: &Manifest) -> Result<(), FleetError> {
        let json = serde_json::to_vec(manifest).expect("serializable");
        self.put(&self.key(&manifest_key(manifest.generation)), json.into())
            .await?;
        let pointer = Pointer {
            generation: manifest.generation,
            published_at_unix_ms: manifest.published_at_unix_ms,
        };
        let json = serde_json::to_vec(&pointer).expect("serializable");
        self.put(&self.key("LATEST"), json.into()).await
    }

    /// The names of the segment files in the store.
    pub async fn segment_files(&self) -> Result<HashSet<String>, FleetError> {
        Ok(self.list("segments").await?.into_iter().collect())
    }

    /// The generations whose manifests are in the store, oldest first.
    pub async fn generations(&self) -> Result<Vec<u64>, FleetError> {
        let mut generations: Vec<u64> = self
            .list("generations")
            .await?
            .iter()
            .filter_map(|name| name.strip_suffix(".json")?.parse().ok())
            .collect();
        generations.sort_unstable();
        Ok(generations)
    }

    pub async fn delete_manifest(&self, generation: u64) -> Result<(), FleetError> {
        self.delete(&self.key(&manifest_key(generation))).await
    }

    pub async fn delete_segment_file(&self, name: &str) -> Result<(), FleetError> {
        self.delete(&self.key(&format!("segments/{name}"))).await
    }

    async fn list(&self, folder: &str) -> Result<Vec<String>, FleetError> {
        let prefix = self.key(folder);
        let listed: Vec<object_store::ObjectMeta> =
            timed(self.store.list(Some(&prefix)).try_collect()).await?;
        Ok(listed
            .into_iter()
            .filter_map(|meta| meta.location.filename().map(str::to_string))
            .collect())
    }

    async fn get(&self, key: &StorePath) -> Result<Bytes, FleetError> {
        timed(async { self.store.get(key).await?.bytes().await }).await
    }

    async fn put(&self, key: &StorePath, bytes: Bytes) -> Result<(), FleetError> {
        timed(self.store.put(key, bytes.into())).await.map(drop)
    }

    async fn delete(&self, key: &StorePath) -> Result<(), FleetError> {
        match timed(self.store.delete(key)).await {
            Err(FleetError::Store(object_store::Error::NotFound { .. })) => Ok(()),
            other => other,
        }
    }
}

fn manifest_key(generation: u64) -> String {
    format!("generations/{generation:020}.json")
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, FleetError> {
    serde_json::from_slice(bytes).map_err(|e| FleetError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// A store call bounded by [`CALL_TIMEOUT`], whatever the client's own retries do.
async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, object_store::Error>>,
) -> Result<T, FleetError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(FleetError::Timeout(CALL_TIMEOUT)),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_s3_and_absolute_folder_urls_open() {
        for url in [
            "",
            "s3://",
            "s3:///prefix",
            "file://relative/path",
            "http://host/x",
            "/abs",
        ] {
            let error = SnapshotStore::open(url).unwrap_err().to_string();
            assert!(error.contains("s3://BUCKET/PREFIX"), "{url}: {error}");
        }
        let folder = tempfile::tempdir().unwrap();
        let url = format!("file://{}", folder.path().join("store").display());
        assert_eq!(SnapshotStore::open(&url).unwrap().url(), url);
    }

    #[tokio::test]
    async fn a_published_manifest_is_what_latest_names() {
        let folder = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(&format!("file://{}", folder.path().display())).unwrap();
        assert_eq!(store.latest().await.unwrap(), None);
        store
            .put_segment_file("a.idx", Bytes::from_static(b"segment"))
            .await
            .unwrap();
        let manifest = Manifest {
            generation: 3,
            published_at_unix_ms: 1,
            schema_version: 1,
            opstamp: 7,
            documents: 1,
            meta_json: "{}".into(),
            files: vec!["a.idx".into()],
        };
        store.publish(&manifest).await.unwrap();
        assert_eq!(store.latest().await.unwrap().unwrap().generation, 3);
        assert_eq!(store.manifest(3).await.unwrap(), manifest);
        assert_eq!(store.generations().await.unwrap(), [3]);
        assert_eq!(&store.segment_file("a.idx").await.unwrap()[..], b"segment");
        std::fs::write(folder.path().join("LATEST"), "not json").unwrap();
        let error = store.latest().await.unwrap_err().to_string();
        assert!(error.contains("LATEST is not valid"), "{error}");
    }
}
