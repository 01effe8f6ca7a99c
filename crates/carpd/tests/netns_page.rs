//! Root-only test of the settings page (issue 11, "the page, at pfSense's
//! level"): a new vhost added through each node's page in a real headless
//! chromium, written to the node's configuration file and elected.
//!
//! Root only, ignored by default: `cargo test -p carpd --test netns_page --
//! --include-ignored`. Needs Debian's `chromium`. Screenshots of the status
//! page (MASTER, BACKUP, maintenance) and of the settings form land in
//! `target/test-artifacts/` (`docs/page-*.png` are copies).

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Lab;
use common::daemon::{carpctl_ok, wait_single_master};

const PASS: &str = "page-secret";
const TOKEN: &str = "page-tok3n";
/// Bound for a first election (master-down of the worst node + slack).
const ELECTION: Duration = Duration::from_secs(8);
/// Where the page listens inside a host's namespace.
const HTTP: &str = "127.0.0.1:8080";
/// The vhost added through the pages.
const NEW_VIP: &str = "198.51.100.60";
const NEW_VIP6: &str = "2001:db8::60";

/// Write a node's file: host-wide settings and vhid 1 with `advskew`.
fn write_config(file: &Path, state: &Path, advskew: u8) {
    let text = format!(
        "# written by the test; the settings page keeps this comment\n\
         preempt = true\nstate_dir = {state:?}\nhttp = \"{HTTP}\"\nhttp_token = \"{TOKEN}\"\n\n\
         [[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\nadvbase = 1\nadvskew = {advskew}\n\
         pass = \"{PASS}\"\naddresses = [\"192.0.2.50/24\"]\n"
    );
    std::fs::write(file, text).expect("write config");
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// The chromium binary, if installed.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A chromium driven over `--remote-debugging-pipe` (DevTools protocol,
/// NUL-terminated JSON on fds 3 and 4, here two FIFOs), running headless
/// inside a lab namespace, with one page attached.
struct Browser {
    to: std::fs::File,
    from: std::io::BufReader<std::fs::File>,
    next_id: u64,
    session: Option<String>,
}

impl Browser {
    /// Start chromium in `ns` (files named after `tag`) and open `url`.
    fn open(lab: &Lab, ns: &str, tag: &str, url: &str) -> Browser {
        let exe = chromium().expect("chromium is not installed (apt-get install chromium)");
        let dir = lab.path(&format!("chromium-{tag}"));
        std::fs::create_dir_all(&dir).expect("profile dir");
        let (cmd_fifo, out_fifo) = (
            lab.path(&format!("cdp-in-{tag}")),
            lab.path(&format!("cdp-out-{tag}")),
        );
        for f in [&cmd_fifo, &out_fifo] {
            nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .expect("mkfifo");
        }
        let script = format!(
            "exec ip netns exec {ns} {} --headless --no-sandbox --disable-gpu \
             --disable-background-networking --disable-component-update --disable-sync \
             --no-first-run --disable-dev-shm-usage --hide-scrollbars --window-size=1280,400 \
             --user-data-dir={} --remote-debugging-pipe about:blank 3<{} 4>{}",
            exe.display(),
            dir.display(),
            cmd_fifo.display(),
            out_fifo.display()
        );
        lab.spawn_logged(
            ns,
            &["sh", "-c", &script],
            &lab.path(&format!("chromium-{tag}.log")),
        );
        // Opening a FIFO blocks until the other end opens: same order as the shell.
        let to = std::fs::OpenOptions::new()
            .write(true)
            .open(&cmd_fifo)
            .expect("open DevTools command pipe");
        let from = std::fs::File::open(&out_fifo).expect("open DevTools output pipe");
        let mut b = Browser {
            to,
            from: std::io::BufReader::new(from),
            next_id: 1,
            session: None,
        };
        let target = b.call("Target.createTarget", serde_json::json!({ "url": url }));
        let attached = b.call(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": target["targetId"], "flatten": true }),
        );
        b.session = attached["sessionId"].as_str().map(str::to_owned);
        b
    }

    /// Send one DevTools command and return its `result`.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::BufRead;
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = serde_json::json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = serde_json::json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("encode");
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let mut buf = Vec::new();
            let n = self
                .from
                .read_until(0, &mut buf)
                .expect("read from chromium");
            assert!(n > 0, "chromium closed the DevTools pipe");
            buf.pop();
            let reply: serde_json::Value = serde_json::from_slice(&buf).expect("DevTools JSON");
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Evaluate `js` in the page and return its value.
    fn eval(&mut self, js: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        );
        r["result"]["value"].clone()
    }

    /// The text a person sees in the page.
    fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Wait until `js` is true in the page.
    fn wait_true(&mut self, what: &str, js: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.eval(js) == serde_json::json!(true) {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!("{what} after {timeout:?}; page:\n{}", self.text());
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({ "url": url }));
    }

    /// Type `value` into the field `id` (as a person would: focus, then text).
    fn type_into(&mut self, id: &str, value: &str) {
        let js = format!(
            "(() => {{ const e = document.getElementById({id:?}); e.focus(); e.select(); \
             return true; }})()"
        );
        assert_eq!(self.eval(&js), serde_json::json!(true), "no field {id}");
        self.call("Input.insertText", serde_json::json!({ "text": value }));
        let got = self.eval(&format!("document.getElementById({id:?}).value"));
        assert_eq!(got, serde_json::json!(value), "field {id}");
    }

    fn click(&mut self, id: &str) {
        let js = format!("document.getElementById({id:?}).click(); true");
        assert_eq!(self.eval(&js), serde_json::json!(true));
    }

    fn screenshot(&mut self, name: &str) {
        // The whole page, not only the window: scrolling does not matter.
        let m = self.call("Page.getLayoutMetrics", serde_json::json!({}));
        let size = &m["cssContentSize"];
        let r = self.call(
            "Page.captureScreenshot",
            serde_json::json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1 },
            }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
        std::fs::create_dir_all(&dir).expect("artifact dir");
        std::fs::write(dir.join(name), png).expect("write screenshot");
    }

    fn close(mut self) {
        let _ = self.call("Browser.close", serde_json::json!({}));
    }
}

/// Fill the settings form with vhid 2 and `advskew`, apply, and wait for the answer.
fn add_vhost_through_the_page(br: &mut Browser, advskew: &str) {
    br.wait_true(
        "the settings page lists vhid 1",
        "document.querySelectorAll('#vhost-list tr[data-vhid]').length === 1 \
         && !document.getElementById('f-apply').disabled",
        Duration::from_secs(10),
    );
    for (id, value) in [
        ("f-token", TOKEN),
        ("f-carpdev", "eth0"),
        ("f-vhid", "2"),
        ("f-addresses", &format!("{NEW_VIP}/24, {NEW_VIP6}/64")),
        ("f-pass", PASS),
        ("f-advbase", "1"),
        ("f-advskew", advskew),
    ] {
        br.type_into(id, value);
    }
    br.click("f-apply");
    br.wait_true(
        "the form answered",
        "document.getElementById('settings-result').className !== '' \
         && document.getElementById('settings-result').textContent !== 'applying…'",
        Duration::from_secs(10),
    );
}

/// Input: A (advskew 0) and B (advskew 100), each started from its own
/// file with vhid 1, the page on 127.0.0.1:8080 in its namespace and a
/// token. In A's namespace, headless chromium opens A's settings page and
/// fills the form for vhid 2 (198.51.100.60/24 and 2001:db8::60/64) with advskew 300, then
/// with advskew 0, each time pressing "Save and apply"; then the same on
/// B's page with advskew 100.
/// Output: advskew 300 is refused next to the advskew field and A's file
/// is unchanged; advskew 0 is written (the comment kept, the old file as
/// `.bak`, mode 0600) and reloaded; after B's form, vhid 2 has exactly one
/// MASTER, A, which holds 198.51.100.60 while B does not, and vhid 1 is
/// undisturbed. On A's status page, "Temporarily disable CARP" puts every
/// row in INIT (B takes over) and "Enable CARP" brings A back as MASTER.
/// Screenshots: the form's error, B's status page (BACKUP), A's (MASTER),
/// and A's in maintenance.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_vhost_added_on_the_settings_page_is_elected() {
    let lab = Lab::new("page", 2);
    let (fa, fb) = (lab.path("a.toml"), lab.path("b.toml"));
    write_config(&fa, &lab.path("a-state"), 0);
    write_config(&fb, &lab.path("b-state"), 100);
    let original_a = std::fs::read_to_string(&fa).expect("read");
    let a = lab.carpd(0, "a", &["--config", fa.to_str().expect("utf-8")]);
    let b = lab.carpd(1, "b", &["--config", fb.to_str().expect("utf-8")]);
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);
    let settings = format!("http://{HTTP}/settings");

    // A: a bad advskew first, then a good one.
    let mut br = Browser::open(&lab, &a.ns, "a", &settings);
    add_vhost_through_the_page(&mut br, "300");
    let err = br.eval("document.getElementById('err-advskew').textContent");
    assert!(
        err.as_str().is_some_and(|e| e.contains("advskew")),
        "no error next to advskew: {err}; page:\n{}",
        br.text()
    );
    assert_eq!(
        std::fs::read_to_string(&fa).expect("read"),
        original_a,
        "a refused form changed the file"
    );
    br.screenshot("page-settings-error.png");
    br.type_into("f-advskew", "0");
    br.click("f-apply");
    br.wait_true(
        "A's form says written and reloaded",
        "document.getElementById('settings-result').className === 'ok' \
         && document.getElementById('settings-result').textContent.includes('written and reloaded')",
        Duration::from_secs(10),
    );
    br.wait_true(
        "A's list shows vhid 2",
        "!!document.querySelector('#vhost-list tr[data-vhid=\"2\"]')",
        Duration::from_secs(5),
    );
    assert_eq!(
        br.eval("document.getElementById('err-advskew').textContent"),
        "",
        "the old error stayed next to the field"
    );
    br.close();
    let text = std::fs::read_to_string(&fa).expect("read");
    assert!(
        text.starts_with("# written by the test") && text.contains("vhid = 2"),
        "{text}"
    );
    let mut bak = fa.clone().into_os_string();
    bak.push(".bak");
    assert_eq!(
        std::fs::read_to_string(&bak).expect("the old file is kept"),
        original_a
    );
    let mode = std::fs::metadata(&fa).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // B: the same vhost with advskew 100.
    let mut br = Browser::open(&lab, &b.ns, "b", &settings);
    add_vhost_through_the_page(&mut br, "100");
    br.wait_true(
        "B's form says written and reloaded",
        "document.getElementById('settings-result').className === 'ok'",
        Duration::from_secs(10),
    );

    assert_eq!(wait_single_master(&[&a, &b], 2, ELECTION), 0);
    assert!(lab.has_addr(&a.ns, NEW_VIP), "A does not hold {NEW_VIP}");
    assert!(!lab.has_addr(&b.ns, NEW_VIP), "B holds {NEW_VIP} as BACKUP");
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);

    // Screenshots of the status page: B BACKUP, then A MASTER and in maintenance.
    br.navigate(&format!("http://{HTTP}/"));
    all_rows(&mut br, "BACKUP");
    br.screenshot("page-backup.png");
    br.close();
    let mut br = Browser::open(&lab, &a.ns, "a2", &format!("http://{HTTP}/"));
    all_rows(&mut br, "MASTER");
    let text = br.text();
    assert!(
        text.contains(&format!("{NEW_VIP}/24")) && text.contains(&format!("{NEW_VIP6}/64")),
        "one row per address: {text}"
    );
    assert!(
        text.contains("Make backup") && !text.contains("Make master"),
        "{text}"
    );
    br.screenshot("page-master.png");
    // "Temporarily disable CARP" and back, with the token typed into the page.
    br.type_into("token", TOKEN);
    br.click("carp-disable");
    all_rows(&mut br, "INIT");
    assert_eq!(wait_single_master(&[&b], 2, ELECTION), 0);
    br.wait_true(
        "the page offers Enable CARP only",
        "getComputedStyle(document.getElementById('carp-enable')).display !== 'none' \
         && getComputedStyle(document.getElementById('carp-disable')).display === 'none'",
        Duration::from_secs(5),
    );
    br.click("carp-enable");
    all_rows(&mut br, "MASTER");
    carpctl_ok(&a, &["maintenance", "on"]);
    all_rows(&mut br, "BACKUP");
    br.wait_true(
        "the page offers to leave maintenance only",
        "getComputedStyle(document.getElementById('maint-off')).display !== 'none' \
         && getComputedStyle(document.getElementById('maint-on')).display === 'none'",
        Duration::from_secs(5),
    );
    br.screenshot("page-maintenance.png");
    br.close();
    carpctl_ok(&a, &["maintenance", "off"]);
}

/// Wait until every vhost row of the status page shows `state`.
fn all_rows(br: &mut Browser, state: &str) {
    br.wait_true(
        &format!("every row {state}"),
        &format!(
            "(() => {{ const b = [...document.querySelectorAll('#vhosts .badge')]; \
             return b.length >= 2 && b.every((x) => x.textContent === {state:?}); }})()"
        ),
        Duration::from_secs(10),
    );
}
