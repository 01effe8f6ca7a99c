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
    let options = Options {
        token: token.map(str::to_string),
        config_file: None,
    };
    tokio::spawn(serve(listener, fake_daemon(), options));
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

/// Serve with short timeouts and `connections` slots.
async fn start_limited(token: Option<&str>, connections: usize) -> SocketAddr {
    let limits = Limits {
        connections,
        headers: Duration::from_millis(300),
        body: Duration::from_millis(300),
        lifetime: Duration::from_secs(5),
        grace: Duration::from_millis(100),
    };
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = Options {
        token: token.map(str::to_string),
        config_file: None,
    };
    let app = router(fake_daemon(), options, limits.body);
    tokio::spawn(serve_with(listener, app, limits));
    addr
}

/// Send `raw` and read until the server closes or 2 s pass.
async fn call_within(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read() {
    let addr = start_limited(Some("s3cret"), 4).await;
    // A body announced but never sent: the refusal comes on the headers alone.
    let raw = "POST /api/maintenance HTTP/1.1\r\nHost: x\r\nContent-Length: 1900000\r\n\r\n";
    let started = std::time::Instant::now();
    let out = call_within(addr, raw.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn bodies_longer_than_the_cap_are_refused() {
    let addr = start_limited(Some("s3cret"), 4).await;
    let big = format!(r#"{{"on":true,"x":"{}"}}"#, "y".repeat(MAX_BODY));
    let out = call_within(
        addr,
        post("/api/maintenance", Some("s3cret"), &big).as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    let chunked = format!(
        "POST /api/maintenance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let out = call_within(addr, chunked.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
}

#[tokio::test]
async fn a_slow_body_times_out() {
    let addr = start_limited(Some("s3cret"), 4).await;
    let raw = "POST /api/maintenance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"on\"";
    let out = call_within(addr, raw.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    let addr = start_limited(None, 4).await;
    let started = std::time::Instant::now();
    let out = call_within(addr, b"GET /api/st").await;
    assert!(started.elapsed() < Duration::from_secs(1), "{out}");
    // Kept alive after an answer, then idle: closed as well.
    let keep = "GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n";
    let started = std::time::Instant::now();
    let out = call_within(addr, keep.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_slot() {
    let addr = start_limited(None, 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let get = "GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let out = call_within(addr, get.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // Served once a silent one timed out (300 ms), not before.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let addr = start(None).await;
    let get = "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (code, body) = call(addr, get.to_string()).await;
    assert_eq!(code, 404);
    assert!(body.starts_with(r#"{"error":"#) || body.contains(r#""ok":false"#));
}

#[tokio::test]
async fn cross_origin_and_non_json_changes_are_refused_on_the_headers() {
    let addr = start(Some("s3cret")).await;
    let with = |extra: &str, ctype: &str| {
        format!(
            "POST /api/maintenance HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\
             Authorization: Bearer s3cret\r\n{extra}Content-Type: {ctype}\r\nContent-Length: 11\r\n\r\n{{\"on\":true}}"
        )
    };
    let (code, body) = call(
        addr,
        with("Origin: http://evil.example\r\n", "application/json"),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("cross-origin"), "{body}");
    let (code, body) = call(addr, with("Origin: null\r\n", "application/json")).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = call(addr, with("", "application/x-www-form-urlencoded")).await;
    assert_eq!(code, 415, "{body}");
    let (code, body) = call(addr, with("", "text/plain")).await;
    assert_eq!(code, 415, "{body}");
    let same = with(
        "Origin: http://127.0.0.1:8080\r\n",
        "application/json; charset=utf-8",
    );
    let (code, body) = call(addr, same).await;
    assert_eq!(code, 200, "{body}");
}

/// Serve with a token and a configuration file in a fresh directory.
async fn start_with_file(text: &str) -> (SocketAddr, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("carpd.toml");
    std::fs::write(&file, text).unwrap();
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = Options {
        token: Some("s3cret".into()),
        config_file: Some(file.clone()),
    };
    tokio::spawn(serve(listener, fake_daemon(), options));
    (addr, dir, file)
}

#[tokio::test]
async fn the_settings_form_writes_the_file_and_reloads() {
    let text = "[[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\naddresses = [\"192.0.2.50/24\"]\n";
    let (addr, _dir, file) = start_with_file(text).await;
    let get = "GET /api/settings HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (code, body) = call(addr, get.to_string()).await;
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["vhosts"][0]["vhid"], 1);
    let version = listed["version"].as_str().unwrap().to_owned();
    let change = |advskew: &str| {
        serde_json::json!({
            "action": "add", "version": version,
            "vhost": { "carpdev": "eth0", "vhid": "2", "addresses": "198.51.100.60/24",
                       "pass": "hunter22", "advbase": "1", "advskew": advskew },
        })
        .to_string()
    };
    let (code, body) = call(addr, post("/api/settings", Some("s3cret"), &change("300"))).await;
    assert_eq!(code, 422, "{body}");
    let refused: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(refused["fields"]["advskew"].is_string(), "{body}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    let (code, body) = call(addr, post("/api/settings", Some("s3cret"), &change("100"))).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("written and reloaded: Reload"), "{body}");
    assert!(std::fs::read_to_string(&file).unwrap().contains("vhid = 2"));
    let (code, body) = call(addr, get.to_string()).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""has_pass":true"#), "{body}");
    assert!(!body.contains("hunter22"), "the password is shown: {body}");
    // Without the token nothing is read; a form up to its own cap is read.
    let (code, _) = call(addr, post("/api/settings", None, &change("100"))).await;
    assert_eq!(code, 401);
    let padded = format!("{}{}", change("100"), " ".repeat(MAX_BODY));
    let (code, body) = call(addr, post("/api/settings", Some("s3cret"), &padded)).await;
    assert_eq!(code, 409, "stale version, so read and parsed: {body}");
    let huge = format!("{}{}", change("100"), " ".repeat(MAX_SETTINGS_BODY));
    let out = call_within(
        addr,
        post("/api/settings", Some("s3cret"), &huge).as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
}

#[tokio::test]
async fn the_page_has_a_state_sync_section_fed_from_status() {
    let addr = start(None).await;
    let get = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (code, body) = call(addr, get.to_string()).await;
    assert_eq!(code, 200);
    // Hidden until /api/status carries `sync`; the fields are SyncView's.
    assert!(body.contains(r#"<div id="sync" style="display:none">"#));
    for js in [
        "renderSync(st.sync)",
        "s.running",
        "s.internal_entries",
        "s.external_entries",
        "s.last_commit_age_secs",
    ] {
        assert!(body.contains(js), "no {js:?} in the page");
    }
}
