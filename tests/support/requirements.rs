//! What a test needs from the machine, checked up front so that a missing
//! piece fails the test with what to do, never lets it pass silently.
//!
//! Tools (nginx, dnsmasq, chromium, …) come from Debian packages that
//! `scripts/test.sh` installs before `cargo test`; no test installs anything.
//! Tests that need root are `#[ignore = "needs root …"]`, which
//! `scripts/test.sh` includes when it runs as root; run alone without root,
//! they fail here.

use std::process::{Command, Stdio};

/// Panics, naming the Debian package, when `program` does not run.
pub fn require_tool(program: &str, package: &str) {
    // HAProxy has no `--version`.
    let version_flag = if program == "haproxy" {
        "-v"
    } else {
        "--version"
    };
    let runs = Command::new(program)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        runs,
        "{program} is needed: apt-get install {package} (scripts/test.sh installs it)"
    );
}

/// The Python the tests run their Python peers and parsers with.
pub const PYTHON: &str = "/usr/bin/python3";

/// Panics, saying how to install it (`install`), when [`PYTHON`] cannot
/// import `module`.
pub fn require_python_module(module: &str, install: &str) {
    let imports = Command::new(PYTHON)
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        imports,
        "{PYTHON} with {module} is needed: {install} (scripts/test.sh installs it)"
    );
}

/// Debian's bundle of the system's trusted roots.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Panics, naming the Debian package, when the system has no trusted roots
/// (what a TLS client without its own CA file trusts).
pub fn require_system_roots() {
    let present = std::fs::metadata(SYSTEM_ROOTS).is_ok_and(|file| file.len() > 0);
    assert!(
        present,
        "the system's root certificates ({SYSTEM_ROOTS}) are needed: apt-get install \
         ca-certificates (scripts/test.sh installs it)"
    );
}

/// Panics unless this process runs as root; `needs` says what for.
pub fn require_root(needs: &str) {
    assert_eq!(
        real_uid(std::process::id()),
        "0",
        "this test needs root ({needs}); scripts/test.sh runs the ignored root tests when run as root"
    );
}

/// The real uid of process `pid`, from /proc (no libc call needed).
pub fn real_uid(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}
