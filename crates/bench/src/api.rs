//! A thin client of the flashback HTTP API: JSON calls with clear errors, and problem+json.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The keep-alive HTTP/1.1 client every call and every load client shares.
pub fn http_client(pool: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(300))
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

/// The `code` of a problem+json body, if it is one: the one field read in place (the load
/// clients judge every refusal by it, and a map of every field cost the bench's share of the
/// two cores it measures on).
pub fn problem_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Coded<'a> {
        #[serde(borrow)]
        code: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Coded<'_>>(body).ok().map(|p| p.code.into_owned())
}

/// Where an API call went wrong: status and problem code, when the server answered.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The problem's `code`.
    pub code: Option<String>,
    /// The `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
    body: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: String = self.body.chars().take(300).collect();
        write!(f, "HTTP {}: {body}", self.status)
    }
}

impl std::error::Error for ApiError {}

/// One deployment's API.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: url::Url,
}

impl Api {
    /// The API at `base` (`http://host:port/`).
    pub fn new(http: reqwest::Client, base: url::Url) -> Self {
        Self { http, base }
    }

    /// The base URL (`http://host:port/`).
    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// The shared HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `path` (no leading slash) under the base.
    pub fn url(&self, path: &str) -> anyhow::Result<url::Url> {
        self.base.join(path).with_context(|| format!("url for {path}"))
    }

    /// Sends one JSON request; a non-2xx answer is an [`ApiError`] inside the error.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let mut req = self.http.request(method.clone(), self.url(path)?);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| format!("{method} /{path}"))?;
        let status = resp.status();
        let retry_after =
            resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let bytes = resp.bytes().await.with_context(|| format!("reading {method} /{path}"))?;
        if !status.is_success() {
            let err = ApiError {
                status,
                code: problem_code(&bytes),
                retry_after,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            };
            return Err(anyhow::Error::new(err).context(format!("{method} /{path}")));
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{method} /{path}: unexpected body"))
    }

    /// `GET path` as `token`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, token: Option<&str>) -> anyhow::Result<T> {
        self.call(Method::GET, path, token, None).await
    }

    /// `POST path` with a JSON body as `token`.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, token: Option<&str>, body: &Value) -> anyhow::Result<T> {
        self.call(Method::POST, path, token, Some(body)).await
    }
}

/// The [`ApiError`] inside `e`, if the server answered.
pub fn api_error(e: &anyhow::Error) -> Option<&ApiError> {
    e.downcast_ref::<ApiError>()
}

/// A string field of a JSON object, or a clear error.
pub fn field<'a>(v: &'a Value, name: &str, what: &str) -> anyhow::Result<&'a str> {
    match v.get(name).and_then(Value::as_str) {
        Some(s) => Ok(s),
        None => bail!("{what}: no string field {name:?} in {v}"),
    }
}
