//! The fleet's session-ticket keys: one random key per epoch of `[tls] ticket_rotation`, sealed in etcd, made by whichever node needs it first, so a ticket resumes on any node.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use ring::rand::{SecureRandom, SystemRandom};

use crate::etcd::{bounded, Client, Keys, Sealer};
use crate::tls::ticketer::{epoch, FleetKeys};

/// Makes sure the keys of the current and the next epoch exist (creating a missing one only if
/// no other node did first), drops those older than the previous epoch, and hands the keys of
/// the previous, current and next epochs to `keys`.
pub async fn sync(
    client: &mut Client,
    etcd_keys: &Keys,
    sealer: &Sealer,
    rotation: Duration,
    timeout: Duration,
    keys: &FleetKeys,
) -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let current = epoch(now, rotation);
    let prefix = etcd_keys.tickets();
    let name = |e: u64| format!("{prefix}{e:020}");
    for e in [current, current + 1] {
        let key = name(e);
        let mut fresh = [0u8; 32];
        SystemRandom::new()
            .fill(&mut fresh)
            .map_err(|_| "no randomness for a ticket key")?;
        let sealed = sealer.seal(&key, &fresh)?;
        // Created once: a node that loses the race reads the winner's key below.
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), sealed, None)]);
        bounded(timeout, "ticket key", client.txn(txn)).await?;
    }
    let listing = bounded(
        timeout,
        "ticket keys",
        client.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let mut found = Vec::new();
    for kv in listing.kvs() {
        let Ok(key) = kv.key_str() else { continue };
        let Some(e) = key
            .strip_prefix(&prefix)
            .and_then(|e| e.parse::<u64>().ok())
        else {
            continue;
        };
        if e + 1 < current {
            let _ = bounded(timeout, "old ticket key", client.delete(key, None)).await;
            continue;
        }
        if e > current + 1 {
            continue;
        }
        let sealed = kv.value_str().map_err(|e| e.to_string())?;
        let plain = sealer.open(key, sealed)?;
        let bytes: [u8; 32] = plain
            .try_into()
            .map_err(|_| format!("{key}: not a 32-byte key"))?;
        found.push((e, bytes));
    }
    if found.iter().map(|(e, _)| *e).ne(keys.epochs()) {
        keys.set(&found);
    }
    Ok(())
}
