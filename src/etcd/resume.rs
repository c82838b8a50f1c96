//! Whether a watch that broke (etcd down, a member partitioned) may be
//! opened again after the revision of the last change it saw, or must read
//! afresh. etcd accepts a watch from a revision it has not reached yet
//! without complaint, so after its store was replaced — a member started
//! again with an empty data directory, or restored from an older snapshot —
//! such a watch would report neither the new store's keys nor the old keys'
//! deletion. A replaced store shows as a current revision below the one
//! seen (a store that lives on never goes back, and reads are linearizable:
//! a member behind the others answers once it caught up), checked with a
//! count-only read of the watched range each time a watch is opened from a
//! revision remembered (after a failure; the configuration source's first
//! watch too, after the read at start), never while a watch streams. The
//! cluster ID in the answer's header cannot tell: a member started again
//! with the same flags gets the same one. A replaced store already written
//! past the revision seen is not noticed.

use super::{Client, EtcdError};

/// `Some(seen)` while etcd's store still holds `seen`, the revision of the
/// last change a watch of `key` (every key under it when `prefix`) saw: the
/// watch resumes after it. `None` when the store's revision went back below
/// it: its data was replaced and `what` (`the service`, `the key`) must be
/// read afresh, which is logged here.
pub async fn still_held(
    client: &Client,
    key: &str,
    prefix: bool,
    seen: i64,
    what: &str,
) -> Result<Option<i64>, EtcdError> {
    let current = client.revision(key, prefix).await?;
    if current >= seen {
        return Ok(Some(seen));
    }
    tracing::info!(
        %key,
        "etcd's revision went back from {seen} to {current}: its data was replaced; reading {what} afresh"
    );
    Ok(None)
}
