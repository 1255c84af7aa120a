//! The API writes every field of what it answers: an `Option` is `null`,
//! never absent (no response type skips a field when serializing). utoipa
//! marks `Option` fields not required, which is right for requests but would
//! tell a client that an answer may lack them. So each object schema that
//! only ever answers (not reachable from a request body or parameter) lists
//! all its properties as required; the fuzz run's schema check holds the
//! API to it.

use std::collections::BTreeSet;

use serde_json::Value;

const PREFIX: &str = "#/components/schemas/";

/// The component schemas `value` refers to, directly.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref")
                && let Some(name) = r.strip_prefix(PREFIX)
            {
                out.push(name.to_owned());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The component schemas a request can carry: those its bodies and
/// parameters refer to, and what those refer to in turn.
fn inputs(doc: &Value) -> BTreeSet<String> {
    let mut pending = Vec::new();
    for item in doc["paths"].as_object().into_iter().flatten() {
        for op in item.1.as_object().into_iter().flatten().map(|(_, op)| op) {
            refs(&op["requestBody"], &mut pending);
            refs(&op["parameters"], &mut pending);
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(name) = pending.pop() {
        if seen.insert(name.clone()) {
            refs(&doc["components"]["schemas"][&name], &mut pending);
        }
    }
    seen
}

/// Every object schema within `schema` requires all its properties.
fn require_all(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                let missing: Vec<Value> = props.keys().cloned().map(Value::String).collect();
                let required = map
                    .entry("required")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(names) = required {
                    for name in missing {
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                }
            }
            map.values_mut().for_each(require_all);
        }
        Value::Array(items) => items.iter_mut().for_each(require_all),
        _ => {}
    }
}

/// Marks every field of every answer-only schema required.
pub fn require_every_field(doc: &mut Value) {
    let inputs = inputs(doc);
    if let Some(Value::Object(schemas)) =
        doc.get_mut("components").and_then(|c| c.get_mut("schemas"))
    {
        for (name, schema) in schemas.iter_mut() {
            if !inputs.contains(name) {
                require_all(schema);
            }
        }
    }
}
