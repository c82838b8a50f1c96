//! A real etcd v3 server (Debian `etcd-server`) for tests, on 127.0.0.1
//! ports picked free (bound at :0 first, since etcd needs explicit URLs),
//! with a temporary data directory; killed and removed when dropped. Keys
//! are written and read with the real `etcdctl` (Debian `etcd-client`), or
//! with the `etcd-client` crate where a test needs exact timing.
//!
//! Also `Relay`: a TCP relay in front of it that a test can cut and
//! restore, to break remora's connection while etcd itself runs on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::requirements::require_tool;

/// Longest wait for etcd to answer after it was started. A restarted member
/// of a three-member cluster has once needed more than 15 s on a 2-core CI
/// machine running other etcd tests beside it.
const START_WAIT: Duration = Duration::from_secs(30);

/// A running etcd member, alone in its cluster unless started by
/// [`Etcd::cluster`].
pub struct Etcd {
    child: Option<Child>,
    pub client: SocketAddr,
    peer: SocketAddr,
    /// `--name`, and `--initial-cluster` (`name=peer-url,…`).
    name: String,
    initial_cluster: String,
    data_dir: PathBuf,
    /// `--user name:password` for etcdctl once auth is on.
    user: Option<String>,
    /// With TLS: the directory of cert.pem, key.pem (the server's, also
    /// etcdctl's client certificate) and ca.pem; clients must present a
    /// certificate of that CA.
    tls: Option<PathBuf>,
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Etcd {
        Etcd::launch(None)
    }

    /// Starts etcd serving `https://` with the certificate and key in `dir`
    /// (`cert.pem`, `key.pem`), requiring client certificates signed by
    /// `dir/ca.pem` (`--client-cert-auth`).
    pub fn start_tls(dir: &std::path::Path) -> Etcd {
        Etcd::launch(Some(dir.to_owned()))
    }

    fn launch(tls: Option<PathBuf>) -> Etcd {
        let mut etcd = Etcd::member("test", free_port(), tls);
        etcd.initial_cluster = format!("test=http://{}", etcd.peer);
        etcd.run();
        etcd
    }

    /// Starts a cluster of `size` members and waits until each answers.
    pub fn cluster(size: usize) -> Vec<Etcd> {
        let mut members: Vec<Etcd> = (0..size)
            .map(|i| Etcd::member(&format!("m{i}"), free_port(), None))
            .collect();
        let initial_cluster: Vec<String> = (members.iter())
            .map(|member| format!("{}=http://{}", member.name, member.peer))
            .collect();
        for member in &mut members {
            member.initial_cluster = initial_cluster.join(",");
            member.spawn();
        }
        members.iter().for_each(Etcd::wait_until_it_answers);
        members
    }

    /// A member not started yet, with a fresh data directory.
    fn member(name: &str, peer: SocketAddr, tls: Option<PathBuf>) -> Etcd {
        require_tool("etcd", "etcd-server");
        require_tool("etcdctl", "etcd-client");
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let data_dir = std::env::temp_dir().join(format!(
            "remora-etcd-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&data_dir);
        Etcd {
            child: None,
            client: free_port(),
            peer,
            name: name.to_owned(),
            initial_cluster: String::new(),
            data_dir,
            user: None,
            tls,
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.client)
    }

    fn run(&mut self) {
        self.spawn();
        self.wait_until_it_answers();
    }

    fn spawn(&mut self) {
        let peer = format!("http://{}", self.peer);
        let mut command = Command::new("etcd");
        if let Some(dir) = &self.tls {
            command
                .arg("--cert-file")
                .arg(dir.join("cert.pem"))
                .arg("--key-file")
                .arg(dir.join("key.pem"))
                .arg("--trusted-ca-file")
                .arg(dir.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", &self.name, "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.url()])
            .args(["--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args([
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }

    /// Waits until this member answers a linearizable read (so its
    /// cluster has a leader).
    pub fn wait_until_it_answers(&self) {
        let deadline = Instant::now() + START_WAIT;
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "etcd did not answer within {START_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn answers(&self) -> bool {
        self.etcdctl_command(&["endpoint", "health"])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Kills etcd (SIGKILL: as a crash, nothing said to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data (revisions, leases kept).
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Starts it again on the same ports with an empty data directory, as
    /// a member that lost its disk (no keys, no leases, no users).
    pub fn wipe_and_restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        self.user = None;
        self.run();
    }

    fn etcdctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("etcdctl");
        command.env("ETCDCTL_API", "3").args([
            "--endpoints",
            &self.url(),
            "--command-timeout",
            "5s",
        ]);
        if let Some(user) = &self.user {
            command.args(["--user", user]);
        }
        if let Some(dir) = &self.tls {
            command
                .arg("--cacert")
                .arg(dir.join("ca.pem"))
                .arg("--cert")
                .arg(dir.join("cert.pem"))
                .arg("--key")
                .arg(dir.join("key.pem"));
        }
        command.args(args);
        command
    }

    /// Runs `etcdctl ARGS`; panics when it fails; returns its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let output = self.etcdctl_command(args).output().expect("run etcdctl");
        assert!(
            output.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn put(&self, key: &str, value: &str) {
        self.etcdctl(&["put", key, "--", value]);
    }

    pub fn delete(&self, key: &str) {
        self.etcdctl(&["del", key]);
    }

    /// The value of `key`, `None` when it does not exist.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", key, "--print-value-only"]);
        let value = out.strip_suffix('\n').unwrap_or(&out);
        (!out.is_empty()).then(|| value.to_owned())
    }

    /// Keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.etcdctl(&["get", prefix, "--prefix", "--keys-only"]);
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let out = self.etcdctl(&["get", "/", "--prefix", "--limit", "1", "-w", "json"]);
        let json: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
        json["header"]["revision"].as_i64().expect("revision")
    }

    /// Compacts the history up to the current revision.
    pub fn compact(&self) -> i64 {
        let revision = self.revision();
        self.etcdctl(&["compact", &revision.to_string()]);
        revision
    }

    /// Turns authentication on with `root` and a user `user` (password
    /// `password`) that may read and write everything; etcdctl then logs in
    /// as root.
    pub fn enable_auth(&mut self, user: &str, password: &str) {
        self.etcdctl(&["user", "add", "root:rootpw"]);
        self.etcdctl(&["user", "add", &format!("{user}:{password}")]);
        self.etcdctl(&["role", "add", "all"]);
        self.etcdctl(&[
            "role",
            "grant-permission",
            "all",
            "--prefix=true",
            "readwrite",
            "/",
        ]);
        self.etcdctl(&["user", "grant-role", user, "all"]);
        self.etcdctl(&["auth", "enable"]);
        self.user = Some("root:rootpw".to_owned());
    }

    /// A client of this etcd (the `etcd-client` crate).
    pub async fn connect(&self) -> etcd_client::Client {
        let options = self.user.as_ref().map(|user| {
            let (name, password) = user.split_once(':').unwrap();
            etcd_client::ConnectOptions::new().with_user(name, password)
        });
        etcd_client::Client::connect([self.url()], options)
            .await
            .expect("connect to etcd")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A TCP relay to `target` that can be cut (every connection closed, new
/// ones closed at once), frozen (connections stay open but no byte moves
/// either way, as through a network partition), and restored.
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    cutting: Arc<Notify>,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relay = Relay {
            addr,
            cut: Arc::new(AtomicBool::new(false)),
            cutting: Arc::new(Notify::new()),
            frozen: Arc::new(AtomicBool::new(false)),
        };
        let (is_cut, notify, frozen) = (
            Arc::clone(&relay.cut),
            Arc::clone(&relay.cutting),
            Arc::clone(&relay.frozen),
        );
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let (notify, frozen) = (Arc::clone(&notify), Arc::clone(&frozen));
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_target, to_target) = outbound.into_split();
                    tokio::select! {
                        () = forward(from_client, to_target, &frozen) => {}
                        () = forward(from_target, to_client, &frozen) => {}
                        () = notify.notified() => {}
                    }
                });
            }
        });
        relay
    }

    /// `http://` URL of the relay.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection and refuses new ones (they close at once).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.cutting.notify_waiters();
    }

    /// Stops moving bytes; connections stay open.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.frozen.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either ends, holding each chunk while `frozen`.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: &AtomicBool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
