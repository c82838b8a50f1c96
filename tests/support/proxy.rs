//! remora under test: in-process (fast, for most tests) or as the real binary
//! (for signals and memory). Both bind every listener on 127.0.0.1:0 and
//! report the real addresses; nothing waits on a sleep.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use remora::app::{BoundAddrs, Running};

use super::config::{TestConfig, Upstream};
use remora::reload::Source;

/// Runs `remora run --config FILE` to its end (for a start that must fail)
/// and returns its output.
pub async fn run_to_exit(file: &ConfigFile) -> std::process::Output {
    let path = file.path.clone();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_remora"))
            .args(["run", "--config"])
            .arg(path)
            .output()
            .expect("run remora")
    })
    .await
    .unwrap()
}

/// A configuration file in the temporary directory, rewritten the way editors and Kubernetes
/// do it (write a new file, rename it over the old one). Removed when dropped.
pub struct ConfigFile {
    pub path: PathBuf,
}

impl ConfigFile {
    pub fn new(yaml: &str) -> ConfigFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "remora-test-{}-{}.yaml",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = ConfigFile { path };
        file.write(yaml);
        file
    }

    /// Replaces the content atomically.
    pub fn write(&self, yaml: &str) {
        let temporary = self.path.with_extension("yaml.new");
        std::fs::write(&temporary, yaml).expect("write config");
        std::fs::rename(&temporary, &self.path).expect("rename config");
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Two hops, app → remora A → remora B → `app`, both with the `tracing` section: remora B
/// (service `app`) fronts `app` on its inbound listener, remora A (service `caller`) has an
/// upstream `b` pointing at it. Returns (A, B).
pub async fn two_hops(app: SocketAddr, tracing: &str) -> (Proxy, Proxy) {
    let b = TestConfig::inbound_to("app", app).section("tracing", tracing);
    let b = Proxy::start(&b.yaml()).await;
    let a = TestConfig::new()
        .service("{ name: caller }")
        .upstream(Upstream::to("b", [b.inbound()]))
        .section("tracing", tracing);
    (Proxy::start(&a.yaml()).await, b)
}

/// A proxy started in this process from YAML text.
pub struct Proxy {
    pub bound: BoundAddrs,
    running: Running,
}

impl Proxy {
    pub async fn start(yaml: &str) -> Proxy {
        let config = remora::config::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
        let running = remora::app::start(&config).await.expect("proxy starts");
        Proxy {
            bound: running.bound.clone(),
            running,
        }
    }

    /// Starts from `file` and reloads it when it changes (checked every `interval`), as
    /// `remora run --config` does.
    pub async fn start_watching(file: &ConfigFile, interval: Duration) -> Proxy {
        let loaded = std::fs::read_to_string(&file.path).expect("read config");
        let name = file.path.display().to_string();
        let config = remora::config::parse(&loaded, &name).unwrap_or_else(|e| panic!("{e}"));
        let running = remora::app::start(&config).await.expect("proxy starts");
        running.watch_config(Source::File {
            path: file.path.clone(),
            interval: Some(interval),
            loaded,
        });
        Proxy {
            bound: running.bound.clone(),
            running,
        }
    }

    /// Applies a configuration now, as a reload does.
    pub async fn reload(&self, yaml: &str) -> bool {
        let config = remora::config::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
        self.running.reload(config).await
    }

    /// The listeners bound now (after reloads).
    pub async fn current(&self) -> BoundAddrs {
        self.running.current_bound().await
    }

    /// The outbound listener of upstream `name`.
    pub fn upstream(&self, name: &str) -> SocketAddr {
        self.bound.upstream(name).expect("upstream listener")
    }

    pub fn inbound(&self) -> SocketAddr {
        self.bound.inbound.expect("inbound listener")
    }

    /// `http://<admin><path>`
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.bound.admin)
    }

    /// The value of the one sample of `/metrics` matching `name` and `labels`; 0 when absent.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sample(name, labels).await.unwrap_or(0.0)
    }

    /// The value of the one sample of `/metrics` matching `name` and `labels`, if there is one.
    pub async fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = super::prom::scrape(&self.admin_url("/metrics")).await;
        super::prom::value(&text, name, labels)
    }

    /// Drains; returns the connections still open at the end.
    pub async fn shutdown(self) -> usize {
        self.running.shutdown().await
    }
}

/// The real `remora` binary, started with `run --config`.
pub struct ProxyProcess {
    pub child: Child,
    /// The configuration file it runs on (rewrite it to reload).
    pub config: ConfigFile,
    pub admin: SocketAddr,
    pub listeners: Vec<(String, SocketAddr)>,
    /// The log lines read while waiting for the listeners.
    pub startup_log: Vec<String>,
    /// remora's log lines, read on a thread so the pipe never fills up.
    log: Receiver<String>,
}

/// Longest wait for an expected log line.
const LOG_WAIT: Duration = Duration::from_secs(20);

impl ProxyProcess {
    /// Writes `yaml` to a temporary file and starts the binary on it; returns
    /// once it has logged every listener (`expected_listeners` of them besides
    /// admin). The YAML must keep `logging.format: json` (the default).
    pub fn start(yaml: &str, expected_listeners: usize) -> ProxyProcess {
        Self::launch(&[], yaml, expected_listeners, &[])
    }

    /// [`start`](Self::start) with more arguments after `run --config FILE`.
    pub fn start_with_args(yaml: &str, expected_listeners: usize, args: &[&str]) -> ProxyProcess {
        Self::launch(&[], yaml, expected_listeners, args)
    }

    /// [`ProxyProcess::start`] under a wrapper command, e.g. `ip netns exec
    /// NS setpriv --reuid 1337 ...` (the remora binary and its arguments are
    /// appended to `wrapper`).
    pub fn start_wrapped(wrapper: &[&str], yaml: &str, expected_listeners: usize) -> ProxyProcess {
        Self::launch(wrapper, yaml, expected_listeners, &[])
    }

    fn launch(
        wrapper: &[&str],
        yaml: &str,
        expected_listeners: usize,
        args: &[&str],
    ) -> ProxyProcess {
        let config = ConfigFile::new(yaml);
        let remora = env!("CARGO_BIN_EXE_remora");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(remora);
                command
            }
            None => Command::new(remora),
        };
        let mut child = command
            .args(["run", "--config"])
            .arg(&config.path)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start remora");
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let (lines, log) = channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let mut admin = None;
        let mut listeners = Vec::new();
        let mut startup_log = Vec::new();
        while admin.is_none() || listeners.len() < expected_listeners {
            let Ok(line) = log.recv_timeout(LOG_WAIT) else {
                panic!(
                    "remora did not start listening: {:?}; log: {startup_log:#?}",
                    child.try_wait()
                );
            };
            startup_log.push(line.clone());
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let addr = || event["addr"].as_str().and_then(|a| a.parse().ok());
            match event["message"].as_str() {
                Some("admin listening") => admin = addr(),
                Some("listening") => listeners.push((
                    event["listener"].as_str().unwrap_or_default().to_owned(),
                    addr().expect("listener addr"),
                )),
                _ => {}
            }
        }
        ProxyProcess {
            child,
            config,
            admin: admin.expect("admin addr"),
            listeners,
            startup_log,
            log,
        }
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(listener, _)| listener == name)
            .map(|(_, addr)| *addr)
            .expect("listener")
    }

    /// Sends a signal (e.g. "TERM") to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Peak resident memory of the process so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        self.memory_kib("VmHWM:")
    }

    /// Resident memory of the process now, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        self.memory_kib("VmRSS:")
    }

    /// A `/proc/PID/status` field given in kB.
    fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }

    /// Every log line read until one contains `needle` (included).
    pub fn log_until(&mut self, needle: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.log.recv_timeout(LOG_WAIT) {
                Ok(line) => {
                    let found = line.contains(needle);
                    lines.push(line);
                    if found {
                        return lines;
                    }
                }
                Err(error) => panic!("no log line with {needle:?}: {error}"),
            }
        }
    }

    /// The log lines written since the last read, without waiting.
    pub fn log_so_far(&mut self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// Reads log lines until one contains `needle`; returns it.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        loop {
            match self.log.recv_timeout(LOG_WAIT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(error) => panic!("no log line with {needle:?}: {error}"),
            }
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
