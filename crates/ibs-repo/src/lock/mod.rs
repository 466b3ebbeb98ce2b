//! Repository locks, kept as objects under `locks/` (never `flock` or atime, which SMB and object
//! stores do not offer). The protocol is normative in `docs/design/storage-contract.md` ("Locks");
//! it needs nothing from storage beyond atomic `put`, `get`, `list` and `delete` of uniquely named
//! objects, no compare-and-swap.
//!
//! | holder \ wants | shared (restore, check, verify) | append (backup) | prune (prune, forget) | exclusive (undelete, rewrap, set-cert) |
//! |---|---|---|---|---|
//! | shared    | granted | waits / fails | waits / fails | waits / fails |
//! | append    | waits / fails | granted | granted | waits / fails |
//! | prune     | waits / fails | granted | waits / fails | waits / fails |
//! | exclusive | waits / fails | waits / fails | waits / fails | waits / fails |
//!
//! Backups only add objects under names no other writer uses (random pack ids, content-addressed
//! index segments, per-backup manifests and data keys), so any number of them, from any number of
//! writers, run together; readers that judge the whole repository (check, verify) and restores,
//! which should not meet half-written backups, wait for them, and every operation that deletes
//! waits for everyone, except prune and forget: they run beside backups under the two-phase prune
//! protocol (`docs/design/repository-format.md` §19, ADR 0039). A backup's lock names the prune
//! plans it read and could open ([`LockInfo::plans`], listed and read right after the lock became
//! held), which is what lets a sweep tell the backups that honour its plan from those that may not
//! ([`appends_unaware_of`]); a prune lock announces the plans its holder is about to sweep
//! ([`LockInfo::sweeping`], [`LockGuard::announce_sweep`]), which is what stops a backup that
//! could not open one of them ([`plans`]).
//!
//! Acquisition is Lamport's bakery over lock objects: a contender publishes its lock in the
//! `choosing` phase, reads every lock, takes the ticket `1 + max(tickets seen)`, publishes it
//! (`waiting`), lets a storage whose listings may lag settle (ADR 0052), and enters once no
//! conflicting lock is `choosing` and none has a smaller `(ticket, name)`. Every contender applies
//! the same rule, so of two that see each other exactly one goes first; one that did not see the
//! other chose its ticket after the other's was published, so its ticket is the larger.
//! Staleness and liveness: see [`observe`] and [`identity`]. Invariant: a holder writes only
//! while [`fence::LockState::check`] passes.

mod fence;
mod guard;
mod identity;
mod observe;
mod plans;

pub use fence::{FenceSlot, FencedStorage, LockState};
pub use guard::LockGuard;
pub use identity::{hostname, process_start, Identity};
pub use plans::{list_plans, read_plans};

use crate::clock::Clock;
use crate::crypto::SymKey;
use crate::error::{RepoError, Result};
use crate::layout;
use crate::plan::PlanReading;
use ibs_storage::{DynStorage, ObjectKey};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A holder rewrites its lock this often.
pub const REFRESH_SECS: u64 = 30;
/// Others judge a lock stale once they have seen it unchanged this long.
pub const STALE_SECS: u64 = 300;
/// A holder stops writing once its last successful refresh began this long ago.
pub const VALID_SECS: u64 = 120;
// A holder stops writing before anyone may judge its lock stale, even if its last refresh was
// delayed by almost a whole refresh interval.
const _: () = assert!(VALID_SECS + REFRESH_SECS < STALE_SECS);

/// Pause between publishing a ticket and the first check, for listings that lag behind writes
/// (only on a backend without `Capabilities::list_after_write`).
pub const SETTLE_MILLIS: u64 = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Shared,
    /// Adds objects only: compatible with other appends (several writers back up at once).
    Append,
    /// Prune and forget: compatible with append (the two-phase prune plan keeps backups safe),
    /// not with shared, another prune or exclusive. Builds before it read such a lock as
    /// unreadable, i.e. exclusive.
    Prune,
    Exclusive,
}

/// Where a contender is in the protocol. Locks written by older versions have no phase and count
/// as `held` with ticket 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Choosing,
    Waiting,
    #[default]
    Held,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub kind: LockKind,
    pub operation: String,
    pub host: String,
    pub pid: u32,
    pub pid_start: Option<u64>,
    #[serde(default)]
    pub boot_id: Option<String>,
    #[serde(default)]
    pub pid_ns: Option<String>,
    /// The holder's own wall clock; for people only, never compared with another host's clock.
    pub created: i64,
    pub refreshed: i64,
    /// Incremented by every write of the lock: a lock whose bytes change is alive.
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub ticket: u64,
    #[serde(default)]
    pub phase: Phase,
    /// The prune plans (`plans/<name>`, names) this holder listed and read right after its lock
    /// became held, those that opened under the metadata key: an append holder deduplicates
    /// against nothing they mark. Absent: none, or a build before plans (whose held backups a
    /// sweep waits for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<String>,
    /// Prune locks only: the plans the holder sweeps or waits to sweep (announced before it reads
    /// the locks for the sweep condition). Absent on a prune lock: a build before ADR 0044, which
    /// may be sweeping any plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweeping: Option<Vec<String>>,
    /// Not stored: the object did not parse (a foreign file, a newer format).
    #[serde(skip)]
    pub unreadable: bool,
}

impl LockInfo {
    pub fn describe(&self) -> String {
        format!(
            "{} lock {} by {} (pid {} on host {}) since {}",
            match self.kind {
                LockKind::Shared => "shared",
                LockKind::Append => "append",
                LockKind::Prune => "prune",
                LockKind::Exclusive => "exclusive",
            },
            match self.phase {
                Phase::Held => "held",
                Phase::Waiting | Phase::Choosing => "requested",
            },
            self.operation,
            self.pid,
            self.host,
            crate::clock::rfc3339(self.created)
        )
    }
}

/// The time constants of the protocol; tests shrink them.
#[derive(Clone, Debug)]
pub struct LockTiming {
    pub settle: Duration,
    pub refresh: Duration,
    pub stale: Duration,
    pub valid: Duration,
    /// Pause between checks while waiting (a random 50-150 % of it).
    pub poll: Duration,
}

impl Default for LockTiming {
    fn default() -> Self {
        LockTiming {
            settle: Duration::from_millis(SETTLE_MILLIS),
            refresh: Duration::from_secs(REFRESH_SECS),
            stale: Duration::from_secs(STALE_SECS),
            valid: Duration::from_secs(VALID_SECS),
            poll: Duration::from_millis(500),
        }
    }
}

/// How to acquire: timing and who we are.
#[derive(Clone, Debug)]
pub struct LockConfig {
    pub timing: LockTiming,
    pub identity: Identity,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            timing: LockTiming::default(),
            identity: Identity::current(),
        }
    }
}

/// Two locks may be held together only when both are shared, or both append, or one append and
/// one prune (the table in the module doc).
pub fn conflicts(a: LockKind, b: LockKind) -> bool {
    use LockKind::*;
    !matches!(
        (a, b),
        (Shared, Shared) | (Append, Append) | (Append, Prune) | (Prune, Append)
    )
}

/// Our own lock object and how to rewrite it.
struct Own {
    storage: DynStorage,
    clock: Arc<dyn Clock>,
    key: ObjectKey,
    info: LockInfo,
    written: bytes::Bytes,
}

impl Own {
    async fn write(&mut self) -> Result<()> {
        self.info.seq += 1;
        self.info.refreshed = self.clock.now_unix();
        let bytes: bytes::Bytes = serde_json::to_vec(&self.info)
            .expect("lock serializes")
            .into();
        self.storage.put(&self.key, bytes.clone()).await?;
        self.written = bytes;
        Ok(())
    }

    async fn remove(&self) {
        match self.storage.delete(&self.key).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!("could not remove lock {}: {e}", self.key),
        }
    }

    fn name(&self) -> &str {
        self.key.name()
    }

    /// The first live lock that keeps us from entering.
    fn blocker<'a>(&self, others: &'a [(ObjectKey, LockInfo)]) -> Option<&'a LockInfo> {
        let mine = (self.info.ticket, self.name());
        others
            .iter()
            .filter(|(_, l)| conflicts(self.info.kind, l.kind))
            .find(|(k, l)| l.phase == Phase::Choosing || (l.ticket, k.name()) < mine)
            .map(|(_, l)| l)
    }
}

/// Acquires a lock of `kind`, waiting up to `wait` for conflicting holders to go away.
pub async fn acquire(
    storage: &DynStorage,
    clock: Arc<dyn Clock>,
    kind: LockKind,
    operation: &str,
    wait: Duration,
) -> Result<LockGuard> {
    acquire_with(
        storage,
        clock,
        kind,
        operation,
        wait,
        &LockConfig::default(),
    )
    .await
}

/// [`acquire`] with explicit timing and identity.
pub async fn acquire_with(
    storage: &DynStorage,
    clock: Arc<dyn Clock>,
    kind: LockKind,
    operation: &str,
    wait: Duration,
    cfg: &LockConfig,
) -> Result<LockGuard> {
    acquire_noting(storage, clock, kind, operation, wait, cfg, None).await
}

/// [`acquire_with`]; with `note_plans` (the metadata key), the plans under `plans/` are listed and
/// read right after the write that makes the lock held, and those that open are recorded in it by
/// one more write ([`LockInfo::plans`], [`LockGuard::plan_reading`]). Invariant (§19): a sweep
/// that reads this lock held and naming its plan knows the holder read that plan before loading
/// anything it deduplicates against; one that reads it held without the plan waits; one that
/// reads it not yet held (or not at all) read it before the held write, so after writing its plan
/// and announcing its sweep: the holder's listing, which follows the held write, shows the plan,
/// and if the holder cannot open it, its look at the locks shows the announcement and it stops
/// ([`RepoError::Locked`]). A plan of a newer version that opens fails the acquisition.
pub async fn acquire_noting(
    storage: &DynStorage,
    clock: Arc<dyn Clock>,
    kind: LockKind,
    operation: &str,
    wait: Duration,
    cfg: &LockConfig,
    note_plans: Option<&SymKey>,
) -> Result<LockGuard> {
    let t = &cfg.timing;
    let me = &cfg.identity;
    let deadline = Instant::now()
        .checked_add(wait)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 86_400));
    let name = hex::encode(rand::random::<[u8; 16]>());
    let now = clock.now_unix();
    let mut own = Own {
        storage: storage.clone(),
        clock: clock.clone(),
        key: layout::lock(&name),
        info: LockInfo {
            kind,
            operation: operation.into(),
            host: me.host.clone(),
            pid: me.pid,
            pid_start: me.pid_start,
            boot_id: me.boot_id.clone(),
            pid_ns: me.pid_ns.clone(),
            created: now,
            refreshed: now,
            seq: 0,
            ticket: 0,
            phase: Phase::Choosing,
            plans: Vec::new(),
            sweeping: (kind == LockKind::Prune).then(Vec::new),
            unreadable: false,
        },
        written: bytes::Bytes::new(),
    };
    let result = contend(&mut own, me, t, deadline).await;
    match result {
        Ok(()) => {}
        Err(e) => {
            own.remove().await;
            return Err(e);
        }
    }
    let began = Instant::now();
    own.info.phase = Phase::Held;
    if let Err(e) = own.write().await {
        own.remove().await;
        return Err(e);
    }
    // Only after the write that makes the lock held: a sweep that read it not yet held knows
    // this listing comes later (§19).
    let mut reading = PlanReading::default();
    if let Some(mk) = note_plans {
        let noted = match plans::note(storage, mk, me, t, &own.key).await {
            // No plan opened: the held lock already says so, no second write.
            Ok(r) if r.marks.names.is_empty() => {
                reading = r;
                Ok(())
            }
            Ok(r) => {
                own.info.plans = r.marks.names.clone();
                reading = r;
                own.write().await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = noted {
            own.remove().await;
            return Err(e);
        }
    }
    let state = LockState::new(operation, t.valid, began);
    trace("enter", &format!("{kind:?}"), own.name());
    let key = own.key.clone();
    let own = Arc::new(tokio::sync::Mutex::new(own));
    let refresher = tokio::spawn(refresh_loop(
        own.clone(),
        me.clone(),
        t.clone(),
        state.clone(),
    ));
    Ok(LockGuard {
        storage: storage.clone(),
        key,
        state,
        refresher,
        armed: None,
        reading,
        own,
    })
}

/// The bakery: doorway, then wait for our turn. On `Ok` we may enter; on `Err` our lock is still
/// to be removed by the caller.
async fn contend(own: &mut Own, me: &Identity, t: &LockTiming, deadline: Instant) -> Result<()> {
    'doorway: loop {
        own.info.phase = Phase::Choosing;
        own.write().await?;
        let view = observe::look(&own.storage, me, Some(&own.key), t.stale, true).await?;
        own.info.ticket = 1 + view.others.iter().map(|(_, l)| l.ticket).max().unwrap_or(0);
        own.info.phase = Phase::Waiting;
        own.write().await?;
        let mut last_write = Instant::now();
        // A backend whose listing shows every completed put needs no settle delay: the bakery's
        // rule holds over linearizable reads and writes (storage contract, "Acquiring").
        if !own.storage.capabilities().list_after_write {
            tokio::time::sleep(t.settle).await;
        }
        loop {
            let view = observe::look(&own.storage, me, Some(&own.key), t.stale, true).await?;
            if view.own.as_ref() != Some(&own.written) {
                // Someone judged our lock stale (we were paused for longer than the stale
                // timeout): start over with a fresh ticket.
                tracing::warn!("lock {} vanished while waiting; requesting again", own.key);
                continue 'doorway;
            }
            let blocker = own.blocker(&view.others);
            if blocker.is_none() && view.removed == 0 {
                return Ok(());
            }
            // A look that removed a stale lock does not decide: the next one, after the pause,
            // does, even past the deadline (a dead holder never makes a caller fail).
            if view.removed == 0 && Instant::now() >= deadline {
                let holder = blocker
                    .map(LockInfo::describe)
                    .unwrap_or_else(|| "another writer".into());
                return Err(RepoError::Locked { holder });
            }
            if last_write.elapsed() >= t.refresh {
                own.write().await?;
                last_write = Instant::now();
            }
            let jitter = rand::random::<f64>() + 0.5;
            let pause = t.poll.mul_f64(jitter).max(t.settle);
            let until_deadline = deadline.saturating_duration_since(Instant::now());
            let pause = if view.removed == 0 && !until_deadline.is_zero() {
                pause.min(until_deadline)
            } else {
                pause
            };
            tokio::time::sleep(pause).await;
        }
    }
}

/// Rewrites the held lock every `refresh`. Before each rewrite it checks that the object is still
/// the one it wrote last and that no conflicting lock with a smaller key has appeared (which only
/// a protocol violation elsewhere can cause); any failure loses the lock for good.
async fn refresh_loop(
    own: Arc<tokio::sync::Mutex<Own>>,
    me: Identity,
    t: LockTiming,
    state: Arc<LockState>,
) {
    loop {
        tokio::time::sleep(t.refresh).await;
        let mut own = own.lock().await;
        let began = Instant::now();
        let verdict: std::result::Result<(), String> = async {
            let view = observe::look(&own.storage, &me, Some(&own.key), t.stale, false)
                .await
                .map_err(|e| format!("could not read the locks: {e}"))?;
            if view.own.as_ref() != Some(&own.written) {
                return Err("another process removed or replaced it".into());
            }
            let mine = (own.info.ticket, own.name().to_owned());
            if let Some((_, l)) = view.others.iter().find(|(k, l)| {
                conflicts(own.info.kind, l.kind)
                    && l.phase != Phase::Choosing
                    && (l.ticket, k.name().to_owned()) < mine
            }) {
                return Err(format!("a conflicting, older {} appeared", l.describe()));
            }
            own.write()
                .await
                .map_err(|e| format!("refreshing it failed: {e}"))
        }
        .await;
        match verdict {
            Ok(()) => state.refreshed(began),
            Err(why) => {
                state.lose(why);
                return;
            }
        }
    }
}

/// A test and diagnostics hook: with `IBS_LOCK_TRACE=FILE`, every acquisition and release of a
/// lock appends one line `enter|exit KIND PID NAME UNIX_NS` to FILE (one `write` per line, with
/// `O_APPEND`, so lines of several processes never interleave).
fn trace(what: &str, kind: &str, name: &str) {
    let Some(path) = std::env::var_os("IBS_LOCK_TRACE") else {
        return;
    };
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let line = format!("{what} {kind} {} {name} {ns}\n", std::process::id());
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Every live lock, for `ibs repo locks` and for messages (stale ones are left out, not removed).
pub async fn list(storage: &DynStorage, _clock: &dyn Clock) -> Result<Vec<LockInfo>> {
    let view = observe::look(
        storage,
        &Identity::current(),
        None,
        Duration::from_secs(STALE_SECS),
        false,
    )
    .await?;
    Ok(view.others.into_iter().map(|(_, l)| l).collect())
}

/// The live locks a sweep of the prune plans `plans` must wait for: every *held* append lock that
/// does not name all of them (a backup that may have loaded the index before the plans existed,
/// or a build that does not read plans), and every lock object that does not parse (it may be a
/// newer build's backup). An append lock not yet held does not count: its holder lists the plans
/// after it becomes held, hence after this look (and a build that predates plans waits for the
/// sweeper's prune lock, which it reads as exclusive). Not counting them is what keeps a sweep
/// from waiting on a backup that itself waits, through the bakery, for a reader queued behind the
/// sweeper. Stale locks (the lock rules, as observed by this process with `timing`) are left
/// out, not removed; `own` (the sweeper's lock) is skipped.
pub async fn appends_unaware_of(
    storage: &DynStorage,
    plans: &[String],
    own: Option<&str>,
    timing: &LockTiming,
) -> Result<Vec<(String, LockInfo)>> {
    let own = own.map(layout::lock);
    let view = observe::look(
        storage,
        &Identity::current(),
        own.as_ref(),
        timing.stale,
        false,
    )
    .await?;
    Ok(view
        .others
        .into_iter()
        .filter(|(_, l)| {
            l.unreadable
                || (l.kind == LockKind::Append
                    && l.phase == Phase::Held
                    && !plans.iter().all(|p| l.plans.contains(p)))
        })
        .map(|(k, l)| (k.name().to_owned(), l))
        .collect())
}
