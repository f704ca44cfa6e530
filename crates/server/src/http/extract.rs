//! Extractors that turn every malformed request into a problem+json answer with a stable code,
//! instead of axum's plain-text rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::Problem;

/// JSON body; 400 `malformed_json`, 415 `unsupported_media_type`, 413 `payload_too_large`,
/// 422 `invalid_body` (wrong types, out-of-range numbers, failed field rules). A number with a
/// zero fraction (`3.0`, `1e3`) is the integer it equals, as JSON Schema's `integer` says,
/// up to 2^53 (beyond, a float no longer names one integer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Content type, size and syntax checked by axum; the text kept as sent.
        let raw = match axum::Json::<Box<serde_json::value::RawValue>>::from_request(req, state).await {
            Ok(axum::Json(raw)) => raw,
            Err(rejection) => return Err(json_problem(&rejection)),
        };
        let typed = |text: &str| {
            serde_path_to_error::deserialize::<_, T>(&mut serde_json::Deserializer::from_str(text))
                .map_err(|e| Problem::invalid(e.to_string()))
        };
        match typed(raw.get()) {
            Ok(v) => Ok(Json(v)),
            // Only a body that failed is read again as a tree, for its integral floats.
            Err(problem) => {
                let mut value: serde_json::Value = serde_json::from_str(raw.get()).map_err(|_| problem.clone())?;
                if !integral_floats_to_integers(&mut value) {
                    return Err(problem);
                }
                serde_path_to_error::deserialize::<_, T>(&value).map(Json).map_err(|e| Problem::invalid(e.to_string()))
            }
        }
    }
}

/// Rewrites every number with a zero fraction and a magnitude up to 2^53 as an integer;
/// whether it changed anything.
fn integral_floats_to_integers(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            #[allow(clippy::cast_possible_truncation)]
            Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => {
                *v = Value::from(f as i64);
                true
            }
            _ => false,
        },
        Value::Array(items) => items.iter_mut().fold(false, |changed, i| integral_floats_to_integers(i) | changed),
        Value::Object(fields) => fields.values_mut().fold(false, |changed, f| integral_floats_to_integers(f) | changed),
        _ => false,
    }
}

fn json_problem(rejection: &JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            Problem::invalid(e.body_text().replace("Failed to deserialize the JSON body into the target type: ", ""))
        }
        JsonRejection::JsonSyntaxError(_) => Problem::bad_request("malformed_json", "the body is not valid JSON"),
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is larger than allowed")
        }
        other => Problem::bad_request("unreadable_body", other.body_text()),
    }
}

/// Query string; 400 `invalid_query` naming the parameter. A parameter sent empty (`?cursor=`,
/// as HTML forms send a field left blank) counts as not sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or("");
        let sent = |pair: &&str| pair.split_once('=').is_some_and(|(_, v)| !v.is_empty());
        // Rebuilt only when something was sent blank; most queries are read as they came.
        let rebuilt;
        let uri = if raw.is_empty() || raw.split('&').all(|pair| sent(&pair)) {
            &parts.uri
        } else {
            let query = raw.split('&').filter(sent).collect::<Vec<_>>().join("&");
            rebuilt = format!("/?{query}")
                .parse::<axum::http::Uri>()
                .map_err(|_| Problem::bad_request("invalid_query", "the query string is malformed"))?;
            &rebuilt
        };
        axum::extract::Query::<T>::try_from_uri(uri).map(|q| Query(q.0)).map_err(|e: QueryRejection| {
            Problem::bad_request("invalid_query", e.body_text().replace("Failed to deserialize query string: ", ""))
        })
    }
}

/// Path parameters; 400 `invalid_path` (e.g. an id that is not a number).
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| Problem::bad_request("invalid_path", e.body_text()))
    }
}
