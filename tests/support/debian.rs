//! Debian tools a test needs (dnsmasq, chromium, …): present, or installed
//! with apt-get when the test runs as root. `scripts/test.sh` installs them
//! up front; this is the fallback for a lone `cargo test`.

use std::process::{Command, Stdio};

/// True when `command --version` runs, installing Debian `package` first when
/// it does not and we are root.
pub fn tool_available(command: &str, package: &str) -> bool {
    let runs = || {
        Command::new(command)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if runs() {
        return true;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    if root {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status();
    }
    runs()
}
