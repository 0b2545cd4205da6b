//! The catalog's spoken forms held in memory for recognition: every entry's forms and
//! sound keys in step with the index (built when it opens, changed by every committed
//! upsert and delete), searched by sound, and each change told to followers, so that
//! recognition can bias towards what the catalog holds without knowing documents.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rayon::prelude::*;

use super::document::CatalogDocument;
use super::sound::{SoundKey, WITHIN_FLOOR};
use super::spoken::{spoken_forms, SpokenEntry};

/// A change to the catalog's entries, told to followers after it is committed.
#[derive(Debug, Clone)]
pub enum CatalogChange {
    Added(Arc<SpokenEntry>),
    Removed(Arc<SpokenEntry>),
}

type Follower = Box<dyn Fn(&CatalogChange) + Send + Sync>;

/// Every entry's spoken forms, by id.
#[derive(Default)]
pub struct SpokenCatalog {
    state: RwLock<CatalogState>,
}

#[derive(Default)]
struct CatalogState {
    entries: HashMap<String, Arc<SpokenEntry>>,
    followers: Vec<Follower>,
}

/// An entry whose sound is close to what was heard.
#[derive(Debug, Clone)]
pub struct SoundAlike {
    pub entry: Arc<SpokenEntry>,
    pub similarity: f32,
}

impl SpokenCatalog {
    pub fn get(&self, id: &str) -> Option<Arc<SpokenEntry>> {
        self.read().entries.get(id).cloned()
    }

    /// Adds or replaces the entries of documents just committed.
    pub fn upsert(&self, documents: &[CatalogDocument]) {
        self.apply(documents.iter().map(spoken_forms).collect(), &[]);
    }

    /// Drops the entry of a document just deleted.
    pub fn remove(&self, id: &str) {
        self.apply(Vec::new(), &[id.to_string()]);
    }

    /// Drops the entries of `removed` ids and adds or replaces `added`, in one step.
    pub fn apply(&self, added: Vec<SpokenEntry>, removed: &[String]) {
        let mut state = self.write();
        for id in removed {
            if let Some(old) = state.entries.remove(id) {
                state.tell(&CatalogChange::Removed(old));
            }
        }
        for entry in added {
            let entry = Arc::new(entry);
            if let Some(old) = state.entries.insert(entry.id.clone(), entry.clone()) {
                state.tell(&CatalogChange::Removed(old));
            }
            state.tell(&CatalogChange::Added(entry));
        }
    }

    /// Registers `follower` for every later change and returns the entries held now (by
    /// id), in one step, so that the follower misses nothing and sees nothing twice.
    pub fn follow(
        &self,
        follower: impl Fn(&CatalogChange) + Send + Sync + 'static,
    ) -> Vec<Arc<SpokenEntry>> {
        let mut state = self.write();
        state.followers.push(Box::new(follower));
        // By id, so that what the follower builds from them comes out the same in every
        // process (the map's own order does not).
        let mut entries: Vec<Arc<SpokenEntry>> = state.entries.values().cloned().collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries
    }

    /// Entries whose readings sound most like any of `heard` (spans of a name as
    /// heard), best first, at most `limit`. One parallel pass over the catalog.
    pub fn sound_alikes(&self, heard: &[Vec<String>], limit: usize) -> Vec<SoundAlike> {
        let keys: Vec<SoundKey> = heard
            .iter()
            .map(|words| SoundKey::new(words))
            .filter(|key| !key.is_empty())
            .collect();
        if keys.is_empty() {
            return Vec::new();
        }
        self.closest(limit, |entry| {
            keys.iter()
                .filter_map(|key| entry.sound_similarity_to(key))
                .max_by(f32::total_cmp)
        })
    }

    /// Entries one of whose readings sounds like a stretch of `heard` (the words after
    /// the carrier, say), for names whose edges the recognizer ran into the words
    /// around them; best first, at most `limit`.
    pub fn sounds_within(&self, heard: &[String], limit: usize) -> Vec<SoundAlike> {
        let heard = SoundKey::new(heard);
        if heard.is_empty() {
            return Vec::new();
        }
        self.closest(limit, |entry| {
            entry
                .sound_keys
                .iter()
                .filter_map(|(_, key)| heard.similarity_within(key, WITHIN_FLOOR))
                .max_by(f32::total_cmp)
        })
    }

    /// The `limit` entries that `similarity` rates highest (the more popular first among
    /// equals, then by id), in one parallel pass over the catalog.
    fn closest(
        &self,
        limit: usize,
        similarity: impl Fn(&SpokenEntry) -> Option<f32> + Sync,
    ) -> Vec<SoundAlike> {
        let state = self.read();
        let entries: Vec<&Arc<SpokenEntry>> = state.entries.values().collect();
        let mut found: Vec<SoundAlike> = entries
            .par_iter()
            .filter_map(|entry| {
                Some(SoundAlike {
                    similarity: similarity(entry)?,
                    entry: (*entry).clone(),
                })
            })
            .collect();
        // The catalog is a hash map: without the id last, equals would come in an order
        // that changes from one process to the next.
        found.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then(b.entry.popularity.total_cmp(&a.entry.popularity))
                .then_with(|| a.entry.id.cmp(&b.entry.id))
        });
        found.truncate(limit);
        found
    }

    /// The most popular entries all of whose qualifiers (artist, state, country) were
    /// heard among `words`: "rotsaf poland" still names a city in Poland.
    pub fn qualified_by(&self, words: &[String], limit: usize) -> Vec<Arc<SpokenEntry>> {
        let state = self.read();
        let entries: Vec<&Arc<SpokenEntry>> = state.entries.values().collect();
        let mut found: Vec<Arc<SpokenEntry>> = entries
            .par_iter()
            .filter(|e| {
                e.qualifiers
                    .iter()
                    .any(|group| group.iter().all(|q| words.contains(q)))
            })
            .map(|e| (*e).clone())
            .collect();
        found.sort_by(|a, b| b.popularity.total_cmp(&a.popularity).then(a.id.cmp(&b.id)));
        found.truncate(limit);
        found
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, CatalogState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, CatalogState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl CatalogState {
    fn tell(&self, change: &CatalogChange) {
        for follower in &self.followers {
            follower(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_see_every_committed_change_once() {
        let catalog = SpokenCatalog::default();
        let doc = |id: &str, title: &str| {
            CatalogDocument::from_json_str(&format!(
                r#"{{"id":"{id}","title":"{title}","category":"movie"}}"#
            ))
            .unwrap()
        };
        catalog.upsert(&[doc("a", "Alien")]);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let held = catalog.follow(move |change| {
            log.lock().unwrap().push(match change {
                CatalogChange::Added(e) => format!("+{}", e.names[0]),
                CatalogChange::Removed(e) => format!("-{}", e.names[0]),
            })
        });
        assert_eq!(held.len(), 1);
        catalog.upsert(&[doc("a", "Aliens"), doc("b", "Brazil")]);
        catalog.remove("b");
        catalog.remove("missing");
        assert_eq!(
            *seen.lock().unwrap(),
            ["-Alien", "+Aliens", "+Brazil", "-Brazil"]
        );
    }
}
