//! One look at `locks/`: list, read every lock object, and judge each one live or stale.
//!
//! Staleness is judged only by what this process has seen itself, on its own monotonic clock (the
//! async runtime's clock, which tests pause and advance): a lock is stale once its bytes have not
//! changed for the stale timeout since this process first saw them so, or at once when its holder
//! is provably a process of this kernel and pid namespace that no longer runs. Timestamps written
//! by the holder are never compared with this host's clock, so a holder whose clock is behind or
//! ahead is judged like any other.
//!
//! Observations are kept for the life of the process, keyed by the storage's location and the
//! lock's key, so a long-running daemon accumulates them across operations. An object listed and
//! then gone before it could be read is simply not part of the view.

use super::identity::Identity;
use super::{LockInfo, LockKind, Phase};
use crate::error::Result;
use crate::layout;
use ibs_storage::{DynStorage, ErrorKind, ObjectKey};
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What one look saw.
#[derive(Debug, Default)]
pub(super) struct View {
    /// Every live lock other than `own`, by key.
    pub others: Vec<(ObjectKey, LockInfo)>,
    /// The bytes of `own` as listed and read, if it is there.
    pub own: Option<bytes::Bytes>,
    /// How many stale locks this look removed.
    pub removed: usize,
}

struct Observation {
    digest: blake3::Hash,
    since: Instant,
}

static OBSERVED: LazyLock<Mutex<HashMap<(String, String), Observation>>> =
    LazyLock::new(Mutex::default);

fn table() -> std::sync::MutexGuard<'static, HashMap<(String, String), Observation>> {
    OBSERVED.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long this process has seen exactly these bytes under `key`, recording them if they are new.
fn unchanged_for(location: &str, key: &ObjectKey, bytes: &[u8], now: Instant) -> Duration {
    let digest = blake3::hash(bytes);
    let mut t = table();
    let entry = t
        .entry((location.to_owned(), key.as_str().to_owned()))
        .or_insert(Observation { digest, since: now });
    if entry.digest != digest {
        *entry = Observation { digest, since: now };
    }
    now.saturating_duration_since(entry.since)
}

/// A lock object whose bytes do not parse (a foreign file, a newer format): it conflicts with
/// everything, and goes away like any lock once it has not changed for the stale timeout.
fn unreadable(key: &ObjectKey) -> LockInfo {
    LockInfo {
        kind: LockKind::Exclusive,
        operation: format!("unknown (unreadable lock object {key})"),
        host: "unknown".into(),
        pid: 0,
        pid_start: None,
        boot_id: None,
        pid_ns: None,
        created: 0,
        refreshed: 0,
        seq: 0,
        ticket: 0,
        phase: Phase::Held,
        plans: Vec::new(),
        sweeping: None,
        unreadable: true,
    }
}

/// Lists and reads `locks/`. With `remove`, stale locks are deleted (a lock deleted meanwhile by
/// someone else counts as removed too); without, they are left out of the view.
pub(super) async fn look(
    storage: &DynStorage,
    me: &Identity,
    own: Option<&ObjectKey>,
    stale_after: Duration,
    remove: bool,
) -> Result<View> {
    let location = storage.location();
    let mut view = View::default();
    let listed = storage.list(layout::LOCKS).await?;
    let now = Instant::now();
    {
        let names: HashSet<&str> = listed.iter().map(|o| o.key.as_str()).collect();
        table().retain(|(loc, k), _| loc != &location || names.contains(k.as_str()));
    }
    for obj in listed {
        let bytes = match storage.get(&obj.key).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue, // released or removed since the listing
            Err(e) => return Err(e.into()),
        };
        if Some(&obj.key) == own {
            view.own = Some(bytes);
            continue;
        }
        let info =
            serde_json::from_slice::<LockInfo>(&bytes).unwrap_or_else(|_| unreadable(&obj.key));
        let why_stale = match me.local_liveness(&info) {
            Some(true) => None,
            Some(false) => Some("its process on this host has exited".to_owned()),
            None => {
                let quiet = unchanged_for(&location, &obj.key, &bytes, now);
                (quiet >= stale_after).then(|| {
                    format!(
                        "not refreshed for {} s as seen from here (stale after {} s)",
                        quiet.as_secs(),
                        stale_after.as_secs()
                    )
                })
            }
        };
        match why_stale {
            None => view.others.push((obj.key, info)),
            Some(why) if remove => {
                tracing::warn!(
                    "removing stale lock {}: {}: {why}",
                    obj.key,
                    info.describe()
                );
                match storage.delete(&obj.key).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    // ibs never locks `locks/` objects: one under an object lock, or whose delete
                    // the storage's policy refuses, was planted by someone else. It stays stale
                    // and out of the view (as without `remove`); failing here would let one such
                    // object stop every operation of the repository.
                    Err(e) if matches!(e.kind, ErrorKind::Locked | ErrorKind::Authentication) => {
                        tracing::warn!("stale lock {} stays: its delete was refused: {e}", obj.key);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                table().remove(&(location.clone(), obj.key.as_str().to_owned()));
                view.removed += 1;
            }
            Some(_) => {}
        }
    }
    Ok(view)
}
