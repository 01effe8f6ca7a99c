//! The HTTP status page, JSON API and Prometheus metrics (off unless `--http`).
//!
//! The server is a client of the daemon loop, exactly like `carpctl`: every
//! answer comes from a control [`Request`] sent over the loop's channel, so
//! no protocol state is shared. Endpoints:
//!
//! - `GET /`: a self-contained status page that polls `/api/status` every second;
//! - `GET /api/status`, `GET /api/stats`: the `carpctl status --json` reply
//!   (plus `actions`, whether changes are allowed) and the carpstats counters;
//! - `GET /metrics`: OpenMetrics text (see [`metrics`]);
//! - `POST /api/maintenance` `{"on": true}`, `POST /api/demote`
//!   `{"group": "carp", "by": 1}`, `POST /api/state`
//!   `{"vhid": 1, "to": "backup"}`: changes, refused with 403 unless a token
//!   is configured, and with 401 unless the request carries
//!   `Authorization: Bearer TOKEN`.
//!
//! Errors are JSON `{"ok": false, "error": "..."}`. Browsers cannot send the
//! `Authorization` header cross-origin without a CORS preflight, which is
//! never granted, so another site cannot drive the changes (no CSRF).

pub mod metrics;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::control::Envelope;
use crate::control::types::{Reply, Request};

/// The status page, served as is.
const STATUS_PAGE: &str = include_str!("status.html");

/// What the handlers share: a way to the daemon loop and the token.
struct Api {
    to_daemon: mpsc::Sender<Envelope>,
    token: Option<String>,
}

/// Bind the HTTP listener (at start-up, so a bad address fails the daemon).
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve HTTP on `listener` until the process ends, forwarding to `to_daemon`.
pub async fn serve(
    listener: TcpListener,
    to_daemon: mpsc::Sender<Envelope>,
    token: Option<String>,
) -> io::Result<()> {
    axum::serve(listener, router(to_daemon, token)).await
}

/// Return the router (separate from [`serve`] for tests).
fn router(to_daemon: mpsc::Sender<Envelope>, token: Option<String>) -> Router {
    let api = Arc::new(Api { to_daemon, token });
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/api/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/api/maintenance", post(maintenance))
        .route("/api/demote", post(demote))
        .route("/api/state", post(state))
        .fallback(not_found)
        .with_state(api)
}

/// A refused request: a status code and a sentence, answered as JSON.
#[derive(Debug)]
struct Refused {
    code: StatusCode,
    message: String,
}

impl Refused {
    fn new(code: StatusCode, message: impl Into<String>) -> Refused {
        Refused {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.code, &self.message)
    }
}

/// `/api/status`: the control reply plus whether changes are allowed.
#[derive(Debug, Serialize)]
struct StatusBody {
    #[serde(flatten)]
    reply: Reply,
    /// A token is configured: the page shows its buttons.
    actions: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    on: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoteBody {
    group: Option<String>,
    by: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    vhid: u8,
    carpdev: Option<String>,
    to: String,
}

async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(STATUS_PAGE)).into_response()
}

async fn status(State(api): State<Arc<Api>>) -> Response {
    match api.ask(Request::Status).await {
        Ok(reply) => json(
            StatusCode::OK,
            &StatusBody {
                reply,
                actions: api.token.is_some(),
            },
        ),
        Err(r) => r.into_response(),
    }
}

async fn stats(State(api): State<Arc<Api>>) -> Response {
    match api.ask(Request::Stats).await {
        Ok(reply) => json(StatusCode::OK, &reply.stats.unwrap_or_default()),
        Err(r) => r.into_response(),
    }
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    // Both replies come from the loop; counters can move between the two asks,
    // which a scrape tolerates (each value is a consistent snapshot).
    let status = match api.ask(Request::Status).await {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let stats = match api.ask(Request::Stats).await {
        Ok(r) => r.stats.unwrap_or_default(),
        Err(r) => return r.into_response(),
    };
    let text = metrics::render(
        &stats,
        status.vhosts.as_deref().unwrap_or(&[]),
        status.groups.as_deref().unwrap_or(&[]),
        status.maintenance.unwrap_or(false),
    );
    match text {
        Ok(text) => (
            [
                (header::CONTENT_TYPE, metrics::CONTENT_TYPE),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        ),
    }
}

async fn maintenance(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    let b: MaintenanceBody = match api.change_body(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    api.change(Request::Maintenance { on: b.on }).await
}

async fn demote(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    let b: DemoteBody = match api.change_body(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    api.change(Request::Demote {
        group: b.group,
        by: b.by,
    })
    .await
}

async fn state(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    let b: StateBody = match api.change_body(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    api.change(Request::State {
        vhid: b.vhid,
        carpdev: b.carpdev,
        to: b.to,
    })
    .await
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such page; try /, /api/status, /api/stats or /metrics",
    )
}

impl Api {
    /// Send `request` to the daemon loop; a failed reply is still `Ok`.
    async fn ask(&self, request: Request) -> Result<Reply, Refused> {
        let unavailable =
            || Refused::new(StatusCode::SERVICE_UNAVAILABLE, "carpd is shutting down");
        let (tx, rx) = oneshot::channel();
        self.to_daemon
            .send((request, tx))
            .await
            .map_err(|_| unavailable())?;
        rx.await.map_err(|_| unavailable())
    }

    /// Check the token, then parse the JSON body of a change.
    fn change_body<T: serde::de::DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<T, Refused> {
        let Some(token) = &self.token else {
            return Err(Refused::new(
                StatusCode::FORBIDDEN,
                "changes over HTTP are disabled; start carpd with --http-token to allow them",
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_token(g.trim().as_bytes(), token.as_bytes())) {
            return Err(Refused::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token; send Authorization: Bearer TOKEN",
            ));
        }
        serde_json::from_slice(body)
            .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
    }

    /// Forward an authorised change and map the reply to a status code.
    async fn change(&self, request: Request) -> Response {
        match self.ask(request).await {
            Ok(reply) if reply.ok => json(StatusCode::OK, &reply),
            Ok(reply) => json(StatusCode::CONFLICT, &reply),
            Err(r) => r.into_response(),
        }
    }
}

/// Compare tokens without an early exit on the first differing byte.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json<T: Serialize>(code: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => (
            code,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the reply"),
    }
}

fn error(code: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "ok": false, "error": message }).to_string();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod test {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fake daemon loop answering every request with its debug text.
    fn fake_daemon() -> mpsc::Sender<Envelope> {
        let (tx, mut rx) = mpsc::channel::<Envelope>(4);
        tokio::spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let r = match request {
                    Request::State { vhid: 9, .. } => Reply::failed("no vhid 9 is configured"),
                    other => Reply::done(format!("{other:?}")),
                };
                let _ = reply.send(r);
            }
        });
        tx
    }

    /// Send one raw HTTP/1.1 request; return the status code and body.
    async fn call(addr: SocketAddr, raw: String) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (code, body)
    }

    fn post(path: &str, auth: Option<&str>, body: &str) -> String {
        let auth = auth
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    async fn start(token: Option<&str>) -> SocketAddr {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, fake_daemon(), token.map(str::to_string)));
        addr
    }

    #[tokio::test]
    async fn changes_are_forbidden_without_a_configured_token() {
        let addr = start(None).await;
        let (code, body) = call(addr, post("/api/maintenance", Some("x"), r#"{"on":true}"#)).await;
        assert_eq!(code, 403);
        assert!(body.contains("--http-token"), "{body}");
        let get = "GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let (code, body) = call(addr, get.to_string()).await;
        assert_eq!(code, 200);
        assert!(body.contains(r#""actions":false"#), "{body}");
    }

    #[tokio::test]
    async fn changes_need_the_right_bearer_token() {
        let addr = start(Some("s3cret")).await;
        for auth in [None, Some("wrong"), Some("s3cre")] {
            let (code, body) = call(addr, post("/api/maintenance", auth, r#"{"on":true}"#)).await;
            assert_eq!(code, 401, "{auth:?}: {body}");
        }
        let (code, body) = call(
            addr,
            post("/api/maintenance", Some("s3cret"), r#"{"on":true}"#),
        )
        .await;
        assert_eq!(
            (code, body.contains("Maintenance { on: true }")),
            (200, true)
        );
        let (code, body) = call(addr, post("/api/maintenance", Some("s3cret"), "{}")).await;
        assert_eq!(code, 400, "{body}");
        let bad_vhid = r#"{"vhid":9,"to":"backup"}"#;
        let (code, body) = call(addr, post("/api/state", Some("s3cret"), bad_vhid)).await;
        assert_eq!(code, 409);
        assert!(body.contains("no vhid 9 is configured"), "{body}");
    }

    #[tokio::test]
    async fn unknown_paths_get_a_json_404() {
        let addr = start(None).await;
        let get = "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let (code, body) = call(addr, get.to_string()).await;
        assert_eq!(code, 404);
        assert!(body.starts_with(r#"{"error":"#) || body.contains(r#""ok":false"#));
    }
}
