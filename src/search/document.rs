//! A catalog document: one JSON object with a unique `id`, the searchable `title`, `body`
//! and `category`, an optional `popularity`, and any other fields, kept as they came.

use serde_json::{Map, Value};

use super::SearchError;

/// Longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest text of any one field, in bytes.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Longest word of a searched field, in bytes: longer ones could not be indexed (tantivy
/// drops terms over 64 KiB) and no name is that long.
pub const MAX_WORD_BYTES: usize = 1024;
/// Largest whole document (its JSON), in bytes: a page of 100 of the largest still fits
/// in a 16 MiB response.
pub const MAX_DOCUMENT_BYTES: usize = 128 * 1024;
/// Fields besides title and body that are indexed for search, each on its own.
pub const ATTRIBUTE_FIELDS: [&str; 6] = ["artist", "album", "state", "country", "director", "year"];

/// A validated document.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogDocument {
    pub id: String,
    pub title: String,
    pub body: String,
    pub category: String,
    pub popularity: Option<f64>,
    /// The whole object as it came, `id` and all.
    pub source: Map<String, Value>,
}

impl CatalogDocument {
    /// Validates a JSON object.
    pub fn from_json(value: Value) -> Result<Self, SearchError> {
        let Value::Object(source) = value else {
            return Err(SearchError::InvalidDocument(
                "a document must be a JSON object".into(),
            ));
        };
        let id = match source.get("id") {
            Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
            Some(Value::String(_)) => {
                return Err(SearchError::InvalidDocument("`id` is empty".into()))
            }
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                return Err(SearchError::InvalidDocument(
                    "`id` must be a non-empty string".into(),
                ))
            }
            None => {
                return Err(SearchError::InvalidDocument(
                    "the document has no `id`".into(),
                ))
            }
        };
        if id.len() > MAX_ID_BYTES {
            return Err(SearchError::InvalidDocument(format!(
                "`id` is {} bytes; the limit is {MAX_ID_BYTES}",
                id.len()
            )));
        }
        for (key, value) in &source {
            let size = match value {
                Value::String(s) => s.len(),
                Value::Array(_) | Value::Object(_) => value.to_string().len(),
                _ => 0,
            };
            if size > MAX_FIELD_BYTES {
                return Err(SearchError::InvalidDocument(format!(
                    "document {id:?}: field `{key}` is {size} bytes; the limit is {MAX_FIELD_BYTES}"
                )));
            }
        }
        let total = serde_json::to_string(&source).map_or(0, |json| json.len());
        if total > MAX_DOCUMENT_BYTES {
            return Err(SearchError::InvalidDocument(format!(
                "document {id:?} is {total} bytes as JSON; the limit is {MAX_DOCUMENT_BYTES}"
            )));
        }
        for key in ["title", "body", "category"]
            .iter()
            .chain(&ATTRIBUTE_FIELDS)
        {
            let Some(Value::String(text)) = source.get(*key) else {
                continue;
            };
            if let Some(word) = text.split_whitespace().find(|w| w.len() > MAX_WORD_BYTES) {
                return Err(SearchError::InvalidDocument(format!(
                    "document {id:?}: field `{key}` has a word of {} bytes; the limit is \
                     {MAX_WORD_BYTES} (a longer one could not be searched)",
                    word.len()
                )));
            }
        }
        let text = |key: &str| match source.get(key) {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let popularity = match source.get("popularity") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_f64().is_some_and(|p| p >= 0.0) => n.as_f64(),
            Some(_) => {
                return Err(SearchError::InvalidDocument(format!(
                    "document {id:?}: `popularity` must be a finite, non-negative number"
                )))
            }
        };
        Ok(Self {
            title: text("title"),
            body: text("body"),
            category: text("category"),
            popularity,
            id,
            source,
        })
    }

    /// Parses and validates one JSON text.
    pub fn from_json_str(text: &str) -> Result<Self, SearchError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| SearchError::InvalidDocument(format!("not valid JSON: {e}")))?;
        Self::from_json(value)
    }

    /// The text of an attribute field, numbers included (`year`: 1994 -> "1994").
    pub fn attribute(&self, key: &str) -> Option<String> {
        match self.source.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}
