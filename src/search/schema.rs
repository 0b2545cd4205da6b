//! The index layout: which fields exist and how each is analyzed. Text fields hold the
//! output of [`super::text::analyze`] and are split on spaces, so the index and the query
//! side share one analysis written in plain Rust.

use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
};
use tantivy::tokenizer::{TextAnalyzer, WhitespaceTokenizer};
use tantivy::Index;

use super::document::ATTRIBUTE_FIELDS;

/// Bumped whenever the layout or the analysis changes; an index written with another
/// version is refused.
pub const SCHEMA_VERSION: u32 = 1;
/// Names of the fast fields read at scoring time.
pub const POPULARITY: &str = "popularity";
pub const CATEGORY_HASH: &str = "category_hash";
/// The tokenizer name text fields use.
const TOKENIZER: &str = "analyzed";

/// Handles to every field.
#[derive(Debug, Clone)]
pub struct Fields {
    /// The document id, untokenized.
    pub id: Field,
    pub title: Field,
    pub body: Field,
    /// `artist`, `album`, `state`, `country`, `director`, `year`, in [`ATTRIBUTE_FIELDS`] order.
    pub attributes: Vec<Field>,
    /// The category, lowercase, untokenized: for filters.
    pub category: Field,
    /// A hash of the category, as a fast field: for the intent preference at scoring time.
    pub category_hash: Field,
    pub popularity: Field,
    /// Sound-alike codes of the title and attribute words.
    pub phonetic: Field,
    /// Adjacent title and artist words written together ("led zeppelin" -> "ledzeppelin"),
    /// so that a recognizer's merged words still match.
    pub joined: Field,
    /// The document's JSON, returned as it came.
    pub source: Field,
}

/// Builds the schema and its field handles.
pub fn build() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED),
        title: builder.add_text_field("title", text.clone()),
        body: builder.add_text_field("body", text.clone()),
        attributes: ATTRIBUTE_FIELDS
            .iter()
            .map(|name| builder.add_text_field(name, text.clone()))
            .collect(),
        category: builder.add_text_field("category", STRING),
        category_hash: builder.add_u64_field(CATEGORY_HASH, FAST),
        popularity: builder.add_f64_field(POPULARITY, FAST),
        phonetic: builder.add_text_field("phonetic", text.clone()),
        joined: builder.add_text_field("joined", text),
        source: builder.add_text_field("source", STORED),
    };
    (builder.build(), fields)
}

/// Registers the analysis the text fields name; needed on every opened index.
pub fn register_tokenizer(index: &Index) {
    index.tokenizers().register(
        TOKENIZER,
        TextAnalyzer::builder(WhitespaceTokenizer::default()).build(),
    );
}

/// A stable hash of a category name (FNV-1a), for the `category_hash` fast field.
pub fn category_hash(category: &str) -> u64 {
    category
        .to_lowercase()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ byte as u64).wrapping_mul(0x100_0000_01b3)
        })
}
