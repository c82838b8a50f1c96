//! Headless Chromium driven over the Chrome DevTools Protocol (a WebSocket):
//! open a page, collect what its console reports, evaluate expressions, take
//! a screenshot. Just enough CDP for the dashboard test.
//!
//! Needs Debian's `chromium` (installed by `scripts/test.sh`);
//! [`Browser::launch`] fails the test when it is missing.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for one DevTools answer.
const ANSWER_WAIT: Duration = Duration::from_secs(20);

/// Longest wait for Chromium's processes to be gone once killed.
const GROUP_EXIT_WAIT: Duration = Duration::from_secs(2);

pub struct Browser {
    child: Child,
    profile: PathBuf,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Console errors, uncaught exceptions and error log entries seen so far.
    pub problems: Vec<String>,
}

impl Browser {
    /// Starts Chromium with one blank page.
    pub async fn launch() -> Browser {
        super::requirements::require_tool("chromium", "chromium");
        let profile = std::env::temp_dir().join(format!(
            "remora-chromium-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        // Chromium's own temporary files (its singleton lock and socket)
        // go inside the profile too, so removing it leaves nothing behind.
        std::fs::create_dir_all(&profile).expect("chromium profile directory");
        let mut child = Command::new("chromium")
            .process_group(0)
            .env("TMPDIR", &profile)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let browser_url = devtools_url(&mut child);
        let (socket, _) = tokio_tungstenite::connect_async(browser_url.as_str())
            .await
            .expect("DevTools WebSocket");
        let mut browser = Browser {
            child,
            profile,
            socket,
            session: String::new(),
            next_id: 0,
            problems: Vec::new(),
        };
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    /// Opens `url` in the page.
    pub async fn navigate(&mut self, url: &str) {
        let answer = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(answer.get("errorText").is_none(), "navigate: {answer}");
    }

    /// The value of a JavaScript expression evaluated in the page.
    pub async fn evaluate(&mut self, expression: &str) -> Value {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        if let Some(exception) = answer.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        answer["result"]["value"].clone()
    }

    /// A PNG of the page at `width` × `height` CSS pixels.
    pub async fn screenshot(&mut self, width: u32, height: u32) -> Vec<u8> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG")
    }

    /// Sends one command (to the page once attached) and returns its result,
    /// noting every console problem reported meanwhile.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .expect("DevTools send");
        loop {
            let message = tokio::time::timeout(ANSWER_WAIT, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no DevTools answer to {method}"))
                .expect("DevTools connection open")
                .expect("DevTools message");
            let Message::Text(text) = message else {
                continue;
            };
            let message: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if message["id"] == json!(id) {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            self.note(&message);
        }
    }

    fn note(&mut self, event: &Value) {
        let params = &event["params"];
        let problem = match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => Some(params["exceptionDetails"].to_string()),
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                Some(params["args"].to_string())
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                Some(params["entry"].to_string())
            }
            _ => None,
        };
        self.problems.extend(problem);
    }
}

impl Drop for Browser {
    /// Chromium's helpers (renderer, GPU, network service) share its process
    /// group: all of them go, and only then is the profile removed, so none
    /// writes into it afterwards.
    fn drop(&mut self) {
        let group = -(self.child.id() as libc::pid_t);
        // SAFETY: kill(2) on the process group Chromium was started in.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
        let gone_by = Instant::now() + GROUP_EXIT_WAIT;
        // SAFETY: signal 0 only asks whether a process of the group is left.
        while unsafe { libc::kill(group, 0) } == 0 && Instant::now() < gone_by {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Reads Chromium's stderr up to its "DevTools listening on ws://…" line.
fn devtools_url(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("piped stderr");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut found = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !found && let Some(url) = line.strip_prefix("DevTools listening on ") {
                found = true;
                let _ = sender.send(url.trim().to_owned());
            }
        }
    });
    receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("chromium printed its DevTools address within 30 s")
}
