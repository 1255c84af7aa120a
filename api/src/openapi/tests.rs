use std::collections::BTreeSet;

use serde_json::Value;

use super::{access, json};
use crate::{authz::pep::Access, routes};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn document() -> Value {
    serde_json::from_str(&json()).unwrap()
}

/// Every operation of the document: `(METHOD, path)` and the operation.
fn operations(doc: &Value) -> Vec<((String, String), Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: `{method}` is not a method the router serves"
            );
            out.push(((method.to_uppercase(), path.clone()), op.clone()));
        }
    }
    out
}

#[test]
fn every_route_is_documented_once_with_its_access() {
    let doc = document();
    let ops = operations(&doc);
    let table = routes::table();
    for row in &table {
        let key = (row.method.to_string(), format!("/api{}", row.path));
        let found: Vec<&Value> = ops
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, op)| op)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{} {}: annotate its handler with #[utoipa::path] and name it in openapi::ApiDoc",
            key.0,
            key.1
        );
        let op = found[0];
        let perms: Vec<&str> = op["x-permissions"]
            .as_array()
            .unwrap_or_else(|| panic!("{key:?} has no x-permissions"))
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(perms, access::permissions(row.access), "{key:?}");
        assert_eq!(op["x-access"], access::kind(row.access), "{key:?}");
        let bearer = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get(super::BEARER).is_some()));
        let guarded = matches!(row.access, Access::Authenticated | Access::Any(_));
        assert_eq!(bearer, guarded, "{key:?}: bearer security");
        let description = op["description"].as_str().unwrap_or_default();
        for p in &perms {
            assert!(description.contains(&format!("`{p}`")), "{key:?}");
        }
        let statuses = op["responses"].as_object().unwrap();
        if guarded {
            assert!(statuses.contains_key("401"), "{key:?}");
        }
        if let Access::Any(_) = row.access {
            assert!(statuses.contains_key("403"), "{key:?}");
        }
    }
    let ids: BTreeSet<&str> = ops
        .iter()
        .map(|(_, op)| op["operationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), ops.len(), "operation ids are unique");
    let documented: BTreeSet<_> = ops.iter().map(|(k, _)| k.clone()).collect();
    let served: BTreeSet<_> = table
        .iter()
        .map(|r| (r.method.to_string(), format!("/api{}", r.path)))
        .collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        extra.is_empty(),
        "documented but not in routes::table(): {extra:?}"
    );
}

#[test]
fn every_operation_answers_a_success_and_its_errors_with_the_error_body() {
    let doc = document();
    for (key, op) in operations(&doc) {
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses
                .keys()
                .any(|s| s.starts_with('2') || s.as_str() == "101"),
            "{key:?} documents no success"
        );
        for (status, response) in responses {
            let is_error = status.starts_with('4') || status.starts_with('5');
            // Health's 503 is its own report, not an error.
            if !is_error || (key.1 == "/api/health" && status == "503") {
                continue;
            }
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{key:?} {status}"
            );
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| d.contains('`')),
                "{key:?} {status}: name the error codes"
            );
        }
        if op.get("requestBody").is_some() {
            for status in ["400", "413", "415", "422"] {
                assert!(responses.contains_key(status), "{key:?} {status}");
            }
        }
    }
}

#[test]
fn the_error_schema_is_what_errors_look_like() {
    let doc = document();
    let schema = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(schema["required"], serde_json::json!(["error"]));
    let detail = &doc["components"]["schemas"]["ErrorDetail"];
    assert_eq!(
        detail["required"],
        serde_json::json!(["code", "message", "request_id"])
    );
    let body = crate::error::ErrorBody {
        error: crate::error::ErrorDetail {
            code: "not_found".into(),
            message: "user not found".into(),
            request_id: "r1".into(),
        },
    };
    assert_eq!(
        serde_json::to_value(body).unwrap(),
        serde_json::json!({"error": {"code": "not_found", "message": "user not found", "request_id": "r1"}})
    );
}

#[test]
fn named_enums_are_their_wire_names() {
    let doc = document();
    let keys: Vec<&str> = crate::authz::Perm::ALL.map(|p| p.as_str()).to_vec();
    assert_eq!(
        doc["components"]["schemas"]["Perm"]["enum"],
        serde_json::json!(keys)
    );
    assert_eq!(
        doc["components"]["schemas"]["ConversationStatus"]["enum"],
        serde_json::json!(["open", "pending", "resolved", "snoozed"])
    );
}

#[test]
fn committed_spec_is_current() {
    let committed = include_str!("../../../docs/openapi.json");
    assert!(
        committed == json(),
        "docs/openapi.json is stale: run `cargo run -p api --bin fastprep-api -- openapi > docs/openapi.json`"
    );
}

#[test]
fn answers_require_every_field_and_requests_only_what_they_need() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let required = |name: &str| -> Vec<String> {
        schemas[name]["required"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    // An answer: `null` when unassigned, never absent.
    assert!(required("Conversation").contains(&"assignee_id".to_owned()));
    assert!(required("Page_Message").contains(&"next_cursor".to_owned()));
    // A request: optional fields stay optional.
    assert!(required("UserEdit").is_empty());
    assert_eq!(required("Draft"), ["client_msg_id"]);
}
