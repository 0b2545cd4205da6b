//! Conversions between the wire types and the library's: documents and JSON values.

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

use crate::proto;

/// Keys of the document fields the proto names; everything else travels in `attributes`.
const NAMED_FIELDS: [&str; 5] = ["id", "title", "body", "category", "popularity"];

/// A wire document as the JSON object the catalog stores.
pub fn document_to_json(document: proto::Document) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("id".into(), Value::String(document.id));
    map.insert("title".into(), Value::String(document.title));
    map.insert("body".into(), Value::String(document.body));
    map.insert("category".into(), Value::String(document.category));
    if let Some(popularity) = document.popularity {
        map.insert(
            "popularity".into(),
            Number::from_f64(popularity).map_or(Value::Null, Value::Number),
        );
    }
    for (key, value) in document.attributes.map(|s| s.fields).unwrap_or_default() {
        if !NAMED_FIELDS.contains(&key.as_str()) {
            map.insert(key, from_proto_value(value));
        }
    }
    map
}

/// A stored JSON object as a wire document.
pub fn json_to_document(map: &Map<String, Value>) -> proto::Document {
    let text = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let attributes = map
        .iter()
        .filter(|(key, _)| !NAMED_FIELDS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), to_proto_value(value)))
        .collect();
    proto::Document {
        id: match map.get("id") {
            Some(Value::Number(n)) => n.to_string(),
            _ => text("id"),
        },
        title: text("title"),
        body: text("body"),
        category: text("category"),
        popularity: map.get("popularity").and_then(Value::as_f64),
        attributes: Some(prost_types::Struct { fields: attributes }),
    }
}

fn to_proto_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_proto_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), to_proto_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn from_proto_value(value: prost_types::Value) -> Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        // Whole numbers stay integers, so that `"year": 1994` round-trips as it came.
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
            Value::Number(Number::from(n as i64))
        }
        Some(Kind::NumberValue(n)) => Number::from_f64(n).map_or(Value::Null, Value::Number),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.into_iter().map(from_proto_value).collect())
        }
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .into_iter()
                .map(|(k, v)| (k, from_proto_value(v)))
                .collect(),
        ),
    }
}
