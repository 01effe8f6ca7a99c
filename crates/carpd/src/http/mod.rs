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
//! - `GET /settings`, `GET /api/settings`: the settings form and the
//!   `[[vhost]]` tables of the configuration file (no passphrase);
//! - `POST /api/maintenance` `{"on": true}`, `POST /api/demote`
//!   `{"group": "carp", "by": 1}`, `POST /api/state`
//!   `{"vhid": 1, "to": "backup"}`, `POST /api/enable`
//!   `{"vhid": 1, "enabled": false}`, `POST /api/settings` (see
//!   [`settings::Change`]): changes, refused with 403 unless a token is
//!   configured, and with 401 unless the request carries
//!   `Authorization: Bearer TOKEN`.
//!
//! Errors are JSON `{"ok": false, "error": "..."}`.
//!
//! Cross-site requests: the token is the only credential, and the browser
//! never sends it by itself. The page keeps it in `sessionStorage` and puts
//! it in the `Authorization` header; there is no cookie and no HTTP
//! authentication a forged request could ride on. On top of that a change
//! must be `Content-Type: application/json` (an HTML form cannot send it, and
//! a script on another origin cannot send it, nor `Authorization`, without a
//! CORS preflight, which carpd never grants), and a request that carries an
//! `Origin` must come from the page's own origin (its host and port are the
//! `Host` header). Each check is made on the headers before a body is read.
//!
//! No client can use up carpd's memory or descriptors: the token is checked
//! on the headers before a body is read, bodies are capped at [`MAX_BODY`]
//! bytes ([`MAX_SETTINGS_BODY`] for the settings form), headers at
//! [`MAX_HEADER_BUF`], connections at a share of the
//! descriptor limit ([`crate::control::connection_cap`]), and headers, idle
//! keep-alive connections, bodies and whole connections all time out.

pub mod metrics;
pub mod settings;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::control::Envelope;
use crate::control::types::{Reply, Request};

/// The status page, served as is.
const STATUS_PAGE: &str = include_str!("status.html");

/// The settings page, served as is.
const SETTINGS_PAGE: &str = include_str!("settings.html");

/// The longest request body read (a change is a few dozen bytes of JSON).
pub const MAX_BODY: usize = 4096;

/// The longest settings form read (one vhost with many addresses).
pub const MAX_SETTINGS_BODY: usize = 16 * 1024;

/// hyper's read buffer, which bounds a request's headers (hyper's least is 8 KiB).
pub const MAX_HEADER_BUF: usize = 16 * 1024;

/// Connections served at once, before [`crate::control::connection_cap`].
const MAX_CONNECTIONS: usize = 64;

/// Bounds on time, so a slow or silent client gives its slot back.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Connections served at once; more wait in the kernel's backlog.
    connections: usize,
    /// For a request's headers, and for the next request on a kept-alive connection.
    headers: Duration,
    /// For the body of an authorised change.
    body: Duration,
    /// A connection is asked to close after this long (the request in flight
    /// finishes; the status page just reconnects) ...
    lifetime: Duration,
    /// ... and dropped this long after that (a client that stopped reading).
    grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: crate::control::connection_cap(MAX_CONNECTIONS),
            headers: Duration::from_secs(10),
            body: Duration::from_secs(10),
            lifetime: Duration::from_secs(60),
            grace: Duration::from_secs(5),
        }
    }
}

/// What the handlers share: a way to the daemon loop, the token, the body
/// timeout, the configuration file the settings page edits and the host name.
struct Api {
    to_daemon: mpsc::Sender<Envelope>,
    token: Option<String>,
    body_timeout: Duration,
    config_file: Option<PathBuf>,
    host: String,
    /// One settings change at a time (read, validate, write, reload).
    settings: tokio::sync::Mutex<()>,
}

/// Where the daemon's configuration came from, for the settings page.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The bearer token allowing changes; read-only without.
    pub token: Option<String>,
    /// The TOML file the daemon was started with; the settings page is
    /// read-only without one (a command-line configuration).
    pub config_file: Option<PathBuf>,
}

/// Bind the HTTP listener (at start-up, so a bad address fails the daemon).
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve HTTP on `listener` until the process ends, forwarding to `to_daemon`.
pub async fn serve(
    listener: TcpListener,
    to_daemon: mpsc::Sender<Envelope>,
    options: Options,
) -> io::Result<()> {
    let limits = Limits::default();
    serve_with(listener, router(to_daemon, options, limits.body), limits).await
}

/// The host name shown on the page (read once, when the server starts).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Accept connections while a slot is free and serve each under `limits`.
async fn serve_with(listener: TcpListener, app: Router, limits: Limits) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.connections.max(1)));
    loop {
        // A slot first, then accept: clients beyond the cap wait in the
        // kernel's backlog and hold none of carpd's descriptors.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.headers)
                .max_buf_size(MAX_HEADER_BUF);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                () = tokio::time::sleep(limits.lifetime) => conn.as_mut().graceful_shutdown(),
            }
            let _ = tokio::time::timeout(limits.grace, conn).await;
        });
    }
}

/// Return the router (separate from [`serve`] for tests).
fn router(to_daemon: mpsc::Sender<Envelope>, options: Options, body: Duration) -> Router {
    let api = Arc::new(Api {
        to_daemon,
        token: options.token,
        body_timeout: body,
        config_file: options.config_file,
        host: host_name(),
        settings: tokio::sync::Mutex::new(()),
    });
    Router::new()
        .route("/", get(page))
        .route("/settings", get(settings_page))
        .route("/api/settings", get(settings_get).post(settings_post))
        .route("/api/enable", post(enable))
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
    /// The settings page can write a file (a token and a configuration file).
    settings: bool,
    /// This host's name.
    host: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnableBody {
    vhid: Option<u8>,
    carpdev: Option<String>,
    enabled: bool,
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

async fn settings_page() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(SETTINGS_PAGE)).into_response()
}

async fn status(State(api): State<Arc<Api>>) -> Response {
    match api.ask(Request::Status).await {
        Ok(reply) => json(
            StatusCode::OK,
            &StatusBody {
                reply,
                actions: api.token.is_some(),
                settings: api.token.is_some() && api.config_file.is_some(),
                host: api.host.clone(),
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
        status.interfaces.as_deref().unwrap_or(&[]),
        status.groups.as_deref().unwrap_or(&[]),
        status.maintenance.unwrap_or(false),
        status.sync.as_ref(),
        // The wall clock belongs here, not in the loop: the state's start
        // time is now minus its age.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
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

async fn maintenance(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
    let b: MaintenanceBody = match api.change_body(&headers, body, MAX_BODY).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    api.change(Request::Maintenance { on: b.on }).await
}

async fn demote(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
    let b: DemoteBody = match api.change_body(&headers, body, MAX_BODY).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    api.change(Request::Demote {
        group: b.group,
        by: b.by,
    })
    .await
}

async fn state(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
    let b: StateBody = match api.change_body(&headers, body, MAX_BODY).await {
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

async fn enable(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
    let b: EnableBody = match api.change_body(&headers, body, MAX_BODY).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    api.change(Request::Enable {
        vhid: b.vhid,
        carpdev: b.carpdev,
        enabled: b.enabled,
    })
    .await
}

/// The settings form's answer: `ok`, a sentence, and errors by field.
#[derive(Serialize)]
struct SettingsReply<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    rejected: Option<&'a settings::Rejected>,
}

async fn settings_get(State(api): State<Arc<Api>>) -> Response {
    let Some(path) = api.config_file.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "carpd was started without --config FILE: there is no file to edit",
        );
    };
    match tokio::task::spawn_blocking(move || settings::load(&path)).await {
        Ok(Ok(s)) => {
            let mut body = serde_json::json!(s);
            body["ok"] = true.into();
            body["editable"] = api.token.is_some().into();
            json(StatusCode::OK, &body)
        }
        Ok(Err(r)) => error(StatusCode::INTERNAL_SERVER_ERROR, &r.error),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file"),
    }
}

async fn settings_post(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
    let change: settings::Change = match api.change_body(&headers, body, MAX_SETTINGS_BODY).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Some(path) = api.config_file.clone() else {
        return error(
            StatusCode::FORBIDDEN,
            "carpd was started without --config FILE: there is no file to edit",
        );
    };
    let _one = api.settings.lock().await;
    let written = tokio::task::spawn_blocking(move || settings::apply(&path, &change)).await;
    let version = match written {
        Ok(Ok(v)) => v,
        Ok(Err(r)) => {
            let code = if r.stale {
                StatusCode::CONFLICT
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let reply = SettingsReply {
                ok: false,
                message: None,
                version: None,
                rejected: Some(&r),
            };
            return json(code, &reply);
        }
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the write failed"),
    };
    // Written: now applied as SIGHUP would (a refusal here is a reload's, as
    // for a file edited by hand, and the reply says so).
    match api.ask(Request::Reload).await {
        Ok(reply) => {
            let code = if reply.ok {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            let text = reply.message.or(reply.error).unwrap_or_default();
            let r = settings::Rejected {
                error: format!("written, but the reload failed: {text}"),
                ..Default::default()
            };
            let reply = SettingsReply {
                ok: reply.ok,
                message: Some(format!("written and reloaded: {text}")),
                version: Some(version),
                rejected: (!reply.ok).then_some(&r),
            };
            json(code, &reply)
        }
        Err(r) => r.into_response(),
    }
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

    /// Check the token on the headers, then read (at most [`MAX_BODY`]
    /// bytes, within the body timeout) and parse the JSON body of a change.
    async fn change_body<T: serde::de::DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: Body,
        max: usize,
    ) -> Result<T, Refused> {
        self.authorise(headers)?;
        same_origin(headers)?;
        let too_long = || {
            Refused::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body longer than {max} bytes"),
            )
        };
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > max as u64) {
            return Err(too_long());
        }
        let body =
            match tokio::time::timeout(self.body_timeout, axum::body::to_bytes(body, max)).await {
                Ok(Ok(body)) => body,
                // Longer than announced (chunked), or the client went away.
                Ok(Err(_)) => return Err(too_long()),
                Err(_) => {
                    return Err(Refused::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request body too slow",
                    ));
                }
            };
        serde_json::from_slice(&body)
            .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
    }

    /// Refuse a change unless a token is configured and the request carries it.
    fn authorise(&self, headers: &HeaderMap) -> Result<(), Refused> {
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
        Ok(())
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

/// Refuse a change sent from another origin than the page's, and one that
/// is not JSON (what a cross-site HTML form could send without a preflight).
/// Clients that send no `Origin` (carpctl, curl) are not browsers on
/// another site and pass.
fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let json_type = value(header::CONTENT_TYPE)
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(Refused::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a change must be sent as Content-Type: application/json",
        ));
    }
    if let Some(origin) = value(header::ORIGIN) {
        let host = value(header::HOST).unwrap_or_default();
        let from = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if from.is_none_or(|o| host.is_empty() || !o.eq_ignore_ascii_case(host)) {
            return Err(Refused::new(
                StatusCode::FORBIDDEN,
                format!("cross-origin change refused (Origin {origin:?} is not this page)"),
            ));
        }
    }
    Ok(())
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
#[path = "tests.rs"]
mod test;
