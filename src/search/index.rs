//! The catalog index on disk: created when missing, refused when written by another
//! schema version, and written only through commits, so that a write acknowledged to a
//! caller survives `kill -9`. Readers pick up every commit without a restart.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, Value as _};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use super::document::{CatalogDocument, ATTRIBUTE_FIELDS};
use super::schema::{self, Fields, SCHEMA_VERSION};
use super::spoken::SpokenCatalog;
use super::text::{analyze, phonetic_codes};
use super::SearchError;

/// The file beside tantivy's own that records which schema version wrote the index.
const VERSION_FILE: &str = "voice-search-index.json";
/// Memory the writer may buffer before it flushes a segment.
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct VersionFile {
    schema_version: u32,
}

/// The commit payload: when the commit happened.
#[derive(Serialize, Deserialize)]
struct CommitPayload {
    committed_at_unix_ms: u64,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertCounts {
    pub added: u64,
    pub replaced: u64,
}

/// Size and freshness of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexStats {
    pub document_count: u64,
    pub size_bytes: u64,
    pub last_commit: Option<SystemTime>,
}

/// A stored document's JSON and its length in bytes as stored.
pub type SizedSource = (Map<String, Value>, usize);

/// The catalog index: one writer, any number of concurrent searches.
pub struct CatalogIndex {
    index: Index,
    fields: Fields,
    reader: IndexReader,
    /// Absent when opened read-only.
    writer: Option<Mutex<IndexWriter>>,
    path: PathBuf,
    /// The spoken forms of every committed document; empty when opened read-only.
    spoken: SpokenCatalog,
}

impl CatalogIndex {
    /// Opens the index at `path` for reading and writing, creating it (and the folder)
    /// when missing. Only one process may hold it so.
    pub fn open(path: &Path) -> Result<Self, SearchError> {
        Self::open_with(path, true)
    }

    /// Opens an existing index for searching only, which works while another process
    /// (a running server) holds it for writing.
    pub fn open_read_only(path: &Path) -> Result<Self, SearchError> {
        if !path.join(VERSION_FILE).exists() {
            return Err(SearchError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no catalog index here: load one with `voice-search index import`",
                ),
            });
        }
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, writable: bool) -> Result<Self, SearchError> {
        let (schema, fields) = schema::build();
        std::fs::create_dir_all(path).map_err(|source| SearchError::Io {
            path: path.to_owned(),
            source,
        })?;
        let version_path = path.join(VERSION_FILE);
        let directory = MmapDirectory::open(path)?;
        let exists = Index::exists(&directory).map_err(|e| SearchError::Index(e.to_string()))?;
        if exists {
            let found = std::fs::read_to_string(&version_path)
                .ok()
                .and_then(|text| serde_json::from_str::<VersionFile>(&text).ok())
                .map(|v| v.schema_version);
            if found != Some(SCHEMA_VERSION) {
                return Err(SearchError::IncompatibleVersion {
                    path: path.to_owned(),
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
        }
        let index = Index::open_or_create(directory, schema)?;
        if !exists {
            let version = serde_json::to_string(&VersionFile {
                schema_version: SCHEMA_VERSION,
            })
            .expect("serializable");
            std::fs::write(&version_path, version).map_err(|source| SearchError::Io {
                path: version_path,
                source,
            })?;
        }
        schema::register_tokenizer(&index);
        let writer = if writable {
            let writer = index
                .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
                .map_err(|e| match e {
                    tantivy::TantivyError::LockFailure(..) => SearchError::Locked(path.to_owned()),
                    other => other.into(),
                })?;
            Some(Mutex::new(writer))
        } else {
            None
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()?;
        let opened = Self {
            index,
            fields,
            reader,
            writer,
            path: path.to_owned(),
            spoken: SpokenCatalog::default(),
        };
        // Only a writer serves recognition; the read-only commands (`search`, `index
        // stats`) need not read every document back.
        if writable {
            opened.spoken.upsert(&opened.all_documents()?);
        }
        Ok(opened)
    }

    /// Every committed document, parsed again from its stored JSON.
    fn all_documents(&self) -> Result<Vec<CatalogDocument>, SearchError> {
        let searcher = self.searcher();
        let mut documents = Vec::with_capacity(searcher.num_docs() as usize);
        for (ordinal, segment) in searcher.segment_readers().iter().enumerate() {
            for doc in segment.doc_ids_alive() {
                let address = tantivy::DocAddress::new(ordinal as u32, doc);
                documents.push(CatalogDocument::from_json(Value::Object(
                    self.source(&searcher, address)?,
                ))?);
            }
        }
        Ok(documents)
    }

    /// The spoken forms of the committed documents (empty when opened read-only).
    pub fn spoken(&self) -> &SpokenCatalog {
        &self.spoken
    }

    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// A point-in-time view for searching.
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// Inserts or replaces documents by id and commits; returns once they are durable.
    pub fn upsert(&self, documents: &[CatalogDocument]) -> Result<UpsertCounts, SearchError> {
        let mut writer = self.writer()?;
        let searcher = self.searcher();
        let mut counts = UpsertCounts::default();
        let mut seen = HashSet::new();
        for document in documents {
            let id_term = Term::from_field_text(self.fields.id, &document.id);
            let existed =
                !seen.insert(document.id.clone()) || self.contains(&searcher, &id_term)?;
            if existed {
                counts.replaced += 1;
            } else {
                counts.added += 1;
            }
            writer.delete_term(id_term);
            writer.add_document(self.to_tantivy(document))?;
        }
        self.commit(&mut writer)?;
        self.spoken.upsert(documents);
        Ok(counts)
    }

    /// Deletes a document by id and commits; false when there was none.
    pub fn delete(&self, id: &str) -> Result<bool, SearchError> {
        let mut writer = self.writer()?;
        let id_term = Term::from_field_text(self.fields.id, id);
        if !self.contains(&self.searcher(), &id_term)? {
            return Ok(false);
        }
        writer.delete_term(id_term);
        self.commit(&mut writer)?;
        self.spoken.remove(id);
        Ok(true)
    }

    /// The stored document with this id.
    pub fn get(&self, id: &str) -> Result<Option<Map<String, Value>>, SearchError> {
        Ok(self.get_sized(id)?.map(|(source, _)| source))
    }

    /// The stored document with this id, and its length in bytes as stored.
    pub fn get_sized(&self, id: &str) -> Result<Option<SizedSource>, SearchError> {
        let searcher = self.searcher();
        let query = TermQuery::new(
            Term::from_field_text(self.fields.id, id),
            IndexRecordOption::Basic,
        );
        let hits = searcher.search(&query, &TopDocs::with_limit(1).order_by_score())?;
        hits.first()
            .map(|&(_, address)| self.sized_source(&searcher, address))
            .transpose()
    }

    /// The stored JSON of a document.
    pub fn source(
        &self,
        searcher: &Searcher,
        address: tantivy::DocAddress,
    ) -> Result<Map<String, Value>, SearchError> {
        Ok(self.sized_source(searcher, address)?.0)
    }

    /// The stored JSON of a document, and its length in bytes as stored.
    pub fn sized_source(
        &self,
        searcher: &Searcher,
        address: tantivy::DocAddress,
    ) -> Result<SizedSource, SearchError> {
        let doc: TantivyDocument = searcher.doc(address)?;
        let text = doc
            .get_first(self.fields.source)
            .and_then(|v| v.as_str())
            .unwrap_or("{}");
        let source = serde_json::from_str(text)
            .map_err(|e| SearchError::Index(format!("stored document: {e}")))?;
        Ok((source, text.len()))
    }

    pub fn stats(&self) -> Result<IndexStats, SearchError> {
        let size_bytes = std::fs::read_dir(&self.path)
            .map_err(|source| SearchError::Io {
                path: self.path.clone(),
                source,
            })?
            .filter_map(|entry| entry.ok()?.metadata().ok())
            .filter(|meta| meta.is_file())
            .map(|meta| meta.len())
            .sum();
        let last_commit = self
            .index
            .load_metas()?
            .payload
            .and_then(|p| serde_json::from_str::<CommitPayload>(&p).ok())
            .map(|p| UNIX_EPOCH + Duration::from_millis(p.committed_at_unix_ms));
        Ok(IndexStats {
            document_count: self.searcher().num_docs(),
            size_bytes,
            last_commit,
        })
    }

    fn contains(&self, searcher: &Searcher, id_term: &Term) -> Result<bool, SearchError> {
        let query = TermQuery::new(id_term.clone(), IndexRecordOption::Basic);
        Ok(searcher.search(&query, &Count)? > 0)
    }

    fn writer(&self) -> Result<std::sync::MutexGuard<'_, IndexWriter>, SearchError> {
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| SearchError::ReadOnly(self.path.clone()))?;
        Ok(writer.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn commit(&self, writer: &mut IndexWriter) -> Result<(), SearchError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let payload = serde_json::to_string(&CommitPayload {
            committed_at_unix_ms: now.as_millis() as u64,
        })
        .expect("serializable");
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        // Make the commit visible to this process's searches at once.
        self.reader.reload()?;
        Ok(())
    }

    fn to_tantivy(&self, document: &CatalogDocument) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = TantivyDocument::new();
        doc.add_text(f.id, &document.id);
        let title = analyze(&document.title);
        doc.add_text(f.title, title.join(" "));
        doc.add_text(f.body, analyze(&document.body).join(" "));
        let mut sounds: Vec<String> = title.iter().flat_map(|w| phonetic_codes(w)).collect();
        let mut joined: Vec<String> = title.windows(2).map(|w| w.concat()).collect();
        for (name, &field) in ATTRIBUTE_FIELDS.iter().zip(&f.attributes) {
            if let Some(value) = document.attribute(name) {
                let words = analyze(&value);
                sounds.extend(words.iter().flat_map(|w| phonetic_codes(w)));
                if *name == "artist" {
                    joined.extend(words.windows(2).map(|w| w.concat()));
                }
                doc.add_text(field, words.join(" "));
            }
        }
        doc.add_text(f.phonetic, sounds.join(" "));
        doc.add_text(f.joined, joined.join(" "));
        let category = document.category.to_lowercase();
        doc.add_text(f.category, &category);
        doc.add_u64(f.category_hash, schema::category_hash(&category));
        doc.add_f64(f.popularity, document.popularity.unwrap_or(0.0));
        doc.add_text(f.source, Value::Object(document.source.clone()).to_string());
        doc
    }
}
