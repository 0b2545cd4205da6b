//! The catalog as it changes: upserts and deletes seen by readers, schema versions, bulk
//! loads, import errors, `kill -9`, the gRPC surface, carrier files and read-only opening.

use super::*;

#[test]
fn upsert_replaces_delete_removes_and_readers_see_commits() {
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(CatalogIndex::open(dir.path()).unwrap());
    let engine = QueryEngine::new(index.clone(), CarrierPhrases::default());
    assert!(top_ids(&engine, "zanzibar").is_empty());

    let counts = index.upsert(&[doc(city("z", "Zanzibar", "", 1))]).unwrap();
    assert_eq!((counts.added, counts.replaced), (1, 0));
    assert_eq!(
        top_ids(&engine, "zanzibar"),
        ["z"],
        "a commit is visible without a restart"
    );

    let counts = index
        .upsert(&[doc(city("z", "Zanzibar City", "", 2))])
        .unwrap();
    assert_eq!((counts.added, counts.replaced), (0, 1));
    assert_eq!(index.stats().unwrap().document_count, 1);
    assert_eq!(index.get("z").unwrap().unwrap()["title"], "Zanzibar City");
    assert!(index.stats().unwrap().last_commit.is_some());

    assert!(index.delete("z").unwrap());
    assert!(!index.delete("z").unwrap());
    assert!(index.get("z").unwrap().is_none());
    assert!(top_ids(&engine, "zanzibar").is_empty());
}

#[test]
fn an_index_from_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(CatalogIndex::open(dir.path()).unwrap());
    std::fs::write(
        dir.path().join("voice-search-index.json"),
        r#"{"schema_version": 0}"#,
    )
    .unwrap();
    let error = CatalogIndex::open(dir.path()).err().expect("refused");
    assert!(matches!(
        error,
        SearchError::IncompatibleVersion { found: Some(0), .. }
    ));
    assert!(
        error.to_string().contains("voice-search index import"),
        "{error}"
    );
}

#[test]
fn searches_run_while_a_bulk_load_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(CatalogIndex::open(dir.path()).unwrap());
    index
        .upsert(&[doc(city("first", "Lighthouse Point", "", 1))])
        .unwrap();
    let engine = QueryEngine::new(index.clone(), CarrierPhrases::default());
    let writer = std::thread::spawn(move || {
        for batch in 0..20 {
            let docs: Vec<_> = (0..200)
                .map(|i| {
                    doc(city(
                        &format!("b{batch}-{i}"),
                        &format!("Lighthouse {batch} {i}"),
                        "",
                        1,
                    ))
                })
                .collect();
            index.upsert(&docs).unwrap();
        }
    });
    let mut searches = 0;
    while !writer.is_finished() || searches == 0 {
        assert!(!top_ids(&engine, "lighthouse point").is_empty());
        searches += 1;
    }
    writer.join().unwrap();
    assert!(searches > 1);
    assert_eq!(engine.index().stats().unwrap().document_count, 4001);
}

#[test]
fn import_reports_bad_lines_by_number_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let index = CatalogIndex::open(dir.path()).unwrap();
    let long_title = "x".repeat(70_000);
    let input = format!(
        "{}\nnot json at all\n{}\n\n{}\n{}\n",
        json!({"id": "a", "title": "Alpha"}),
        json!({"title": "no id"}),
        json!({"id": "long", "title": long_title}),
        json!({"id": "b", "title": "Beta"}),
    );
    let mut rejected = Vec::new();
    let summary = import_jsonl(&index, input.as_bytes(), 2, |event| {
        if let ImportEvent::Rejected { line, error } = event {
            rejected.push((line, error.to_string()));
        }
    })
    .unwrap();
    assert_eq!((summary.added, summary.rejected), (2, 3));
    assert_eq!(
        rejected.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [2, 3, 5]
    );
    assert!(rejected[0].1.contains("not valid JSON"));
    assert!(rejected[1].1.contains("no `id`"));
    assert!(rejected[2].1.contains("\"long\"") && rejected[2].1.contains("title"));
}

/// Kills an import at a random moment with SIGKILL; every line it acknowledged as
/// committed must be in the index, and the index must open.
#[test]
fn acknowledged_documents_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.jsonl");
    let lines: Vec<String> = (0..60_000)
        .map(|i| json!({"id": format!("doc-{i}"), "title": format!("Title {i}"), "body": "Some body text for the index."}).to_string())
        .collect();
    std::fs::write(&catalog, lines.join("\n")).unwrap();
    let index_dir = dir.path().join("index");
    let mut child = Command::new(env!("CARGO_BIN_EXE_voice-search"))
        .args([
            "index",
            "import",
            catalog.to_str().unwrap(),
            "--batch-size",
            "500",
            "--index",
        ])
        .arg(&index_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acknowledged = 0usize;
    let mut commits = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("committed through line ") {
            acknowledged = n.parse().unwrap();
            commits += 1;
            if commits == 5 {
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    assert!(
        acknowledged >= 2500,
        "the import acknowledged {acknowledged} lines"
    );
    assert!(
        acknowledged < lines.len(),
        "the import finished before it was killed"
    );

    let index = CatalogIndex::open(&index_dir).unwrap();
    assert!(index.stats().unwrap().document_count as usize >= acknowledged);
    for i in (0..acknowledged).step_by(97).chain([acknowledged - 1]) {
        assert!(
            index.get(&format!("doc-{i}")).unwrap().is_some(),
            "doc-{i} was acknowledged but is lost"
        );
    }
}

fn wire_doc(id: &str, title: &str) -> proto::Document {
    proto::Document {
        id: id.into(),
        title: title.into(),
        body: format!("All about {title}."),
        category: "city".into(),
        popularity: Some(10.0),
        attributes: Some(prost_types::Struct {
            fields: [(
                "state".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("Ohio".into())),
                },
            )]
            .into_iter()
            .collect(),
        }),
    }
}

#[tokio::test]
async fn catalog_and_search_over_grpc() {
    let server = TestServer::start(test_config()).await;
    let mut catalog = CatalogClient::new(server.channel().await);
    let mut search = SearchClient::new(server.channel().await);

    let done = catalog
        .upsert_documents(proto::UpsertDocumentsRequest {
            documents: vec![wire_doc("c1", "Columbus"), wire_doc("c2", "Dayton")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((done.added, done.replaced), (2, 0));

    let batches = vec![
        proto::UpsertDocumentsRequest {
            documents: vec![wire_doc("c3", "Toledo")],
        },
        proto::UpsertDocumentsRequest {
            documents: vec![wire_doc("c1", "Columbus"), wire_doc("c4", "Akron")],
        },
    ];
    let done = catalog
        .bulk_upsert_documents(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((done.added, done.replaced), (2, 1));

    let stats = catalog
        .get_stats(proto::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.document_count, 4);
    assert!(stats.index_size_bytes > 0 && stats.last_commit_time.is_some());

    let got = catalog
        .get_document(proto::GetDocumentRequest { id: "c3".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.title, "Toledo");
    assert_eq!(got.popularity, Some(10.0));
    assert!(got.attributes.unwrap().fields.contains_key("state"));

    let response = search
        .search(proto::SearchRequest {
            query: "directions to toledo ohio".into(),
            filters: Some(SearchFilters {
                categories: vec!["city".into()],
            }),
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.hits[0].id, "c3");
    assert!(
        response.hits[0].snippet.contains("<b>Toledo</b>."),
        "{}",
        response.hits[0].snippet
    );
    assert_eq!(response.hits[0].document.as_ref().unwrap().title, "Toledo");

    let deleted = catalog
        .delete_document(proto::DeleteDocumentRequest { id: "c3".into() })
        .await
        .unwrap();
    assert!(deleted.into_inner().deleted);
    let missing = catalog
        .get_document(proto::GetDocumentRequest { id: "c3".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_catalog_input_gets_invalid_argument_naming_it() {
    let server = TestServer::start(test_config()).await;
    let mut catalog = CatalogClient::new(server.channel().await);
    let mut search = SearchClient::new(server.channel().await);

    let no_id = catalog
        .upsert_documents(proto::UpsertDocumentsRequest {
            documents: vec![wire_doc("ok", "Fine"), wire_doc("", "Nameless")],
        })
        .await
        .unwrap_err();
    assert_eq!(no_id.code(), tonic::Code::InvalidArgument);
    assert!(
        no_id.message().contains("document 1"),
        "{}",
        no_id.message()
    );

    let long = catalog
        .upsert_documents(proto::UpsertDocumentsRequest {
            documents: vec![wire_doc("huge", &"y".repeat(70_000))],
        })
        .await
        .unwrap_err();
    assert_eq!(long.code(), tonic::Code::InvalidArgument);
    assert!(
        long.message().contains("\"huge\"") && long.message().contains("limit"),
        "{}",
        long.message()
    );

    // A bulk load stopped by a bad document keeps (and says it kept) what came before.
    let batches = vec![
        proto::UpsertDocumentsRequest {
            documents: vec![wire_doc("k1", "Kept")],
        },
        proto::UpsertDocumentsRequest {
            documents: vec![wire_doc("", "Broken")],
        },
    ];
    let stopped = catalog
        .bulk_upsert_documents(tokio_stream::iter(batches))
        .await
        .unwrap_err();
    assert_eq!(stopped.code(), tonic::Code::InvalidArgument);
    assert!(
        stopped.message().contains("message 1, document 0"),
        "{}",
        stopped.message()
    );
    assert!(
        stopped
            .message()
            .contains("1 documents before it were committed"),
        "{}",
        stopped.message()
    );
    let stats = catalog
        .get_stats(proto::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stats.document_count, 1,
        "nothing of the bad batches, all of the good one"
    );

    let empty = search
        .search(proto::SearchRequest {
            query: "  ".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);

    // The server still answers a good request.
    let ok = search
        .search(proto::SearchRequest {
            query: "kept".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().hits[0].id, "k1");
    server.shutdown().await.unwrap();
}

#[test]
fn carrier_phrases_can_be_replaced_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("carriers.toml");
    std::fs::write(
        &path,
        "prefixes = [{ phrase = \"spiele\", category = \"song\" }]\nsuffixes = []\n",
    )
    .unwrap();
    let carriers = CarrierPhrases::load(Some(&path)).unwrap();
    let intent = carriers.interpret("spiele kashmir");
    assert_eq!(
        (intent.words.join(" "), intent.category.as_deref()),
        ("kashmir".into(), Some("song"))
    );
    assert_eq!(
        carriers.interpret("play kashmir").words.len(),
        2,
        "the built-in list is replaced"
    );
    std::fs::write(&path, "prefixes = 3").unwrap();
    assert!(CarrierPhrases::load(Some(&path)).is_err());
}

#[test]
fn a_read_only_index_searches_while_another_holds_the_writer() {
    let folder = tempfile::tempdir().unwrap();
    assert!(
        CatalogIndex::open_read_only(folder.path()).is_err(),
        "no index yet"
    );
    let writable = CatalogIndex::open(folder.path()).unwrap();
    writable
        .upsert(&[doc(city("ber", "Berlin", "", 3_600_000))])
        .unwrap();
    assert!(matches!(
        CatalogIndex::open(folder.path()),
        Err(SearchError::Locked(_))
    ));
    let reader = CatalogIndex::open_read_only(folder.path()).unwrap();
    assert_eq!(reader.stats().unwrap().document_count, 1);
    assert!(matches!(
        reader.upsert(&[doc(city("rom", "Rome", "", 2_800_000))]),
        Err(SearchError::ReadOnly(_))
    ));
}
