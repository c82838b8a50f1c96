//! `tls: source: files`: the certificate, key and CA read from PEM files,
//! and re-read every `tls.reload_interval`. When the bytes of any of them
//! changed, the three are parsed together and, if they make valid material
//! (the key matches the certificate, the CA parses), installed for new
//! handshakes; otherwise the current material stays and the rejection is
//! logged and counted — a half-written file is retried at the next tick.
//! Polling the contents works for in-place writes, renames and the symlink
//! swaps of Kubernetes secret volumes alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::MeshTls;
use super::material::{Material, MaterialError};
use crate::drain::Drain;

/// The three PEM files.
#[derive(Debug, Clone)]
pub struct PemFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The files' bytes, as last read.
#[derive(PartialEq, Eq)]
struct Contents([Vec<u8>; 3]);

impl PemFiles {
    fn read(&self) -> Result<Contents, MaterialError> {
        let read = |what: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|source| MaterialError::Read {
                what,
                path: path.display().to_string(),
                source,
            })
        };
        Ok(Contents([
            read("tls.cert", &self.cert)?,
            read("tls.key", &self.key)?,
            read("tls.ca", &self.ca)?,
        ]))
    }

    /// Loads the files once, at start: a problem is an error.
    pub fn load(&self, tls: &MeshTls) -> Result<(), MaterialError> {
        let contents = self.read()?;
        tls.install(parse(&contents)?, "files");
        Ok(())
    }

    /// Re-reads the files every `interval` until the drain starts.
    pub fn spawn_reloader(self, tls: Arc<MeshTls>, interval: Duration, mut drain: Drain) {
        tokio::spawn(async move {
            let mut last = self.read().ok();
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = drain.signaled() => return,
                }
                let contents = match self.read() {
                    Ok(contents) => contents,
                    Err(error) => {
                        tls.reject("files", &error);
                        continue;
                    }
                };
                if last.as_ref() == Some(&contents) {
                    continue;
                }
                match parse(&contents) {
                    Ok(material) => tls.install(material, "files"),
                    Err(error) => tls.reject("files", &error),
                }
                last = Some(contents);
            }
        });
    }
}

fn parse(contents: &Contents) -> Result<Material, MaterialError> {
    let [cert, key, ca] = &contents.0;
    Material::from_pem(cert, key, ca)
}
