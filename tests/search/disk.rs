//! A full disk under the index, on a small tmpfs the test mounts (root only; skipped with
//! a printed reason otherwise): a write that does not fit is RESOURCE_EXHAUSTED saying
//! so, the stats and the metrics report it, nothing acknowledged is lost and nothing of
//! the failed write is kept, and once space returns writes succeed without a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tonic::Code;
use voice_search::proto::catalog_client::CatalogClient;
use voice_search::proto::search_client::SearchClient;
use voice_search::proto::{
    GetDocumentRequest, GetStatsRequest, SearchRequest, UpsertDocumentsRequest,
};

use crate::common::server::{sample, test_config, TestServer};

/// A tmpfs of a few MiB, unmounted when dropped.
struct SmallDisk {
    folder: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: usize) -> Option<Self> {
        let folder = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(folder.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Self { folder }),
            Ok(output) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("skipped: no mount command: {error}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.folder.path()
    }

    /// Fills what is left of the disk with one file, whose path it returns.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![7u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a test that failed may still hold files open there.
        Command::new("umount")
            .arg("-l")
            .arg(self.folder.path())
            .status()
            .ok();
    }
}

fn batch(prefix: &str, count: usize) -> Vec<voice_search::proto::Document> {
    (0..count)
        .map(|index| voice_search::proto::Document {
            id: format!("{prefix}-{index}"),
            title: format!("{prefix} title number {index} with some words"),
            body: "a body long enough to need a segment of its own on disk ".repeat(20),
            category: "movie".into(),
            ..Default::default()
        })
        .collect()
}

async fn hits(server: &TestServer, query: &str) -> usize {
    SearchClient::new(server.channel().await)
        .search(SearchRequest {
            query: query.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hits
        .len()
}

#[tokio::test]
async fn a_full_disk_refuses_writes_until_space_returns() {
    let Some(disk) = SmallDisk::mount(16) else {
        return;
    };
    let server = TestServer::start_in(voice_search::config::ServeConfig {
        index: disk.path().join("index"),
        ..test_config()
    })
    .await;
    let mut catalog = CatalogClient::new(server.channel().await);
    let upsert = |documents| UpsertDocumentsRequest { documents };
    catalog
        .upsert_documents(upsert(batch("kept", 20)))
        .await
        .unwrap();

    let filler = disk.fill();
    for attempt in 0..2 {
        let status = catalog
            .upsert_documents(upsert(batch("lost", 200)))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "attempt {attempt}: {}",
            status.message()
        );
        assert!(
            status
                .message()
                .contains("the disk holding the index is full"),
            "{}",
            status.message()
        );
    }
    let stats = catalog
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(stats.index_write_error.contains("full"), "{stats:?}");
    assert_eq!(
        stats.document_count, 20,
        "nothing of the failed writes is kept"
    );
    assert_eq!(
        sample(&server.scrape().await, "voicesearch_index_writes_failing"),
        1.0
    );
    assert_eq!(hits(&server, "kept title").await, 20);

    std::fs::remove_file(filler).unwrap();
    catalog
        .upsert_documents(upsert(batch("later", 200)))
        .await
        .unwrap();
    let stats = catalog
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.document_count, 220);
    assert!(stats.index_write_error.is_empty(), "{stats:?}");
    assert_eq!(
        sample(&server.scrape().await, "voicesearch_index_writes_failing"),
        0.0
    );
    for id in ["lost-0", "lost-199"] {
        let status = catalog
            .get_document(GetDocumentRequest { id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::NotFound,
            "{id} of a failed write was kept"
        );
    }
    server.shutdown().await.unwrap();
}
