//! The catalog index on disk: created when missing, refused when written by another
//! schema version, and written only through commits, so that a write acknowledged to a
//! caller survives `kill -9`. Readers pick up every commit without a restart.
//!
//! A follower's index (see `crate::fleet`) is never written here: another process puts a
//! whole generation's files into its folder, and [`CatalogIndex::refresh`] swaps the
//! searcher and the spoken forms to it in one step.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::index::SegmentId;
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, Value as _};
use tantivy::{
    DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};

use super::document::{CatalogDocument, ATTRIBUTE_FIELDS};
use super::schema::{self, Fields, SCHEMA_VERSION};
use super::sound::phonetic_codes;
use super::spoken::spoken_forms;
use super::spoken_catalog::SpokenCatalog;
use super::text::analyze;
use super::SearchError;

/// The file beside tantivy's own that records which schema version wrote the index.
pub const VERSION_FILE: &str = "voice-search-index.json";
/// Bytes of the file that tells whether the disk has room after a writer died.
const SPACE_PROBE_BYTES: usize = 64 * 1024;

/// Why a write failed: in tantivy, which may mean a full disk, or elsewhere.
enum Failed {
    Index(tantivy::TantivyError),
    Other(SearchError),
}

impl From<tantivy::TantivyError> for Failed {
    fn from(error: tantivy::TantivyError) -> Self {
        Failed::Index(error)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Memory the writer may buffer before it flushes a segment.
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct VersionFile {
    schema_version: u32,
}

/// The contents of [`VERSION_FILE`] for an index of `schema_version` (a follower writes
/// it for the generations it copies).
pub fn version_file(schema_version: u32) -> String {
    serde_json::to_string(&VersionFile { schema_version }).expect("serializable")
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

/// A commit as files: what a writer publishes to its followers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitFiles {
    pub opstamp: u64,
    /// tantivy's `meta.json` of the commit.
    pub meta_json: String,
    /// The segment files it needs, by name, each present in the folder when listed.
    pub files: Vec<String>,
    pub documents: u64,
}

/// What a follower's refresh swapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refresh {
    pub opstamp: u64,
    pub documents: u64,
    /// Documents new or changed since the previous generation.
    pub added: usize,
    pub removed: usize,
}

/// How an index is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Write,
    ReadOnly,
    Follow,
}

/// A follower's staging view of the folder and what each segment of the generation in
/// use holds: (document, id, hash of its stored JSON), for the alive documents.
struct FollowState {
    staging: IndexReader,
    segments: HashMap<SegmentId, Vec<(DocId, String, u64)>>,
}

/// The catalog index: one writer, any number of concurrent searches.
pub struct CatalogIndex {
    index: Index,
    fields: Fields,
    reader: IndexReader,
    /// Absent when opened read-only or as a follower. Empty after a write failed: the
    /// next write starts a new writer from the last commit.
    writer: Option<Mutex<Option<IndexWriter>>>,
    /// Why the last write failed; `None` once one succeeds.
    write_error: Mutex<Option<String>>,
    path: PathBuf,
    /// The spoken forms of every committed document; empty when opened read-only.
    spoken: SpokenCatalog,
    /// Held shared by each query ([`CatalogIndex::hold`]) and exclusively while a
    /// follower swaps generations, so that no query sees the searcher of one generation
    /// and the spoken forms of another.
    swap: RwLock<()>,
    /// The commit opstamp searches see (the same number on a writer and its followers),
    /// told to whoever follows the commits (a writer's publisher).
    opstamp: tokio::sync::watch::Sender<u64>,
    follow: Option<Mutex<FollowState>>,
}

impl CatalogIndex {
    /// Opens the index at `path` for reading and writing, creating it (and the folder)
    /// when missing. Only one process may hold it so.
    pub fn open(path: &Path) -> Result<Self, SearchError> {
        Self::open_with(path, Access::Write)
    }

    /// Opens a follower's copy at `path`, which must hold a whole generation: searched
    /// and read, never written; [`CatalogIndex::refresh`] moves it to the generation
    /// the folder holds next.
    pub fn open_follower(path: &Path) -> Result<Self, SearchError> {
        Self::require_index(path)?;
        Self::open_with(path, Access::Follow)
    }

    /// Opens an existing index for searching only, which works while another process
    /// (a running server) holds it for writing.
    pub fn open_read_only(path: &Path) -> Result<Self, SearchError> {
        Self::require_index(path)?;
        Self::open_with(path, Access::ReadOnly)
    }

    fn require_index(path: &Path) -> Result<(), SearchError> {
        if path.join(VERSION_FILE).exists() {
            return Ok(());
        }
        Err(SearchError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no catalog index here: load one with `voice-search index import`",
            ),
        })
    }

    fn open_with(path: &Path, access: Access) -> Result<Self, SearchError> {
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
            std::fs::write(&version_path, version_file(SCHEMA_VERSION)).map_err(|source| {
                SearchError::Io {
                    path: version_path,
                    source,
                }
            })?;
        }
        schema::register_tokenizer(&index);
        let writer = if access == Access::Write {
            let writer = index
                .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
                .map_err(|e| match e {
                    tantivy::TantivyError::LockFailure(..) => SearchError::Locked(path.to_owned()),
                    other => other.into(),
                })?;
            Some(Mutex::new(Some(writer)))
        } else {
            None
        };
        // A follower moves only when told, in step with its spoken forms.
        let policy = match access {
            Access::Follow => ReloadPolicy::Manual,
            Access::Write | Access::ReadOnly => ReloadPolicy::OnCommitWithDelay,
        };
        let reader = index.reader_builder().reload_policy(policy).try_into()?;
        let follow = match access {
            Access::Follow => Some(Mutex::new(FollowState {
                staging: index
                    .reader_builder()
                    .reload_policy(ReloadPolicy::Manual)
                    .try_into()?,
                segments: HashMap::new(),
            })),
            Access::Write | Access::ReadOnly => None,
        };
        let opstamp = index.load_metas()?.opstamp;
        let opened = Self {
            index,
            fields,
            reader,
            writer,
            write_error: Mutex::new(None),
            path: path.to_owned(),
            spoken: SpokenCatalog::default(),
            swap: RwLock::new(()),
            opstamp: tokio::sync::watch::Sender::new(opstamp),
            follow,
        };
        // Writers and followers serve recognition; the read-only commands (`search`,
        // `index stats`) need not read every document back.
        match access {
            Access::Write => opened.spoken.upsert(&opened.all_documents()?),
            Access::Follow => {
                opened.refresh()?;
            }
            Access::ReadOnly => {}
        }
        Ok(opened)
    }

    /// Holds the generation in use for the length of one query: a follower's swap waits
    /// for it. Take it once per query, at its start, and never again inside it.
    pub fn hold(&self) -> RwLockReadGuard<'_, ()> {
        self.swap.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The commit opstamp searches see now.
    pub fn opstamp(&self) -> u64 {
        *self.opstamp.borrow()
    }

    /// The opstamp of each commit from now on (a writer publishes them).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.opstamp.subscribe()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last commit as files: its `meta.json` and the segment files it needs.
    pub fn commit_files(&self) -> Result<CommitFiles, SearchError> {
        let metas = self.index.load_metas()?;
        let meta_json = serde_json::to_string(&metas)
            .map_err(|e| SearchError::Index(format!("meta.json: {e}")))?;
        // tantivy lists candidates, some of which a segment may lack.
        let mut files: Vec<String> = metas
            .list_segment_files()
            .into_iter()
            .filter(|file| self.path.join(file).exists())
            .filter_map(|file| file.to_str().map(str::to_string))
            .collect();
        files.sort();
        Ok(CommitFiles {
            opstamp: metas.opstamp,
            meta_json,
            files,
            documents: metas.segments.iter().map(|s| u64::from(s.num_docs())).sum(),
        })
    }

    /// A follower's move to the generation its folder holds now: the documents of the
    /// segments it has not seen are read and their spoken forms made first; then, with
    /// no query running, the searcher and the spoken forms (and the recognizer's names,
    /// which follow them) change together.
    pub fn refresh(&self) -> Result<Refresh, SearchError> {
        let follow = self
            .follow
            .as_ref()
            .ok_or_else(|| SearchError::ReadOnly(self.path.clone()))?;
        let mut state = follow.lock().unwrap_or_else(|p| p.into_inner());
        let opstamp = self.index.load_metas()?.opstamp;
        state.staging.reload()?;
        let searcher = state.staging.searcher();
        let before: HashMap<&str, u64> = state
            .segments
            .values()
            .flatten()
            .map(|(_, id, hash)| (id.as_str(), *hash))
            .collect();
        let mut segments = HashMap::new();
        let mut added = Vec::new();
        for (ordinal, segment) in searcher.segment_readers().iter().enumerate() {
            let docs: Vec<(DocId, String, u64)> = match state.segments.get(&segment.segment_id()) {
                Some(known) => known
                    .iter()
                    .filter(|(doc, _, _)| !segment.is_deleted(*doc))
                    .cloned()
                    .collect(),
                None => {
                    let mut docs = Vec::new();
                    for doc in segment.doc_ids_alive() {
                        let address = tantivy::DocAddress::new(ordinal as u32, doc);
                        let text = self.stored_text(&searcher, address)?;
                        let mut hasher = DefaultHasher::new();
                        text.hash(&mut hasher);
                        let hash = hasher.finish();
                        let document = CatalogDocument::from_json_str(&text)?;
                        if before.get(document.id.as_str()) != Some(&hash) {
                            added.push(spoken_forms(&document));
                        }
                        docs.push((doc, document.id, hash));
                    }
                    docs
                }
            };
            segments.insert(segment.segment_id(), docs);
        }
        let after: HashSet<&str> = segments
            .values()
            .flatten()
            .map(|(_, id, _)| id.as_str())
            .collect();
        let removed: Vec<String> = before
            .keys()
            .filter(|id| !after.contains(*id))
            .map(|id| id.to_string())
            .collect();
        let summary = Refresh {
            opstamp,
            documents: searcher.num_docs(),
            added: added.len(),
            removed: removed.len(),
        };
        {
            let _swap = self.swap.write().unwrap_or_else(|p| p.into_inner());
            self.reader.reload()?;
            self.opstamp.send_replace(opstamp);
            self.spoken.apply(added, &removed);
        }
        state.segments = segments;
        Ok(summary)
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
        let counts = self.write(|writer| {
            let searcher = self.searcher();
            let mut counts = UpsertCounts::default();
            let mut seen = HashSet::new();
            for document in documents {
                let id_term = Term::from_field_text(self.fields.id, &document.id);
                let existed = !seen.insert(document.id.clone())
                    || self.contains(&searcher, &id_term).map_err(Failed::Other)?;
                if existed {
                    counts.replaced += 1;
                } else {
                    counts.added += 1;
                }
                writer.delete_term(id_term);
                writer.add_document(self.to_tantivy(document))?;
            }
            self.commit(writer)?;
            Ok(counts)
        })?;
        self.spoken.upsert(documents);
        Ok(counts)
    }

    /// Deletes a document by id and commits; false when there was none.
    pub fn delete(&self, id: &str) -> Result<bool, SearchError> {
        let id_term = Term::from_field_text(self.fields.id, id);
        let deleted = self.write(|writer| {
            if !self
                .contains(&self.searcher(), &id_term)
                .map_err(Failed::Other)?
            {
                return Ok(false);
            }
            writer.delete_term(id_term.clone());
            self.commit(writer)?;
            Ok(true)
        })?;
        if deleted {
            self.spoken.remove(id);
        }
        Ok(deleted)
    }

    /// Why the last write failed, while writes fail.
    pub fn write_error(&self) -> Option<String> {
        lock(&self.write_error).clone()
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
        let text = self.stored_text(searcher, address)?;
        let source = serde_json::from_str(&text)
            .map_err(|e| SearchError::Index(format!("stored document: {e}")))?;
        Ok((source, text.len()))
    }

    fn stored_text(
        &self,
        searcher: &Searcher,
        address: tantivy::DocAddress,
    ) -> Result<String, SearchError> {
        let doc: TantivyDocument = searcher.doc(address)?;
        Ok(doc
            .get_first(self.fields.source)
            .and_then(|v| v.as_str())
            .unwrap_or("{}")
            .to_string())
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

    /// Runs `write` on the writer, one write at a time. A write that fails is not kept:
    /// its writer is dropped with whatever it held, and the next write starts a new one
    /// from the last commit, so that a disk that was full and has room again takes
    /// writes without a restart.
    fn write<T>(
        &self,
        write: impl FnOnce(&mut IndexWriter) -> Result<T, Failed>,
    ) -> Result<T, SearchError> {
        let slot = self.writer.as_ref().ok_or_else(|| match self.follow {
            Some(_) => SearchError::Follower,
            None => SearchError::ReadOnly(self.path.clone()),
        })?;
        let mut slot = lock(slot);
        let result = match &mut *slot {
            Some(writer) => write(writer),
            None => match self.index.writer_with_num_threads(1, WRITER_MEMORY_BYTES) {
                Ok(writer) => write(slot.insert(writer)),
                Err(error) => Err(Failed::Index(error)),
            },
        };
        let result = result.map_err(|failed| {
            *slot = None;
            let error = match failed {
                Failed::Index(error) if self.disk_is_full(&error) => {
                    SearchError::DiskFull(self.path.clone())
                }
                Failed::Index(error) => error.into(),
                Failed::Other(error) => error,
            };
            tracing::warn!(%error, "a catalog write failed and was not kept");
            error
        });
        *lock(&self.write_error) = result.as_ref().err().map(ToString::to_string);
        result
    }

    /// Whether `error` comes of a full disk: it says so, or (a writer thread that died
    /// says only that it died) a small file no longer fits beside the index.
    fn disk_is_full(&self, error: &tantivy::TantivyError) -> bool {
        let full = |error: &std::io::Error| error.kind() == std::io::ErrorKind::StorageFull;
        if let tantivy::TantivyError::IoError(error) = error {
            return full(error);
        }
        let probe = self.path.join(".space-probe");
        let written = std::fs::write(&probe, [0u8; SPACE_PROBE_BYTES]);
        std::fs::remove_file(&probe).ok();
        written.is_err_and(|error| full(&error))
    }

    fn commit(&self, writer: &mut IndexWriter) -> Result<(), Failed> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let payload = serde_json::to_string(&CommitPayload {
            committed_at_unix_ms: now.as_millis() as u64,
        })
        .expect("serializable");
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&payload);
        let opstamp = prepared.commit()?;
        // Make the commit visible to this process's searches at once.
        self.reader.reload()?;
        self.opstamp.send_replace(opstamp);
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
