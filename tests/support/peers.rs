//! Servers and load generators we did not write, run as real processes:
//! nginx (Debian `nginx-light`), HAProxy (`haproxy`), h2load
//! (`nghttp2-client`) and a gRPC C-core server (`python3-grpcio`,
//! `tests/fixtures/grpc_server.py`). `scripts/test.sh` installs them; a test
//! that finds one missing fails and names the package.
//!
//! nginx and HAProxy cannot report a port they bound on `:0`, so they get a
//! port that was free a moment earlier (bound, then released).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::requirements::{PYTHON, require_python_module, require_tool};

/// A process killed (and its scratch directory removed) on drop.
pub struct Peer {
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A scratch directory for one peer.
fn scratch(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "remora-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

/// A loopback port that was free just now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// Waits until `addr` accepts connections, or panics with `log`'s content.
fn wait_listening(addr: SocketAddr, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("peer on {addr} did not start ({exited:?}):\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx with `http_block` (everything inside `http { }`, where `PORT` is
/// replaced by its port) in one worker process.
pub fn nginx(http_block: &str) -> Peer {
    require_tool("nginx", "nginx-light");
    let dir = scratch("nginx");
    let port = free_port();
    let d = dir.display();
    let config = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{}\n}}\n",
        http_block.replace("PORT", &port.to_string())
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).expect("write nginx.conf");
    let log = dir.join("error.log");
    let mut child = Command::new("nginx")
        .args(["-p", &d.to_string(), "-e", &log.display().to_string(), "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut child, &log);
    Peer { addr, child, dir }
}

/// HAProxy with `config` (whole file; `PORT` is replaced by its port).
pub fn haproxy(config: &str) -> Peer {
    require_tool("haproxy", "haproxy");
    let dir = scratch("haproxy");
    let port = free_port();
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config.replace("PORT", &port.to_string())).expect("write haproxy.cfg");
    let log = dir.join("haproxy.log");
    let mut child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("haproxy log"))
        .spawn()
        .expect("start haproxy");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut child, &log);
    Peer { addr, child, dir }
}

/// The gRPC C-core server of `tests/fixtures/grpc_server.py` (Python
/// grpcio) with the channel `options` given as `name=value` arguments.
pub fn grpcio_server(options: &[(&str, i64)]) -> Peer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpc_server.py");
    require_python_module("grpc", "apt-get install python3-grpcio");
    let dir = scratch("grpcio");
    let log = dir.join("grpc.log");
    let mut command = Command::new(PYTHON);
    command.arg(&script);
    for (name, value) in options {
        command.arg(format!("{name}={value}"));
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("grpc log"))
        .spawn()
        .expect("start the grpcio server");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("read the port");
    let Ok(port) = line.trim().parse::<u16>() else {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("grpcio server did not report its port ({line:?}):\n{log}");
    };
    Peer {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
        dir,
    }
}

/// The standard health service of Python grpcio
/// (`tests/fixtures/grpc_health_server.py`, grpcio-health-checking), its
/// whole-server status `SERVING`; [`GrpcioHealth::set`] changes a status.
pub struct GrpcioHealth {
    pub peer: Peer,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl GrpcioHealth {
    pub fn start() -> GrpcioHealth {
        require_python_module(
            "grpc_health.v1.health",
            "apt-get install python3-grpcio and pip install grpcio-health-checking==1.51.1",
        );
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpc_health_server.py");
        let dir = scratch("grpcio-health");
        let log = dir.join("grpc.log");
        let mut child = Command::new(PYTHON)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("grpc log"))
            .spawn()
            .expect("start the grpcio health server");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).expect("read the port");
        let Ok(port) = line.trim().parse::<u16>() else {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("grpcio health server did not report its port ({line:?}):\n{log}");
        };
        let peer = Peer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            dir,
        };
        GrpcioHealth {
            peer,
            stdin,
            stdout,
        }
    }

    /// Sets `service`'s status (`""`: the server's) to `status`
    /// (`SERVING`, `NOT_SERVING`).
    pub fn set(&mut self, service: &str, status: &str) {
        use std::io::{BufRead, Write};
        let service = if service.is_empty() { "-" } else { service };
        writeln!(self.stdin, "{service} {status}").expect("write to the health server");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read its answer");
        assert_eq!(line.trim(), "ok");
    }
}

/// What h2load reported.
#[derive(Debug, Default)]
pub struct H2Load {
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    /// Responses with a status other than 2xx.
    pub not_2xx: u64,
    pub output: String,
}

impl H2Load {
    /// Requests that did not end in 2xx: h2load's `failed` (errors, 4xx and 5xx; `errored`
    /// is part of it) or the non-2xx status codes, whichever is larger (h2load counts them at
    /// slightly different moments), plus those that timed out.
    pub fn unsuccessful(&self) -> u64 {
        self.failed.max(self.not_2xx) + self.timeout
    }
}

/// Runs `h2load` (h2c prior knowledge) with `args` against `url`.
pub fn h2load(args: &[&str], url: &str) -> H2Load {
    require_tool("h2load", "nghttp2-client");
    let output = Command::new("h2load")
        .args(args)
        .arg(url)
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut report = H2Load {
        output: text.clone(),
        ..H2Load::default()
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("requests: ") {
            for part in rest.split(", ") {
                let (count, what) = part.split_once(' ').unwrap_or(("0", ""));
                let count = count.parse().unwrap_or(0);
                match what {
                    "done" => report.done = count,
                    "succeeded" => report.succeeded = count,
                    "failed" => report.failed = count,
                    "errored" => report.errored = count,
                    "timeout" => report.timeout = count,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            for part in rest.split(", ") {
                let (count, class) = part.split_once(' ').unwrap_or(("0", ""));
                if class != "2xx" {
                    report.not_2xx += count.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    assert!(
        report.done > 0,
        "h2load ran no request:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    report
}
