//! The writer's publishing and deletion rule, and a follower's copy, on a folder store in
//! process: old generations go only after their grace period, segment files only when no
//! remaining generation needs them, and every remaining generation still opens.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use voice_search::fleet::publish::PublishSettings;
use voice_search::fleet::{FleetStatus, Follower, Publisher, Role, SnapshotStore};
use voice_search::search::{CatalogDocument, CatalogIndex};

fn document(id: &str, title: &str) -> CatalogDocument {
    CatalogDocument::from_json(serde_json::json!({ "id": id, "title": title, "category": "song" }))
        .unwrap()
}

#[tokio::test]
async fn old_generations_go_after_their_grace_and_what_remains_opens() {
    let folder = tempfile::tempdir().unwrap();
    let url = format!("file://{}", folder.path().join("store").display());
    let store = SnapshotStore::open(&url).unwrap();
    let index = Arc::new(CatalogIndex::open(&folder.path().join("writer")).unwrap());
    let status = Arc::new(FleetStatus::new(Role::Writer));
    let settings = |grace| PublishSettings { keep: 2, grace };
    let mut publisher = Publisher::new(
        store.clone(),
        index.clone(),
        settings(Duration::from_secs(3600)),
        status.clone(),
    )
    .await
    .unwrap();
    for n in 0..4 {
        index
            .upsert(&[document(&format!("song-{n}"), &format!("Song Number {n}"))])
            .unwrap();
        assert_eq!(publisher.publish().await.unwrap(), Some(n + 1));
    }
    // Nothing new committed: nothing published.
    assert_eq!(publisher.publish().await.unwrap(), None);
    // Within the grace period every generation stays.
    assert_eq!(store.generations().await.unwrap(), [1, 2, 3, 4]);

    let mut publisher = Publisher::new(
        store.clone(),
        index.clone(),
        settings(Duration::ZERO),
        status.clone(),
    )
    .await
    .unwrap();
    index.delete("song-0").unwrap();
    assert_eq!(publisher.publish().await.unwrap(), Some(5));
    assert_eq!(store.generations().await.unwrap(), [4, 5]);
    let mut needed = HashSet::new();
    for generation in [4, 5] {
        needed.extend(store.manifest(generation).await.unwrap().files);
    }
    assert_eq!(store.segment_files().await.unwrap(), needed);

    // A follower copies the newest and opens it with every document but the deleted one.
    let copy = folder.path().join("follower");
    let mut follower = Follower::new(
        store.clone(),
        &copy,
        Arc::new(FleetStatus::new(Role::Follower)),
    );
    assert_eq!(follower.copy_newest().await.unwrap().unwrap().generation, 5);
    assert!(follower.copy_newest().await.unwrap().is_none());
    let replica = CatalogIndex::open_follower(&copy).unwrap();
    assert_eq!(replica.stats().unwrap().document_count, 3);
    assert!(replica.get("song-0").unwrap().is_none());
    assert!(replica.spoken().get("song-3").is_some());
    assert_eq!(replica.opstamp(), index.opstamp());
    assert!(matches!(
        replica.upsert(&[document("x", "X")]),
        Err(voice_search::search::SearchError::Follower)
    ));

    // A writer whose index is older than the store's newest generation refuses to publish.
    let stale = Arc::new(CatalogIndex::open(&folder.path().join("stale")).unwrap());
    let refused = Publisher::new(store, stale, settings(Duration::ZERO), status).await;
    let message = refused
        .err()
        .expect("a stale writer is refused")
        .to_string();
    assert!(
        message.contains("newer than this writer's index"),
        "{message}"
    );
}
