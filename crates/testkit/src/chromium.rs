//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, one websocket of JSON commands: a test loads a page, types into it and reads its DOM as a user's browser would.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::peers::peer;
use crate::wait::wait_until;

/// Longest a single DevTools command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A headless Chromium with one page, attached over DevTools; killed when dropped.
pub struct Chromium {
    child: Child,
    /// The profile (and `DevToolsActivePort`); removed when dropped.
    profile: tempfile::TempDir,
    ws: WebSocket<TcpStream>,
    /// The page's DevTools session (flat mode: its commands carry `sessionId`).
    session: String,
    next_id: u64,
    /// Uncaught exceptions the page reported (`Runtime.exceptionThrown`), as text.
    pub exceptions: Vec<String>,
}

impl Chromium {
    /// Starts Chromium (`--no-sandbox`: tests run as root) with a blank page of `width`×`height`.
    pub fn start(width: u32, height: u32) -> Chromium {
        let bin = peer("chromium", "chromium");
        let profile = tempfile::tempdir().expect("profile dir");
        let log = std::fs::File::create(profile.path().join("chromium.log")).expect("log file");
        let child = Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--mute-audio",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        // Chromium writes the port it chose and the browser's websocket path into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let mut endpoint = None;
        let up = wait_until(Duration::from_secs(60), || {
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                if let Ok(port) = port.trim().parse::<u16>() {
                    endpoint = Some((port, path.trim().to_string()));
                }
            }
            endpoint.is_some()
        });
        let log_text =
            || std::fs::read_to_string(profile.path().join("chromium.log")).unwrap_or_default();
        assert!(
            up,
            "chromium did not open its DevTools port:\n{}",
            log_text()
        );
        let (port, path) = endpoint.expect("set when up");
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .expect("read timeout");
        let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
            .expect("DevTools websocket handshake");
        let mut browser = Chromium {
            child,
            profile,
            ws,
            session: String::new(),
            next_id: 0,
            exceptions: Vec::new(),
        };
        let target = browser.command(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser.command(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        browser.call("Runtime.enable", json!({}));
        browser.call("Page.enable", json!({}));
        browser
    }

    /// Sends a command to the browser (`session` None) or a page session and returns its result.
    fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .unwrap_or_else(|e| panic!("DevTools {method}: cannot send: {e}"));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "DevTools {method}: no answer");
            let text = match self.ws.read() {
                Ok(Message::Text(t)) => t.to_string(),
                Ok(_) => continue,
                Err(e) => panic!("DevTools {method}: {e}"),
            };
            let reply: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if reply["method"] == "Runtime.exceptionThrown" {
                let details = &reply["params"]["exceptionDetails"];
                self.exceptions.push(format!(
                    "{} {}",
                    details["text"].as_str().unwrap_or_default(),
                    details["exception"]["description"]
                        .as_str()
                        .unwrap_or_default()
                ));
            }
            if reply["id"] != id {
                continue;
            }
            if let Some(error) = reply.get("error") {
                panic!("DevTools {method}: {error}");
            }
            return reply["result"].clone();
        }
    }

    /// A command to the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.command(Some(&session), method, params)
    }

    /// Loads `url` and waits until the document has loaded.
    pub fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({"url": url}));
        if let Some(error) = result.get("errorText") {
            panic!("cannot load {url}: {error}");
        }
        assert!(
            self.wait_for(
                Duration::from_secs(30),
                "document.readyState === 'complete'"
            ),
            "{url} did not finish loading"
        );
    }

    /// The value of a JavaScript expression in the page (promises are awaited); panics when it
    /// throws.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = result.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` every 200 ms until it is `true`; returns whether it was in time.
    pub fn wait_for(&mut self, timeout: Duration, expression: &str) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(expression) == json!(true) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Types `text` into the focused element, as a keyboard would (one input event).
    pub fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Saves a PNG of the whole page at `path` (parent folders are created).
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let data = shot["data"].as_str().expect("screenshot data");
        let png = data_encoding::BASE64
            .decode(data.as_bytes())
            .expect("base64 screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifact dir");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Chromium's own log (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // Browser.close lets Chromium end its helper processes; the kill is for a hung one.
        let sent = self.ws.send(Message::Text(
            json!({"id": 0, "method": "Browser.close"})
                .to_string()
                .into(),
        ));
        let closed = sent.is_ok()
            && wait_until(Duration::from_secs(10), || {
                self.child.try_wait().ok().flatten().is_some()
            });
        if !closed {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Where tests leave files for people to look at: `target/test-artifacts/`.
pub fn artifact_dir(target_tmpdir: &str) -> PathBuf {
    let tmp = Path::new(target_tmpdir);
    tmp.parent().unwrap_or(tmp).join("test-artifacts")
}
