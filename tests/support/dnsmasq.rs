//! A real DNS server for discovery tests: dnsmasq on a free loopback UDP
//! port, serving only what the test gives it (`--no-resolv`, `--no-hosts`),
//! records with a 1 s TTL. Needs `dnsmasq` (Debian `dnsmasq-base`); fails,
//! naming the package, when it is missing.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running dnsmasq; killed on drop.
pub struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    /// Starts dnsmasq on 127.0.0.1:`port` with `records` (options such as
    /// `--srv-host=…`, `--host-record=…`, `--addn-hosts=FILE`); returns once
    /// it answers.
    pub fn start(port: u16, records: &[String]) -> Dnsmasq {
        super::requirements::require_tool("dnsmasq", "dnsmasq-base");
        let mut command = Command::new("dnsmasq");
        command.args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--local-ttl=1",
            "--log-facility=-",
            "--quiet-dhcp",
        ]);
        command.arg(format!("--port={port}"));
        command.args(records);
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dnsmasq starts");
        let mut dnsmasq = Dnsmasq { child };
        if !answers_within(port, Duration::from_secs(10)) {
            dnsmasq.kill();
            let mut said = String::new();
            if let Some(mut stderr) = dnsmasq.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
            }
            panic!("dnsmasq did not answer on port {port} within 10 s; it said: {said}");
        }
        dnsmasq
    }

    /// SIGHUP: dnsmasq reads its `--addn-hosts` files again (and clears its cache).
    pub fn reread_hosts(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success(), "SIGHUP to dnsmasq");
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A hosts file for `--addn-hosts` in the temp dir, removed on drop.
pub struct HostsFile {
    pub path: PathBuf,
}

impl HostsFile {
    /// A file holding one `address name` line per entry.
    pub fn new(entries: &[(&str, &str)]) -> HostsFile {
        let path = std::env::temp_dir().join(format!(
            "remora-hosts-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let file = HostsFile { path };
        file.write(entries);
        file
    }

    /// Replaces the entries (dnsmasq sees them after [`Dnsmasq::reread_hosts`]).
    pub fn write(&self, entries: &[(&str, &str)]) {
        let text: String = (entries.iter())
            .map(|(address, name)| format!("{address} {name}\n"))
            .collect();
        std::fs::write(&self.path, text).expect("write hosts file");
    }

    /// The `--addn-hosts=` option naming this file.
    pub fn option(&self) -> String {
        format!("--addn-hosts={}", Path::display(&self.path))
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends a bare A query for `probe.invalid` until something answers (even
/// with an error), for `within` at most.
fn answers_within(port: u16, within: Duration) -> bool {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["probe", "invalid"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buffer = [0u8; 512];
    while Instant::now() < deadline {
        socket.send_to(&query, ("127.0.0.1", port)).unwrap();
        if socket.recv(&mut buffer).is_ok() {
            return true;
        }
    }
    false
}

/// A port free for both UDP and TCP (dnsmasq listens on both), taken below
/// the kernel's ephemeral range (32768–60999) so that no outgoing connection
/// of this or another test can take it between now and dnsmasq's start.
pub fn free_dns_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_000);
        let udp = UdpSocket::bind(("127.0.0.1", port));
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
}
