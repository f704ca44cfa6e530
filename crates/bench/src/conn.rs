//! The load clients' HTTP: each client owns one keep-alive HTTP/1.1 connection (hyper's
//! connection-level client), opened again after a failure.
//!
//! Why not the shared `reqwest` client the rest of the bench uses: the load generator shares
//! this machine's two cores with the server it measures. Through `reqwest` a request cost the
//! bench ~23 µs of CPU (parsing its URL, a pool checkout under a lock, a connection task woken
//! through channels); here it is built from parts prepared once (path, `Host`, each buyer's
//! `Authorization` value) and the connection is driven inside the client's own task. Like
//! `wrk`, the clients speak plain HTTP; a TLS deployment is measured at its plain port.

use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::load::Outcome;

/// How long one request may take before the client gives up on it and its connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the load goes: `host:port`, the `Host` header and the base URL's path.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: String,
    host: HeaderValue,
    prefix: String,
}

impl Endpoint {
    /// The server at `base` (`http://host:port/`); `https` is refused (see the module).
    pub fn new(base: &url::Url) -> anyhow::Result<Self> {
        anyhow::ensure!(
            base.scheme() == "http",
            "load clients speak plain HTTP/1.1: point the bench at an instance's or the proxy's http:// address, not {base}"
        );
        let host = base.host_str().ok_or_else(|| anyhow::anyhow!("{base}: no host"))?;
        let port = base.port_or_known_default().unwrap_or(80);
        let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let host = HeaderValue::from_str(&addr)?;
        Ok(Self { addr, host, prefix: base.path().trim_end_matches('/').to_owned() })
    }

    /// The request target of `path` (no leading slash) under the base URL, parsed once.
    pub fn path(&self, path: &str) -> anyhow::Result<Uri> {
        let full = format!("{}/{path}", self.prefix);
        full.parse().with_context(|| format!("{full:?} is not a request path"))
    }

    /// A request for `path` (from [`Endpoint::path`]) with `authorization` and an empty body.
    pub fn request(&self, method: Method, path: &Uri, authorization: &HeaderValue) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.method_mut() = method;
        *req.uri_mut() = path.clone();
        let headers = req.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(hyper::header::AUTHORIZATION, authorization.clone());
        req
    }
}

type Driver = Pin<Box<http1::Connection<TokioIo<TcpStream>, Empty<Bytes>>>>;

/// One client's connection.
pub struct Conn {
    endpoint: Endpoint,
    open: Option<(http1::SendRequest<Empty<Bytes>>, Driver)>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("addr", &self.endpoint.addr).field("open", &self.open.is_some()).finish()
    }
}

impl Conn {
    /// A client of `endpoint`; it connects on its first request.
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint, open: None }
    }

    /// Sends `req` and reads the whole answer; a transport failure is an [`Outcome::Error`] by
    /// kind and closes the connection (the next request opens another).
    pub async fn send(&mut self, req: Request<Empty<Bytes>>) -> Result<(StatusCode, Bytes), Outcome> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(req)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(kind)) => {
                self.open = None;
                Err(Outcome::Error(kind.to_owned()))
            }
            Err(_) => {
                self.open = None;
                Err(Outcome::Error("timeout".to_owned()))
            }
        }
    }

    async fn exchange(&mut self, req: Request<Empty<Bytes>>) -> Result<(StatusCode, Bytes), &'static str> {
        if self.open.as_ref().is_none_or(|(sender, _)| sender.is_closed()) {
            let stream = TcpStream::connect(&self.endpoint.addr).await.map_err(|_| "connect")?;
            stream.set_nodelay(true).map_err(|_| "connect")?;
            let (sender, driver) = http1::handshake(TokioIo::new(stream)).await.map_err(|_| "connect")?;
            self.open = Some((sender, Box::pin(driver)));
        }
        let Some((sender, driver)) = self.open.as_mut() else { return Err("connect") };
        // The connection is driven here, in this client's task, while the answer is awaited.
        let answer = async {
            sender.ready().await.map_err(|_| "transport")?;
            let resp = sender.send_request(req).await.map_err(|_| "transport")?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|_| "body")?.to_bytes();
            Ok((status, body))
        };
        tokio::select! {
            biased;
            r = answer => r,
            _ = driver.as_mut() => Err("transport"),
        }
    }
}
