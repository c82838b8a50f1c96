//! A client of an etcd v3 cluster, over the `etcd-client` crate (gRPC on
//! tonic, rustls with ring): prefix and key reads that say at which
//! revision they were made, watches from a revision on, and the lease
//! calls of a registration. Discovery, registration and the configuration
//! source use it; what an instance's value looks like is `value`.
//!
//! Endpoints come from `etcd.endpoints`, one connection per member.
//! Requests go to one member, the first listed at the start; a request that
//! member cannot take (gRPC `UNAVAILABLE`: refused, no leader; or no answer
//! within [`REQUEST_TIMEOUT`]) is made again on the next member at once,
//! each member once, and the requests after it go there too. (A connection
//! reset in the middle of a call fails that call; the next one is refused
//! and moves on.) Repeating is
//! safe: reads and watches change nothing, a put or a delete sets the same
//! state again, a lease granted twice leaves one unused that expires with
//! its TTL, and a lease revoked twice is gone (the second answer is an
//! error). (Not the crate's channel balanced over every endpoint:
//! tonic reports a member it cannot connect to as ready and fails the call
//! there, so that balancer sent a share of the requests to a member that
//! was down, and each of them cost its caller a backoff.) Each connection
//! is made lazily and again after it failed (with a user, the first call
//! authenticates), so an etcd that is down at start only delays what needs
//! it. The password is read from `etcd.password_file` and never
//! logged; an expired auth token is renewed by the crate. `https://`
//! members are verified against `etcd.ca_file` only (there is no system
//! trust store here), and get `etcd.client_cert` / `etcd.client_key` when
//! they ask for a client certificate. HTTP/2 keep-alive pings (every 10 s,
//! 5 s to answer) notice a member that went silent (a partition), which
//! ends the streams on it; every call asks for a leader
//! (`require_leader`), so a member cut off from its cluster's quorum ends
//! its watches instead of keeping them silently open. Each attempt of a
//! unary call times out after [`REQUEST_TIMEOUT`].

pub mod value;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions,
    WatchOptions, WatchStream,
};
use tokio::sync::Mutex;

use crate::config::EtcdConfig;

/// Longest a unary call (get, put, grant, revoke) may take on one member.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection to a member may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on an idle connection, and how long one may wait for its
/// answer (etcd refuses pings more often than every 5 s).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot read {what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("etcd request failed: {0}")]
    Request(#[from] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the watch's revision {requested} was compacted (etcd keeps {compacted} on)")]
    Compacted { requested: i64, compacted: i64 },
    #[error("etcd cancelled the watch: {0}")]
    Cancelled(String),
    #[error("etcd closed the watch stream")]
    StreamEnded,
}

/// A key and its value, as read or as a watch reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
}

/// A read: the revision of the store it saw, and the keys found.
#[derive(Debug)]
pub struct Read {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
}

/// One change a watch reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put(KeyValue),
    Delete { key: String },
}

/// A client of the cluster of an `etcd` section; cheap to share.
pub struct Client {
    /// One per endpoint, in the order of `etcd.endpoints`.
    members: Vec<Member>,
    options: ConnectOptions,
    /// The index of the member requests go to.
    current: AtomicUsize,
}

/// One member of the cluster and the connection to it once made (the
/// crate's client is a cheap handle).
struct Member {
    endpoint: String,
    connected: Mutex<Option<etcd_client::Client>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoints: Vec<&str> = self.members.iter().map(|m| m.endpoint.as_str()).collect();
        f.debug_struct("Client")
            .field("endpoints", &endpoints)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Reads the files the section names (password, CA, client certificate
    /// and key); connects only when first used.
    pub fn from_config(config: &EtcdConfig) -> Result<Client, EtcdError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true)
            .with_auto_token_refresh(true);
        if let (Some(user), Some(path)) = (&config.username, &config.password_file) {
            let password = read("the etcd password file", path)?;
            let password = String::from_utf8_lossy(&password);
            options = options.with_user(user.clone(), password.trim_end_matches(['\r', '\n']));
        }
        let https = config.endpoints.iter().any(|e| e.starts_with("https://"));
        if https {
            let mut tls = TlsOptions::new();
            if let Some(path) = &config.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read("the etcd CA file", path)?));
            }
            if let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) {
                tls = tls.identity(Identity::from_pem(
                    read("the etcd client certificate", cert)?,
                    read("the etcd client key", key)?,
                ));
            }
            options = options.with_tls(tls);
        }
        let members = (config.endpoints.iter())
            .map(|endpoint| Member {
                endpoint: endpoint.clone(),
                connected: Mutex::new(None),
            })
            .collect();
        Ok(Client {
            members,
            options,
            current: AtomicUsize::new(0),
        })
    }

    /// Makes `call` on the current member; when that member cannot take it
    /// ([`is_unreachable`]), moves on to the next member and makes it again
    /// there, until each member had it once.
    async fn request<T, F, Fut>(&self, call: F) -> Result<T, EtcdError>
    where
        F: Fn(etcd_client::Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let count = self.members.len();
        let mut untried = count;
        let mut index = self.current.load(Ordering::Relaxed);
        loop {
            let member = &self.members[index];
            let result = match member.connection(&self.options).await {
                Ok(client) => within(call(client)).await,
                Err(error) => Err(error),
            };
            untried -= 1;
            match result {
                Err(error) if untried > 0 && is_unreachable(&error) => {
                    tracing::debug!(member = %member.endpoint, %error, "etcd member unreachable; trying the next");
                    let next = (index + 1) % count;
                    // Unless another request moved on already.
                    let _ = (self.current).compare_exchange(
                        index,
                        next,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    // This request's own next member: each one once, whatever
                    // other requests do to `current` meanwhile.
                    index = next;
                }
                result => return result,
            }
        }
    }

    /// Every key under `prefix`, and the revision they were read at.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Read, EtcdError> {
        self.read(prefix, Some(GetOptions::new().with_prefix()))
            .await
    }

    /// The key `key` (none or one), and the revision it was read at.
    pub async fn get(&self, key: &str) -> Result<Read, EtcdError> {
        self.read(key, None).await
    }

    async fn read(&self, key: &str, options: Option<GetOptions>) -> Result<Read, EtcdError> {
        let answer = (self.request(|client| {
            let options = options.clone();
            async move { client.kv_client().get(key, options).await }
        }))
        .await?;
        let revision = answer.header().map_or(0, |header| header.revision());
        let kvs = (answer.kvs().iter())
            .map(|kv| KeyValue {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: kv.value().to_vec(),
            })
            .collect();
        Ok(Read { revision, kvs })
    }

    /// Watches `key` (every key under it when `prefix`) from `revision` on:
    /// nothing that changed since then is missed.
    pub async fn watch(&self, key: &str, prefix: bool, revision: i64) -> Result<Watch, EtcdError> {
        let mut options = WatchOptions::new().with_start_revision(revision);
        if prefix {
            options = options.with_prefix();
        }
        let stream = (self.request(|client| {
            let options = options.clone();
            async move { client.watch_client().watch(key, Some(options)).await }
        }))
        .await?;
        Ok(Watch {
            stream,
            requested: revision,
        })
    }

    /// Puts `key` with `value`, attached to `lease` (gone with it).
    pub async fn put_with_lease(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
    ) -> Result<(), EtcdError> {
        let options = PutOptions::new().with_lease(lease);
        (self.request(|client| {
            let options = options.clone();
            async move { client.kv_client().put(key, value, Some(options)).await }
        }))
        .await?;
        Ok(())
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        (self.request(|client| async move { client.kv_client().delete(key, None).await })).await?;
        Ok(())
    }

    /// A new lease of `ttl` (whole seconds, rounded up); its ID.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let seconds = i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX);
        let granted = (self
            .request(|client| async move { client.lease_client().grant(seconds, None).await }))
        .await?;
        Ok(granted.id())
    }

    /// Keeps `lease` alive once (one request on a keep-alive stream, its
    /// answer read); false when etcd no longer knows the lease.
    pub async fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        let kept =
            self.request(|client| async move { client.lease_client().keep_alive(lease).await });
        match kept.await {
            // The stream (and the lease's keeper) close when dropped.
            Ok(_) => Ok(true),
            // The crate reports a TTL of 0 in the answer this way.
            Err(EtcdError::Request(etcd_client::Error::LeaseKeepAliveError(reason)))
                if reason == "lease not found" =>
            {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Revokes `lease`: every key attached to it is deleted.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        (self.request(|client| async move { client.lease_client().revoke(lease).await })).await?;
        Ok(())
    }
}

impl Member {
    /// The connection, made now when there is none yet.
    async fn connection(&self, options: &ConnectOptions) -> Result<etcd_client::Client, EtcdError> {
        let mut connected = self.connected.lock().await;
        if let Some(client) = &*connected {
            return Ok(client.clone());
        }
        let connect = etcd_client::Client::connect([&self.endpoint], Some(options.clone()));
        let client = within(connect).await?;
        *connected = Some(client.clone());
        Ok(client)
    }
}

/// True when a member could not take a request: it refused or lost the
/// connection or has no leader (gRPC `UNAVAILABLE`), or did not answer in
/// time. Another member may take it.
fn is_unreachable(error: &EtcdError) -> bool {
    match error {
        EtcdError::Timeout(_) => true,
        EtcdError::Request(etcd_client::Error::GRpcStatus(status)) => {
            status.code() == tonic::Code::Unavailable
        }
        _ => false,
    }
}

/// A running watch.
pub struct Watch {
    stream: WatchStream,
    /// The revision it started from.
    requested: i64,
}

/// What a watch reported.
#[derive(Debug)]
pub enum Watched {
    /// etcd accepted the watch (no change yet).
    Created,
    /// Changes, in order.
    Changes(Vec<Change>),
}

impl Watch {
    /// The next report. A compacted start revision, a cancelled watch and
    /// a stream that ended are errors: the watch is over.
    pub async fn next(&mut self) -> Result<Watched, EtcdError> {
        let Some(answer) = self.stream.message().await? else {
            return Err(EtcdError::StreamEnded);
        };
        if answer.compact_revision() > 0 {
            return Err(EtcdError::Compacted {
                requested: self.requested,
                compacted: answer.compact_revision(),
            });
        }
        if answer.canceled() {
            return Err(EtcdError::Cancelled(answer.cancel_reason().to_owned()));
        }
        if answer.created() && answer.events().is_empty() {
            return Ok(Watched::Created);
        }
        let changes = (answer.events().iter())
            .filter_map(|event| {
                let kv = event.kv()?;
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                Some(match event.event_type() {
                    EventType::Put => Change::Put(KeyValue {
                        key,
                        value: kv.value().to_vec(),
                    }),
                    EventType::Delete => Change::Delete { key },
                })
            })
            .collect();
        Ok(Watched::Changes(changes))
    }
}

/// `call`, failing after [`REQUEST_TIMEOUT`].
async fn within<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(EtcdError::Timeout(REQUEST_TIMEOUT)),
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::File {
        what,
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint that refuses connections (a port bound, not listening),
    /// and the socket that holds the port.
    fn refusing() -> (String, tokio::net::TcpSocket) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        (format!("http://{}", socket.local_addr().unwrap()), socket)
    }

    #[tokio::test]
    async fn a_request_a_member_refuses_is_made_again_on_the_next_member() {
        let (a, _a) = refusing();
        let (b, _b) = refusing();
        let yaml =
            format!("service: {{ name: test }}\netcd: {{ endpoints: [\"{a}\", \"{b}\"] }}\n");
        let config = crate::config::parse(&yaml, "test.yaml").unwrap();
        let client = Client::from_config(config.etcd.as_ref().unwrap()).unwrap();
        let error = client.get("/k").await.unwrap_err();
        assert!(is_unreachable(&error), "{error}");
        assert_eq!(
            client.current.load(Ordering::Relaxed),
            1,
            "the next requests go to the second member"
        );
    }
}
