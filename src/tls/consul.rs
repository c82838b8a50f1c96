//! `tls: source: consul`: the Connect CA of the local Consul agent. Two
//! blocking-query watches — the service's leaf certificate and the CA roots —
//! install new material whenever either changes, so leaf renewal and CA
//! rotation need no restart; a third follows the intentions for this
//! service when authorization asks for them. Queries are paced and back off
//! like discovery's (`consul::blocking`); while Consul fails, the last good
//! material and intentions stay in force. Until the first leaf and roots
//! arrive, handshakes fail; until the first intentions answer, authorization
//! denies what its rules do not decide (`tls.authorization.until_intentions_load`).
//! Intention entries that cannot be read are logged once per answer.

use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::backoff::Pacer;
use crate::consul::blocking::next_index;
use crate::consul::connect::{IntentionsAnswer, Leaf, Roots};
use crate::consul::{Client, ConsulError};
use crate::drain::Drain;

use super::MeshTls;
use super::authorization::Intentions;
use super::material::Material;

/// The latest leaf and roots.
#[derive(Default)]
struct Latest {
    leaf: Option<Leaf>,
    roots: Option<Roots>,
}

/// Starts the leaf and roots watches for `service`.
pub fn spawn_ca_watches(client: Arc<Client>, service: String, tls: Arc<MeshTls>, drain: &Drain) {
    let latest = Arc::new(Mutex::new(Latest::default()));
    let install = {
        let (tls, latest) = (Arc::clone(&tls), Arc::clone(&latest));
        move |update: &dyn Fn(&mut Latest)| {
            let mut latest = latest.lock().unwrap_or_else(|p| p.into_inner());
            update(&mut latest);
            if let (Some(leaf), Some(roots)) = (&latest.leaf, &latest.roots) {
                let material = Material::from_pem(
                    leaf.cert_pem.as_bytes(),
                    leaf.private_key_pem.as_bytes(),
                    roots.pem().as_bytes(),
                );
                match material {
                    Ok(material) => tls.install(material, "consul"),
                    Err(error) => tls.reject("consul", &error),
                }
            }
        }
    };
    let install = Arc::new(install);
    let leaf_client = Arc::clone(&client);
    let on_leaf = Arc::clone(&install);
    spawn(
        "leaf certificate",
        drain,
        move |index| {
            let (client, service) = (Arc::clone(&leaf_client), service.clone());
            async move { client.ca_leaf(&service, index).await }
        },
        move |leaf: Leaf| on_leaf(&|latest| latest.leaf = Some(leaf.clone())),
    );
    spawn(
        "CA roots",
        drain,
        move |index| {
            let client = Arc::clone(&client);
            async move { client.ca_roots(index).await }
        },
        move |roots: Roots| install(&|latest| latest.roots = Some(roots.clone())),
    );
}

/// Starts the watch of the intentions whose destination is `service`.
pub fn spawn_intentions_watch(
    client: Arc<Client>,
    service: String,
    intentions: Arc<Intentions>,
    drain: &Drain,
) {
    spawn(
        "intentions",
        drain,
        move |index| {
            let (client, service) = (Arc::clone(&client), service.clone());
            async move { client.intentions_for(&service, index).await }
        },
        move |answer: IntentionsAnswer| {
            if !answer.unreadable.is_empty() {
                tracing::warn!(
                    left_out = answer.unreadable.len(),
                    problems = ?answer.unreadable,
                    "Consul intentions entries left out: their source could not be read"
                );
            }
            tracing::info!(intentions = ?answer.intentions, "Consul intentions updated");
            intentions.set(answer.intentions);
        },
    );
}

/// Runs one watch until the drain starts: `query(index)` is a blocking
/// query, each answer goes to `answer` (also when unchanged: Consul
/// answers at the end of each wait).
fn spawn<T, Q, F>(
    what: &'static str,
    drain: &Drain,
    query: Q,
    mut answer: impl FnMut(T) + Send + 'static,
) where
    T: Send + 'static,
    Q: Fn(u64) -> F + Send + 'static,
    F: Future<Output = Result<(u64, T), ConsulError>> + Send,
{
    let mut drain = drain.clone();
    tokio::spawn(async move {
        let watch = async move {
            let mut pacer = Pacer::new();
            let mut index = 0;
            let mut failing = false;
            loop {
                pacer.turn().await;
                match query(index).await {
                    Ok((answered, value)) => {
                        pacer.succeeded();
                        if std::mem::take(&mut failing) {
                            tracing::info!(what, "Consul Connect watch recovered");
                        }
                        if answered != index {
                            answer(value);
                        }
                        index = next_index(index, answered);
                    }
                    Err(error) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(what, %error, "Consul Connect watch failing; keeping the last answer");
                        }
                        tokio::time::sleep(pacer.failed()).await;
                    }
                }
            }
        };
        tokio::select! {
            () = watch => {}
            () = drain.signaled() => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::documented_body;

    #[test]
    fn the_documented_leaf_and_roots_make_material() {
        let leaf: Leaf =
            serde_json::from_str(&documented_body("connect-ca-leaf-response.json")).unwrap();
        let roots: Roots =
            serde_json::from_str(&documented_body("connect-ca-roots-response.json")).unwrap();
        // The documented leaf verifies against the documented root, and its
        // key matches: the three make usable material.
        let material = Material::from_pem(
            leaf.cert_pem.as_bytes(),
            leaf.private_key_pem.as_bytes(),
            roots.pem().as_bytes(),
        )
        .expect("material from the Consul docs samples");
        assert_eq!(material.serial, "08");
        assert_eq!(material.own_identity.unwrap().to_string(), leaf.service_uri);
    }
}
