//! curl as an HTTP client we did not write, over mTLS: it presents a caller's client
//! certificate (the `TlsFiles` of a leaf), sends the path as it is (`--path-as-is`), and
//! reports the status, the `x-remora-error` header and the body.

use std::net::SocketAddr;

use super::requirements::require_tool;
use super::tls::TlsFiles;

/// The status, `x-remora-error` header (empty when none) and body of `curl` calling
/// `path` on `addr` over mTLS as the holder of `caller`'s files, sending `path` as it is.
pub async fn curl(
    addr: SocketAddr,
    caller: &TlsFiles,
    method: &str,
    path: &str,
    headers: &[&str],
) -> (u16, String, String) {
    require_tool("curl", "curl");
    let dir = caller.dir.clone();
    let mut args: Vec<String> = [
        "-sS",
        "--insecure",
        "--path-as-is",
        "--http1.1",
        "--max-time",
        "10",
        "-D",
        "-",
    ]
    .map(str::to_owned)
    .into();
    // `-X HEAD` would wait for a body that never comes.
    match method {
        "HEAD" => args.push("--head".to_owned()),
        _ => args.extend(["-X".to_owned(), method.to_owned()]),
    }
    for (flag, file) in [("--cert", "cert.pem"), ("--key", "key.pem")] {
        args.push(flag.to_owned());
        args.push(dir.join(file).display().to_string());
    }
    for header in headers {
        args.push("-H".to_owned());
        args.push((*header).to_owned());
    }
    args.push(format!("https://{addr}{path}"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(&args)
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "curl failed: {text} {output:?}");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head.split(' ').nth(1).expect("a status").parse().unwrap();
    let error = (head.lines())
        .find_map(|line| line.strip_prefix("x-remora-error: "))
        .unwrap_or_default()
        .to_owned();
    (status, error, body.to_owned())
}

/// A request and whether authorization lets it through: caller, method, path, headers,
/// allowed, why.
pub type Case<'a> = (&'a TlsFiles, &'a str, &'a str, &'a [&'a str], bool, &'a str);

/// Sends each case with [`curl`] to `addr`: an allowed request gets the app's answer (the
/// test backend's 404 for a path it does not know) and no `x-remora-error`, a denied one 403
/// `forbidden` and remora's own body. Returns how many were allowed.
pub async fn expect_verdicts(addr: SocketAddr, cases: &[Case<'_>]) -> u64 {
    let mut allowed = 0;
    for &(caller, method, path, headers, allow, why) in cases {
        let (status, error, body) = curl(addr, caller, method, path, headers).await;
        if allow {
            assert_eq!(
                (status, &*error),
                (404, ""),
                "{method} {path}: {why}; {body}"
            );
            allowed += 1;
        } else {
            assert_eq!(
                (status, &*error),
                (403, "forbidden"),
                "{method} {path}: {why}"
            );
            assert!(body.contains("is not authorized"), "{body}");
        }
    }
    allowed
}
