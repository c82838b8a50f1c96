//! etcd discovery: the instances of service `NAME` are the keys under
//! `<etcd.prefix>NAME/`, one per instance, each holding an
//! `etcd::value::InstanceValue` (JSON or go-kit's `host:port`). One watch
//! per service, fanning out to every upstream that names it.
//!
//! The algorithm: read every key under the prefix (a range get), hand the
//! set to the upstreams, then watch the range from the revision after that
//! read, so nothing that changed between the two is missed; each event
//! updates the set and reaches the balancers at once. When the watch breaks
//! (etcd down, a member partitioned, an error, a compaction of the revision
//! it would resume from), the set is read afresh after a jittered backoff
//! (`backoff::Pacer`; at once after a compaction, which is no failure) and
//! watched again from that read. Resuming from the last revision seen
//! instead would miss everything of an etcd that came back with its data
//! replaced (an empty or older data directory): etcd accepts a watch from a
//! revision its store has not reached without complaint, and reports
//! neither the new store's keys nor the old keys' deletion.
//!
//! A value that describes no endpoint (neither form, a name instead of an
//! IP address, port 0) is skipped, with a warning once per value (not again
//! on a fresh read of the same value); weight 0 leaves an instance out.
//! Fail static: while etcd fails, the upstreams keep their last known set,
//! with the logs and metrics of `discovery::FailStatic`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use crate::backoff::Pacer;
use crate::discovery::{EndpointSink, FailStatic, Instance};
use crate::drain::Drain;
use crate::etcd::value::InstanceValue;
use crate::etcd::{Change, Client, EtcdError, KeyValue, Watched};

/// Starts the watch of service `service` (keys under `prefix`) feeding
/// `upstreams`; it stops when `drain` is signalled.
pub fn spawn(
    client: Arc<Client>,
    service: String,
    prefix: String,
    upstreams: Vec<Arc<dyn EndpointSink>>,
    drain: &Drain,
) {
    let mut drain = drain.clone();
    tokio::spawn(async move {
        let state = FailStatic::new("etcd", &service, upstreams);
        tokio::select! {
            () = watch(&client, &prefix, state) => {}
            () = drain.signaled() => {}
        }
    });
}

/// The instances under one prefix, by key.
#[derive(Default)]
struct Instances {
    /// Each key's value, and the instance it describes (`None`: skipped).
    by_key: BTreeMap<String, (Vec<u8>, Option<Instance>)>,
}

impl Instances {
    /// Sets `key` to `value`; warns when a new value describes no endpoint.
    fn put(&mut self, key: String, value: Vec<u8>) {
        if let Some((known, _)) = self.by_key.get(&key)
            && *known == value
        {
            return;
        }
        let instance = InstanceValue::parse(&value).and_then(|parsed| {
            Ok(Instance {
                addr: parsed.socket_addr()?,
                weight: parsed.weight,
                tags: parsed.tags,
                meta: parsed.meta,
            })
        });
        let instance = instance
            .inspect_err(|error| {
                let shown = String::from_utf8_lossy(&value);
                tracing::warn!(%key, value = %shown, %error, "etcd value describes no endpoint; skipped");
            })
            .ok();
        self.by_key.insert(key, (value, instance));
    }

    /// Replaces everything with a fresh read (values seen before are not
    /// warned about again).
    fn replace(&mut self, kvs: Vec<KeyValue>) {
        let mut fresh = Instances::default();
        for kv in kvs {
            match self.by_key.remove(&kv.key) {
                Some(known) if known.0 == kv.value => {
                    fresh.by_key.insert(kv.key, known);
                }
                _ => fresh.put(kv.key, kv.value),
            }
        }
        *self = fresh;
    }

    fn set(&self) -> Vec<Instance> {
        Instance::sorted(
            self.by_key
                .values()
                .filter_map(|(_, i)| i.clone())
                .collect(),
        )
    }
}

/// Follows `prefix` forever.
async fn watch(client: &Client, prefix: &str, mut state: FailStatic) {
    let mut pacer = Pacer::new();
    let mut instances = Instances::default();
    loop {
        pacer.turn().await;
        let Err(error) = follow(client, prefix, &mut instances, &mut state, &mut pacer).await;
        if let EtcdError::Compacted { .. } = error {
            tracing::info!(%prefix, %error, "reading the etcd service afresh");
            continue;
        }
        state.failed(&error);
        tokio::time::sleep(pacer.failed()).await;
    }
}

/// Reads the set, then watches it from the revision after that read,
/// until something goes wrong.
async fn follow(
    client: &Client,
    prefix: &str,
    instances: &mut Instances,
    state: &mut FailStatic,
    pacer: &mut Pacer,
) -> Result<Infallible, EtcdError> {
    let read = client.get_prefix(prefix).await?;
    instances.replace(read.kvs);
    state.answered();
    state.publish(instances.set());
    let mut watch = client.watch(prefix, true, read.revision + 1).await?;
    loop {
        match watch.next().await? {
            Watched::Created => {
                pacer.succeeded();
                state.answered();
            }
            Watched::Changes(changes) => {
                for change in changes {
                    match change {
                        Change::Put(kv) => instances.put(kv.key, kv.value),
                        Change::Delete { key } => {
                            instances.by_key.remove(&key);
                        }
                    }
                }
                state.answered();
                state.publish(instances.set());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn both_value_shapes_become_instances_and_bad_ones_are_skipped() {
        let mut instances = Instances::default();
        instances.replace(vec![
            kv(
                "/s/a",
                r#"{"address":"10.0.0.2","port":80,"weight":3,"tags":["v2"]}"#,
            ),
            kv("/s/b", "10.0.0.1:80"),
            kv("/s/c", "not an endpoint"),
            kv("/s/d", r#"{"address":"10.0.0.4","port":80,"weight":0}"#),
            kv("/s/e", "10.0.0.1:80"),
        ]);
        let set = instances.set();
        let found: Vec<(String, u32)> = (set.iter())
            .map(|i| (i.addr.to_string(), i.weight))
            .collect();
        assert_eq!(
            found,
            [("10.0.0.1:80".into(), 1), ("10.0.0.2:80".into(), 3)]
        );
        assert_eq!(set[1].tags, ["v2"]);
        instances.put("/s/c".into(), b"10.0.0.3:80".to_vec());
        instances.by_key.remove("/s/b");
        instances.by_key.remove("/s/e");
        let addrs: Vec<String> = instances.set().iter().map(|i| i.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.2:80", "10.0.0.3:80"]);
    }
}
