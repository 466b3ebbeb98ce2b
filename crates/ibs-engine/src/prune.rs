//! `prune`: deletes what no manifest references and repacks partly used packs by copying sealed
//! chunks (no decryption). A pure *plan* step followed by an *execute* step, so `--dry-run` prints
//! exactly what would happen.
//!
//! Prune fails safe against a listing that lies or lags (a man in the middle, a hostile server, an
//! eventually consistent store). Before it deletes anything:
//! - every backup the caller's own records say exists ([`Expected`]) must be listed, or prune
//!   refuses with [`EngineError::ListingIncomplete`];
//! - every manifest listed must open (its refs and authenticated catalog), and every chunk they
//!   reference must be in the index, or prune refuses;
//! - a pack, data-key envelope or reference segment is deleted (or repacked) only if the listing shows it and its
//!   age, by the listing's modification time against the repository's clock, is at least the
//!   grace period ([`DEFAULT_GRACE`], 24 h). Anything younger, or not listed, is kept whole with
//!   its index entries, so data written by a backup whose manifest the listing does not (yet)
//!   show survives. A grace period of zero disables the age test (tests, and an operator who
//!   knows the store is quiet).
//!
//! Nothing is deleted outright: what prune removes goes into one grace-area batch
//! ([`crate::trash`]), and batches older than the delete delay are purged at the end of the run.
//!
//! Crash safety: new packs → new index segments listing everything that stays → (on WORM storage)
//! extended locks → delete old segments → delete packs → delete unused data-key envelopes → delete
//! reference segments no manifest lists. At every point the index on storage covers every chunk
//! that any manifest references.
//!
//! Memory: no list of every index entry is held (issue 18). The index is built from the segments
//! one at a time, cut down to the referenced chunks once the manifests are read, and the plan and
//! the rewrite read the same segments again pack by pack ([`crate::repack`]).
//!
//! On WORM storage (object lock, `crate::worm`): before deleting, prune extends the lock of every
//! object a kept backup still needs; a delete the store refuses (a lock that has not expired, a
//! key without delete permission) keeps the object and is named in the plan ([`PrunePlan::locked`],
//! [`PrunePlan::refused`]); an old index segment that stays keeps every pack it names
//! ([`PrunePlan::kept_for_index`]), so the index on storage never points at a deleted pack. A
//! later prune, once the locks expired, removes what is left.
//!
//! Damaged packs (those with a `damaged/` marker): prune builds its index knowing them, so a chunk
//! with a healthy copy (stored again by a self-healing backup) is kept only in the healthy pack. A
//! damaged pack none of whose still-referenced chunks lacks a healthy copy therefore has nothing
//! live and is deleted, together with its marker. A damaged pack that still holds the only copy of
//! some referenced chunk is kept as it is (never repacked: its bytes cannot be trusted as a whole),
//! and so is its marker. Markers of packs that are neither indexed nor stored are removed.

use crate::repack::{read_segment, Fate, Planner};
use crate::state::WriterState;
use crate::trash::{Purged, Retire};
use crate::worm::{self, Deleted, NeededUntil};
use crate::EngineError;
use futures::StreamExt;
use ibs_repo::clock::parse_rfc3339;
use ibs_repo::ids::{ChunkId, KeyId, PackId, SegmentId};
use ibs_repo::index::Index;
use ibs_repo::manifest::{BackupStatus, RefsPart};
use ibs_repo::plan::Marks;
use ibs_repo::{layout, Repository};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// How long a pack or envelope is kept after it was written, whatever the listing says.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// What the caller knows of the backups that must be listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Backup ids the caller's own records say exist (written, and not forgotten): prune refuses
    /// unless the listing shows every one.
    Backups(BTreeSet<String>),
    /// The caller has no records and the operator vouches for the listing.
    TrustListing,
}

#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub dry_run: bool,
    pub lock_wait: Duration,
    pub expected: Expected,
    /// Packs and envelopes younger than this are never deleted ([`DEFAULT_GRACE`]).
    pub grace: Duration,
    /// How long what prune removes stays in the grace area, where `undelete` can bring it back
    /// ([`crate::trash::DEFAULT_DELETE_DELAY`]); batches older than this are purged. Zero deletes
    /// at once.
    pub delete_delay: Duration,
    /// Dead bytes left in the packs that stay, at most, in percent ([`DEFAULT_MAX_UNUSED_PERCENT`]);
    /// 0 repacks every pack with a dead byte, 100 repacks nothing.
    pub max_unused_percent: u8,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PrunePlan {
    pub packs_total: usize,
    pub delete: Vec<PackId>,
    pub repack: Vec<PackId>,
    pub unindexed: Vec<PackId>,
    pub keep: usize,
    pub bytes_freed_estimate: u64,
    /// Live bytes the repack copies.
    pub repack_bytes: u64,
    /// Live entry bytes of the packs that stay, and the dead bytes left in them after the plan.
    pub used_bytes: u64,
    pub unused_bytes_after: u64,
    pub chunks_used: usize,
    pub chunks_unused: usize,
    pub delete_keys: Vec<KeyId>,
    /// Packs that fail their hash check: never repacked (their contents cannot be trusted).
    pub damaged: Vec<PackId>,
    /// Damage markers removed with their pack (or because their pack is gone).
    pub delete_markers: Vec<PackId>,
    /// Packs that would be deleted or repacked but are younger than the grace period, or indexed
    /// yet not listed: kept whole.
    pub young_packs: Vec<PackId>,
    /// Unused data-key envelopes younger than the grace period: kept.
    pub young_keys: Vec<KeyId>,
    /// Reference segments (`refs/`) kept backups list.
    pub segments_kept: usize,
    /// Reference segments no kept backup lists: retired into the grace area.
    pub delete_segments: Vec<SegmentId>,
    /// Unlisted reference segments younger than the grace period: kept.
    pub young_segments: usize,
    /// Objects whose lock prune made sure lasts as long as kept backups need them (object-lock
    /// storage only).
    pub locks_checked: usize,
    /// Objects prune would have deleted but that are still locked: kept for a later prune.
    pub locked: Vec<String>,
    /// Objects whose delete the storage refused for lack of permission: kept.
    pub refused: Vec<String>,
    /// Unused packs kept because an old index segment that names them could not be deleted.
    pub kept_for_index: Vec<PackId>,
    /// The grace-area batch this run moved what it removed into (none in a dry run, or with a
    /// delete delay of zero).
    pub grace_batch: Option<String>,
    /// Older batches this run deleted for good.
    pub purged: Purged,
    /// The prune plans (§19) this run swept and dropped.
    pub swept_plans: Vec<String>,
    /// Objects under `plans/` that do not open under the metadata key: honoured by nobody, and
    /// deleted after a sweep where the storage allows it (ADR 0044).
    pub rejected_plans: Vec<ibs_repo::plan::RejectedPlan>,
    /// A plan on storage that this run wrote, or found, and did not sweep because backups that
    /// may not honour it still run: a later prune sweeps it. In a dry run, the plan a real run
    /// would leave.
    pub pending_plan: Option<String>,
    /// Packs and data-key envelopes the pending plan marks.
    pub marked_packs: usize,
    pub marked_keys: usize,
    /// The locks of the backups the pending plan's sweep waits for.
    pub waiting_for: Vec<String>,
}

/// The dead bytes prune leaves in the packs that stay, at most, as a percentage of their entry
/// bytes (live and dead; headers do not count: see `repack::fate`), unless the operator says
/// otherwise. Packs with dead bytes are repacked, the most wasteful first, only until the rest is
/// within it (`repack::Planner::finish`): a repack reads a whole pack to drop a part of it.
pub const DEFAULT_MAX_UNUSED_PERCENT: u8 = 10;

/// Reference segments read at once while a backup's references are marked: the reads overlap
/// each other's round trips (and, on a local folder, the disk's), and the ids are taken in order.
const SEGMENTS_AHEAD: usize = 4;

/// What the listing says of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub size: u64,
    /// At least the grace period old (by the listing's modification time).
    pub settled: bool,
}

/// Prune in two phases beside running backups (mark, then sweep): see [`crate::mark_sweep`].
pub async fn prune(
    repo: &Repository,
    state: &WriterState,
    opts: PruneOptions,
) -> Result<PrunePlan, EngineError> {
    crate::mark_sweep::prune(repo, state, opts).await
}

/// Refuses unless the listing shows every backup the caller expects.
fn check_expected(listed: &[String], expected: &Expected) -> Result<(), EngineError> {
    let Expected::Backups(known) = expected else {
        return Ok(());
    };
    let listed_set: HashSet<&str> = listed.iter().map(String::as_str).collect();
    let missing: Vec<String> = known
        .iter()
        .filter(|id| !listed_set.contains(id.as_str()))
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(EngineError::ListingIncomplete {
            missing,
            listed: listed.len(),
        })
    }
}

/// One pass of prune under the prune lock. With `marks = None` it computes the candidates (a mark;
/// the caller passes `dry_run`); with marks it is a sweep: only marked packs and envelopes count as
/// settled, so every other pack is kept whole with its index entries and data keys, and only
/// marked objects that are still unreferenced (and old enough) are retired.
pub(crate) async fn prune_pass(
    repo: &Repository,
    state: &WriterState,
    opts: &PruneOptions,
    marks: Option<&Marks>,
) -> Result<PrunePlan, EngineError> {
    let mk = &state.keys.metadata;
    let mut ids = repo.list_backup_ids().await?;
    check_expected(&ids, &opts.expected)?;
    let now = repo.clock().now_unix();
    // The index first, one segment at a time, and the names of the segments it came from: every
    // later pass reads exactly these (a backup beside this run may add others; their packs are
    // young or unmarked, hence kept).
    let damaged = repo.damaged_packs().await?;
    let mut index = Index::with_damaged(damaged.clone());
    let mut segment_packs: HashMap<String, Vec<PackId>> = HashMap::new();
    let old_segments = repo
        .for_each_segment(mk, |name, r| {
            segment_packs.insert(name.to_owned(), r.iter().map(|p| p.id).collect());
            r.iter().for_each(|p| index.add_pack(p));
        })
        .await?;
    // Where a chunk has copies under several data keys (a backup after a certificate change
    // sealed it again), the copy kept is the one new backups depend on (keysel): the segments are
    // read a second time with that preference.
    if let Some(keys) = crate::keysel::prune_preference(repo, state, &index).await? {
        drop(index);
        index = Index::with_preference(damaged.clone(), keys);
        for name in &old_segments {
            for rec in read_segment(repo, name, mk).await? {
                index.add_pack(&rec);
            }
        }
    }
    let mut manifest_keys = HashSet::new();
    // A referenced chunk the index does not know means segments are missing from the listing
    // (or lost): deleting "unindexed" packs could then delete that chunk's only copy.
    let mut unindexed_refs: Vec<String> = Vec::new();
    // Newest first (ids begin with their start time), so the first successful one is the backup
    // retention never removes: its objects are needed from now on.
    ids.sort_by(|a, b| b.cmp(a));
    let mut needed = NeededUntil::default();
    let mut newest_ok = false;
    // Reference segments (manifest versions 3 and 4) kept backups list, with the newest time a
    // kept backup needs each (`segments_listed`). A segment whose every id was taken with a time at least
    // as new is not read again (`segments_read`: its chunks are marked already). A version-4
    // source's delta segments are listed (kept) too; its removed ids are not its references: its
    // base segments are read without them (and then do not count as wholly taken), its added ids
    // are taken as they are.
    let mut segments_listed: HashMap<SegmentId, i64> = HashMap::new();
    let mut segments_read: HashMap<SegmentId, i64> = HashMap::new();
    let (mut delete_segments, mut young_segments) = (Vec::new(), 0usize);
    for id in ids {
        let unreadable = |e| EngineError::ManifestUnreadable {
            backup: id.clone(),
            cause: e,
        };
        let m = repo.read_manifest(&id).await.map_err(unreadable)?;
        let part = m.open_refs_part(mk).map_err(unreadable)?;
        let data_key = KeyId::from_hex(&m.catalog.data_key_id)?;
        manifest_keys.insert(data_key);
        // The authenticated catalog's finish time (an unreadable one counts as now).
        let mut t = parse_rfc3339(&m.catalog.finished).unwrap_or(now).min(now);
        if !newest_ok && m.catalog.status == BackupStatus::Succeeded {
            newest_ok = true;
            t = now;
        }
        needed.manifests.push((id.clone(), t));
        needed.key(data_key, t);
        let mut unindexed = false;
        let mut take = |r: &[ChunkId]| {
            for c in r {
                match index.mark(c) {
                    Some(pack) => needed.pack(pack, t),
                    None => unindexed = true,
                }
            }
        };
        match part {
            RefsPart::Inline(r) => take(&r.all),
            RefsPart::Segmented(sources) => {
                for s in &sources {
                    // Base and delta segments alike are kept (and locked) while listed.
                    for seg in s.listed() {
                        let l = segments_listed.entry(*seg).or_insert(t);
                        *l = (*l).max(t);
                    }
                    let delta = repo.read_delta(&id, s, mk).await.map_err(unreadable)?;
                    let unread =
                        |seg: &&SegmentId| segments_read.get(*seg).is_none_or(|&seen| seen < t);
                    let wanted: Vec<SegmentId> =
                        s.segments.iter().filter(unread).copied().collect();
                    let mut reads = futures::stream::iter(wanted)
                        .map(|seg| async move { (seg, repo.read_ref_segment(&seg, mk).await) })
                        .buffered(SEGMENTS_AHEAD);
                    while let Some((seg, ids)) = reads.next().await {
                        let ids = ids.map_err(unreadable)?;
                        if delta.removed.is_empty() {
                            segments_read.insert(seg, t);
                            take(&ids);
                        } else {
                            let kept: Vec<ChunkId> = ids
                                .into_iter()
                                .filter(|c| delta.removed.binary_search(c).is_err())
                                .collect();
                            take(&kept);
                        }
                    }
                    take(&delta.added);
                }
            }
        }
        if unindexed {
            unindexed_refs.push(id);
        }
    }
    if let Some(first) = unindexed_refs.first() {
        return Err(EngineError::IndexIncomplete {
            backups: unindexed_refs.len(),
            first: first.clone(),
        });
    }
    let grace = opts.grace.as_secs() as i64;
    let listing = |o: &ibs_storage::ObjectInfo| Listed {
        size: o.size,
        // No grace period: the age is not consulted. Otherwise an unknown or future time
        // counts as young.
        settled: grace == 0 || o.modified.is_some_and(|m| now - m >= grace),
    };
    // In a sweep, what the plan did not mark is young whatever its age: a backup that honours the
    // plan may depend on any of it (§19).
    let marked_pack = |id: &PackId| marks.is_none_or(|m| m.packs.contains(id));
    let marked_key = |k: &KeyId| marks.is_none_or(|m| m.keys.contains(k));
    let listed: HashMap<PackId, Listed> = repo
        .storage()
        .list(layout::PACKS)
        .await?
        .iter()
        .filter_map(|o| layout::parse_pack(&o.key).map(|id| (id, listing(o))))
        .map(|(id, l)| {
            let settled = l.settled && marked_pack(&id);
            (id, Listed { settled, ..l })
        })
        .collect();
    let envelopes: HashMap<KeyId, Listed> = repo
        .storage()
        .list(layout::DATA_KEYS)
        .await?
        .iter()
        .filter_map(|o| layout::parse_data_key(&o.key).map(|k| (k, listing(o))))
        .map(|(k, l)| {
            let settled = l.settled && marked_key(&k);
            (k, Listed { settled, ..l })
        })
        .collect();
    // Reference segments no kept backup lists (left by backups that were forgotten or never
    // committed): retired once settled, like packs.
    for o in repo.storage().list(layout::REFS).await? {
        let Some(seg) = layout::parse_refs_segment(&o.key) else {
            continue;
        };
        if !segments_listed.contains_key(&seg) {
            // In a sweep, only marked segments: a backup running beside it may have written
            // the others and not yet committed its manifest (§19).
            if listing(&o).settled && marks.is_none_or(|m| m.segments.contains(&seg)) {
                delete_segments.push(seg);
            } else {
                young_segments += 1;
            }
        }
    }
    delete_segments.sort();
    needed.segments = segments_listed;
    // From here on the index holds only what is referenced: a pack's live entries are those it
    // locates in that pack (crate::repack).
    index.retain_marked();
    let mut planner = Planner::new(&index, &listed, &manifest_keys);
    for name in &old_segments {
        for rec in read_segment(repo, name, mk).await? {
            planner.add(&rec);
        }
    }
    let (mut plan, facts) = planner.finish(&envelopes, opts.max_unused_percent);
    plan.segments_kept = needed.segments.len();
    plan.delete_segments = delete_segments;
    plan.young_segments = young_segments;
    let indexed: HashSet<PackId> = index.packs().map(|(p, _)| p).collect();
    plan.delete_markers = damaged
        .iter()
        .filter(|p| {
            plan.delete.contains(p)
                || plan.unindexed.contains(p)
                || (!indexed.contains(p) && !listed.contains_key(p))
        })
        .copied()
        .collect();
    plan.delete_markers.sort();
    if opts.dry_run {
        return Ok(plan);
    }

    // 1. Repack (copy the live sealed chunks of partly used packs into new packs) and 2. new index
    //    segments for everything that stays, segment by segment.
    let rewritten = crate::repack::rewrite(repo, mk, &old_segments, &index, &facts).await?;
    plan.repack.retain(|p| !rewritten.damaged.contains(p));
    plan.damaged = rewritten.damaged;

    // 2b. On object-lock storage, before anything is deleted: every object kept backups need
    //     stays locked long enough (the new packs were just written, locked).
    if let Some(policy) = repo.storage().lock_policy() {
        let kept = facts.iter().filter(|(id, f)| {
            !rewritten.fresh.contains(*id)
                && (matches!(f.fate, Fate::Keep | Fate::Young) || plan.damaged.contains(*id))
        });
        let kept = kept.map(|(id, f)| (*id, f.live_keys.as_slice()));
        plan.locks_checked = worm::extend_locks(repo, policy, &mut needed, kept, now).await?;
    }

    let retire = Retire::new(repo, opts.delete_delay);
    plan.grace_batch = retire.batch().map(str::to_owned);
    // 3. Drop the old segments (into the grace area). A segment that cannot be removed (locked)
    //    keeps every pack it names.
    let new_names = rewritten.segments;
    let old: Vec<&String> = old_segments
        .iter()
        .filter(|n| !new_names.contains(*n))
        .collect();
    let keys: Vec<_> = old.iter().map(|n| layout::index(n)).collect();
    let mut still_indexed: HashSet<PackId> = HashSet::new();
    let outcomes = worm::try_remove_all(repo, &retire, &keys).await?;
    for ((name, key), d) in old.iter().zip(&keys).zip(outcomes) {
        if !record(&mut plan, key, d) {
            still_indexed.extend(segment_packs.remove(*name).unwrap_or_default());
        }
    }
    // 4. Packs nothing needs any more.
    let mut doomed = Vec::new();
    for id in plan
        .delete
        .iter()
        .chain(plan.repack.iter())
        .chain(plan.unindexed.iter())
    {
        if still_indexed.contains(id) {
            // Still named by the index, so still readable: its chunks' data keys stay too.
            let keys = facts.get(id).map(|f| f.keys.as_slice()).unwrap_or_default();
            plan.delete_keys.retain(|k| !keys.contains(k));
            plan.kept_for_index.push(*id);
        } else {
            doomed.push(layout::pack(id));
        }
    }
    record_all(
        &mut plan,
        &doomed,
        worm::try_remove_all(repo, &retire, &doomed).await?,
    );
    // 5. Markers of damaged packs that are gone (after their pack: a crash in between leaves a
    //    marker without a pack, which the next prune removes).
    for id in &plan.delete_markers {
        repo.delete_damage_marker(id).await?;
    }
    // 6. Envelopes of data keys no chunk and no manifest uses.
    let keys: Vec<_> = plan.delete_keys.iter().map(layout::data_key).collect();
    record_all(
        &mut plan,
        &keys,
        worm::try_remove_all(repo, &retire, &keys).await?,
    );
    // 6b. Reference segments no kept backup lists.
    let keys: Vec<_> = plan
        .delete_segments
        .iter()
        .map(layout::refs_segment)
        .collect();
    record_all(
        &mut plan,
        &keys,
        worm::try_remove_all(repo, &retire, &keys).await?,
    );
    // 7. Batches whose delete delay has passed, this run's included when the delay is zero.
    plan.purged = crate::trash::purge(repo, opts.delete_delay).await?;
    let _ = repo
        .storage()
        .remove_stale_temporaries(Duration::from_secs(3600))
        .await;
    Ok(plan)
}

/// Notes in the plan every refused delete among `keys`' outcomes.
fn record_all(plan: &mut PrunePlan, keys: &[ibs_storage::ObjectKey], outcomes: Vec<Deleted>) {
    for (key, d) in keys.iter().zip(outcomes) {
        record(plan, key, d);
    }
}

/// Notes a refused delete in the plan; true when the object is gone.
fn record(plan: &mut PrunePlan, key: &ibs_storage::ObjectKey, d: Deleted) -> bool {
    match d {
        Deleted::Yes => return true,
        Deleted::Locked => plan.locked.push(key.to_string()),
        Deleted::Refused => plan.refused.push(key.to_string()),
    }
    false
}
