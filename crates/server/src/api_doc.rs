//! The OpenAPI document as served: what every feature's route annotations say, finished with
//! what holds for every route alike, so the document tells the truth about answers the routes
//! do not list one by one.
//!
//! - Problems are `application/problem+json` (RFC 9457), which is what the server sends.
//! - Every operation can answer what the shared layers answer: `500 internal`, `503`
//!   (`overloaded`, `timeout`, `store_unavailable`, `contention`); with a bearer token `401` and
//!   `403`; with a body `413`, `415`, `422` and `408` (a body that stalls); with parameters `400`;
//!   with an id in its path `404`.
//! - An optional query parameter sent empty counts as not sent (`http::extract::Query`):
//!   `allowEmptyValue`.
//! - A `text/event-stream` answer is described event by event: each event an object whose
//!   `data` is JSON of the schema the route names.

use serde_json::{Map, Value, json};

const PROBLEM_REF: &str = "#/components/schemas/Problem";
const PROBLEM_TYPE: &str = "application/problem+json";

/// The statuses an operation can answer because of what it takes, with what each means.
fn shared_statuses(op: &Map<String, Value>, path_has_id: bool) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![
        ("500", "an unexpected error (`internal`); the cause is logged, never returned"),
        (
            "503",
            "`overloaded`, `timeout`, `store_unavailable` or `contention`: nothing was done; retry after `Retry-After`",
        ),
    ];
    if op.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty()) {
        out.push(("401", "no bearer token (`unauthenticated`), or an invalid or expired one (`invalid_token`)"));
        out.push(("403", "the token's role may not do this (`forbidden`)"));
    }
    if op.contains_key("requestBody") {
        out.push(("400", "the body is not valid JSON (`malformed_json`), or a parameter is malformed"));
        out.push(("408", "the body did not arrive in time (`request_timeout`)"));
        out.push(("413", "the body is larger than the server accepts (`payload_too_large`)"));
        out.push(("415", "the body was not sent as `application/json` (`unsupported_media_type`)"));
        out.push(("422", "a field is missing, unknown, of the wrong type or breaks its rule (`invalid_body`)"));
    }
    if op.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty()) {
        out.push(("400", "a parameter is malformed or out of range"));
    }
    if path_has_id {
        out.push(("404", "nothing by that id"));
    }
    out
}

/// Moves problem bodies to their media type and adds the shared statuses an operation does
/// not list itself.
fn finish_operation(op: &mut Map<String, Value>, path_has_id: bool) {
    let shared = shared_statuses(op, path_has_id);
    for param in op.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
        let required = param.get("required").and_then(Value::as_bool).unwrap_or(false);
        if param.get("in").and_then(Value::as_str) == Some("query") && !required {
            param["allowEmptyValue"] = Value::Bool(true);
        }
    }
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { return };
    for response in responses.values_mut() {
        let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) else { continue };
        let is_problem = content
            .get("application/json")
            .and_then(|c| c.pointer("/schema/$ref"))
            .and_then(Value::as_str)
            .is_some_and(|r| r == PROBLEM_REF);
        if is_problem && let Some(body) = content.remove("application/json") {
            content.insert(PROBLEM_TYPE.to_owned(), body);
        }
        if let Some(schema) = content.get_mut("text/event-stream").and_then(|c| c.get_mut("schema")) {
            *schema = event_schema(schema.take());
        }
    }
    for (status, description) in shared {
        responses.entry(status).or_insert_with(
            || json!({"description": description, "content": {PROBLEM_TYPE: {"schema": {"$ref": PROBLEM_REF}}}}),
        );
    }
}

/// One Server-Sent Event whose `data` is JSON of `data`.
fn event_schema(data: Value) -> Value {
    json!({
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer", "minimum": 0},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
        },
    })
}

/// Finishes the document (see the module's documentation).
pub fn finish(mut doc: Value) -> Value {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let path_has_id = path.contains('{');
            let Some(item) = item.as_object_mut() else { continue };
            for (method, op) in item.iter_mut() {
                let is_method = matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch" | "head");
                if let (true, Some(op)) = (is_method, op.as_object_mut()) {
                    finish_operation(op, path_has_id);
                }
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_get_their_media_type_and_shared_statuses_are_added_once() {
        let problem = json!({"content": {"application/json": {"schema": {"$ref": PROBLEM_REF}}}});
        let doc = json!({"paths": {"/things/{id}": {"post": {
            "security": [{"bearer": []}],
            "requestBody": {"content": {}},
            "parameters": [{"name": "id", "in": "path"}],
            "responses": {"200": {"content": {"application/json": {"schema": {"type": "object"}}}},
                          "404": problem, "422": {"description": "mine"}}
        }}}});
        let doc = finish(doc);
        let r = &doc["paths"]["/things/{id}"]["post"]["responses"];
        assert!(r["200"]["content"]["application/json"].is_object(), "success bodies stay JSON");
        assert!(r["404"]["content"][PROBLEM_TYPE].is_object());
        assert!(r["404"]["content"]["application/json"].is_null());
        assert_eq!(r["422"]["description"], "mine", "a route's own entry is kept");
        for status in ["400", "401", "403", "408", "413", "415", "500", "503"] {
            assert_eq!(r[status]["content"][PROBLEM_TYPE]["schema"]["$ref"], PROBLEM_REF, "{status}");
        }
    }
}
