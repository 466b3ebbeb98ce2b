//! Prune plans (`plans/<name>`, `docs/design/repository-format.md` §19): what the *mark* phase of
//! a prune found unreferenced, so that backups running beside prune stop deduplicating against
//! it and a later *sweep* retires only what was marked and is still unreferenced.
//!
//! ```text
//! "IBSPLN" u16le version=1 ‖ sealed(metadata key, aad = "ibs-prune-plan\0" ‖ name, JSON body)
//! body: {"name", "created", "host", "packs": [hex], "keys": [hex], "segments": [hex],
//!        "observed_appends": [lock]}
//! ```
//!
//! The body is sealed under the metadata key, so only a holder of a writer state can write a plan
//! that readers accept, and the name is bound as associated data, so a plan cannot be replayed
//! under another name. A plan that does not open (bad magic, bad seal, a body naming another
//! plan or not parsing) is *honoured by nobody* ([`PlanReading::rejected`], ADR 0044): no sweep
//! acts on marks nobody can read, and a backup that skips a plan some sweeper can open is held
//! back by the sweep condition and by the sweeper's announcement (§19). Only a plan that opens
//! and whose sealed body carries the newer version of its header is refused
//! ([`RepoError::UnsupportedVersion`]): the version in the header alone is not authenticated, so
//! it alone never stops anyone.
use crate::crypto::SymKey;
use crate::error::{RepoError, Result};
use crate::ids::{KeyId, PackId, SegmentId};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub const PLAN_MAGIC: &[u8; 6] = b"IBSPLN";
pub const PLAN_VERSION: u16 = 1;
const AAD_PREFIX: &[u8] = b"ibs-prune-plan\0";

/// One prune plan: the packs and data-key envelopes its mark found unreferenced (candidates to
/// delete or repack, and unindexed packs; envelopes no kept chunk or manifest uses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunePlanObject {
    /// 32 lower-case hex digits; the object is `plans/<name>`.
    pub name: String,
    /// Unix seconds by the marking host's repository clock (for people; never compared).
    pub created: i64,
    /// The marking host (for people).
    pub host: String,
    pub packs: Vec<String>,
    pub keys: Vec<String>,
    /// Reference segments (`refs/`) no listed manifest names.
    #[serde(default)]
    pub segments: Vec<String>,
    /// Names of the append locks live when the mark began (for people: the sweep's rule is the
    /// `plans` field of every live append lock, storage-contract "Locks").
    #[serde(default)]
    pub observed_appends: Vec<String>,
}

/// What a set of plans marks, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// The plans' names, sorted.
    pub names: Vec<String>,
    pub packs: HashSet<PackId>,
    pub keys: HashSet<KeyId>,
    pub segments: HashSet<SegmentId>,
}

/// A plan that did not open under the metadata key: honoured by nobody, reported, and retired by
/// the next sweep that may delete it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RejectedPlan {
    /// The object's name under `plans/`.
    pub name: String,
    /// Why it does not open (no secret in it).
    pub reason: String,
}

/// The plans read for use: the marks of those that opened and the ones honoured by nobody.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanReading {
    pub marks: Marks,
    pub rejected: Vec<RejectedPlan>,
}

impl PlanReading {
    /// Takes one plan as read: its marks if it opened, a rejection if it did not open (or marks
    /// ids that do not parse); a newer version that opened, or any other error, is returned.
    pub fn take(&mut self, name: &str, read: Result<PrunePlanObject>) -> Result<()> {
        let rejected = match read.and_then(|p| self.marks.add(&p)) {
            Ok(()) => return Ok(()),
            Err(RepoError::Corrupt { detail, .. }) => detail,
            Err(e) => return Err(e),
        };
        self.rejected.push(RejectedPlan {
            name: name.to_owned(),
            reason: rejected,
        });
        Ok(())
    }
}

impl Marks {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Adds one plan's marks; all or, if one id does not parse, none.
    pub fn add(&mut self, plan: &PrunePlanObject) -> Result<()> {
        let bad = |what: &str, e: String| {
            RepoError::corrupt(format!("plans/{}", plan.name), format!("{what}: {e}"))
        };
        let packs = plan
            .packs
            .iter()
            .map(|p| PackId::from_hex(p).map_err(|e| bad("pack id", e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let keys = plan
            .keys
            .iter()
            .map(|k| KeyId::from_hex(k).map_err(|e| bad("key id", e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let segments = plan
            .segments
            .iter()
            .map(|g| SegmentId::from_hex(g).map_err(|e| bad("segment id", e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        self.packs.extend(packs);
        self.keys.extend(keys);
        self.segments.extend(segments);
        self.names.push(plan.name.clone());
        self.names.sort();
        Ok(())
    }
}

impl PrunePlanObject {
    /// A plan under a fresh random name.
    pub fn new(created: i64, host: String, packs: &[PackId], keys: &[KeyId]) -> Self {
        PrunePlanObject {
            name: hex::encode(rand::random::<[u8; 16]>()),
            created,
            host,
            packs: packs.iter().map(PackId::to_hex).collect(),
            keys: keys.iter().map(KeyId::to_hex).collect(),
            segments: Vec::new(),
            observed_appends: Vec::new(),
        }
    }

    fn aad(name: &str) -> Vec<u8> {
        [AAD_PREFIX, name.as_bytes()].concat()
    }

    pub fn to_bytes(&self, metadata_key: &SymKey) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("plan serializes");
        let mut out = PLAN_MAGIC.to_vec();
        out.extend_from_slice(&PLAN_VERSION.to_le_bytes());
        out.extend_from_slice(&metadata_key.seal(&Self::aad(&self.name), &body));
        out
    }

    /// Parses and authenticates `plans/<name>`. [`RepoError::Corrupt`]: it does not open (bad
    /// magic, bad seal, a body that does not parse or names another plan, a header version its
    /// sealed body does not repeat). [`RepoError::UnsupportedVersion`]: it opens under the
    /// metadata key and its sealed body carries the newer version of its header (§19: every
    /// version keeps this envelope and repeats its number as `"version"` in the body).
    pub fn from_bytes(name: &str, bytes: &[u8], metadata_key: &SymKey) -> Result<Self> {
        let object = format!("plans/{name}");
        if bytes.len() < 8 || &bytes[..6] != PLAN_MAGIC {
            return Err(RepoError::corrupt(object, "not a prune plan (bad magic)"));
        }
        let version = u16::from_le_bytes([bytes[6], bytes[7]]);
        let body = metadata_key
            .open(&Self::aad(name), &bytes[8..])
            .ok_or_else(|| {
                RepoError::corrupt(&object, "does not authenticate under the metadata key")
            })?;
        if version != PLAN_VERSION {
            let sealed = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("version").and_then(serde_json::Value::as_u64));
            if sealed != Some(u64::from(version)) {
                return Err(RepoError::corrupt(
                    object,
                    format!("version {version} in its header is not the version its sealed body carries"),
                ));
            }
            return Err(RepoError::UnsupportedVersion {
                object,
                found: version.into(),
                supported: PLAN_VERSION.into(),
            });
        }
        let plan: PrunePlanObject = serde_json::from_slice(&body)
            .map_err(|e| RepoError::corrupt(&object, format!("body: {e}")))?;
        if plan.name != name {
            return Err(RepoError::corrupt(
                object,
                format!("its body names plan {}", plan.name),
            ));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PrunePlanObject {
        let mut p = PrunePlanObject::new(
            1_800_000_000,
            "host-a".into(),
            &[PackId([0xab; 32]), PackId([0x01; 32])],
            &[KeyId([0x12; 16])],
        );
        p.observed_appends = vec!["0123456789abcdef0123456789abcdef".into()];
        p
    }

    #[test]
    fn round_trips_and_carries_its_version() {
        let k = SymKey::random();
        let p = sample();
        let bytes = p.to_bytes(&k);
        assert_eq!(&bytes[..6], PLAN_MAGIC);
        assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), 1);
        let back = PrunePlanObject::from_bytes(&p.name, &bytes, &k).unwrap();
        assert_eq!(back, p);
        let mut m = Marks::default();
        m.add(&back).unwrap();
        assert_eq!(m.names, vec![p.name.clone()]);
        assert!(m.packs.contains(&PackId([0xab; 32])) && m.packs.len() == 2);
        assert!(m.keys.contains(&KeyId([0x12; 16])));
    }

    #[test]
    fn refuses_a_tampered_renamed_foreign_or_newer_plan() {
        let k = SymKey::random();
        let p = sample();
        let bytes = p.to_bytes(&k);
        // Any flipped byte of the sealed body.
        for i in [8, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut t = bytes.clone();
            t[i] ^= 1;
            let e = PrunePlanObject::from_bytes(&p.name, &t, &k).unwrap_err();
            assert!(matches!(e, RepoError::Corrupt { .. }), "byte {i}: {e}");
        }
        // The same bytes under another name (the name is bound as associated data).
        let other = "ffffffffffffffffffffffffffffffff";
        let e = PrunePlanObject::from_bytes(other, &bytes, &k).unwrap_err();
        assert!(e.to_string().contains("authenticate"), "{e}");
        // Another repository's metadata key.
        let e = PrunePlanObject::from_bytes(&p.name, &bytes, &SymKey::random()).unwrap_err();
        assert!(matches!(e, RepoError::Corrupt { .. }), "{e}");
        // A header that claims a newer version is not believed on its own: the version must be
        // repeated inside the sealed body, else the plan is honoured by nobody (Corrupt).
        let mut t = bytes.clone();
        t[6..8].copy_from_slice(&2u16.to_le_bytes());
        let e = PrunePlanObject::from_bytes(&p.name, &t, &k).unwrap_err();
        assert!(matches!(e, RepoError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("version 2 in its header"), "{e}");
        // A garbage body under a newer header: Corrupt, not UnsupportedVersion.
        let e = PrunePlanObject::from_bytes(&p.name, b"IBSPLN\x02\x00garbage", &k).unwrap_err();
        assert!(matches!(e, RepoError::Corrupt { .. }), "{e}");
        // A sealed body of a newer version that says so: refused by number.
        let mut newer = PLAN_MAGIC.to_vec();
        newer.extend_from_slice(&2u16.to_le_bytes());
        newer.extend_from_slice(&k.seal(
            &PrunePlanObject::aad(&p.name),
            br#"{"version": 2, "name": "x", "what": "a newer build knows"}"#,
        ));
        match PrunePlanObject::from_bytes(&p.name, &newer, &k).unwrap_err() {
            RepoError::UnsupportedVersion {
                found, supported, ..
            } => assert_eq!((found, supported), (2, 1)),
            e => panic!("{e}"),
        }
        // A body sealed correctly but naming another plan.
        let mut q = p.clone();
        q.name = other.into();
        let mut forged = PLAN_MAGIC.to_vec();
        forged.extend_from_slice(&1u16.to_le_bytes());
        forged.extend_from_slice(&k.seal(
            &PrunePlanObject::aad(&p.name),
            &serde_json::to_vec(&q).unwrap(),
        ));
        let e = PrunePlanObject::from_bytes(&p.name, &forged, &k).unwrap_err();
        assert!(e.to_string().contains("names plan"), "{e}");
        // Not a plan at all.
        assert!(PrunePlanObject::from_bytes(&p.name, b"IBSDMG\x01\x00{}", &k).is_err());
    }

    #[test]
    fn a_reading_keeps_the_plans_that_open_and_rejects_the_others() {
        let k = SymKey::random();
        let p = sample();
        let mut reading = PlanReading::default();
        reading
            .take(
                &p.name,
                PrunePlanObject::from_bytes(&p.name, &p.to_bytes(&k), &k),
            )
            .unwrap();
        let junk = "0".repeat(32);
        reading
            .take(&junk, PrunePlanObject::from_bytes(&junk, b"garbage", &k))
            .unwrap();
        // An authenticated plan whose ids do not parse marks nothing at all.
        let mut odd = sample();
        odd.packs.push("not hex".into());
        reading.take(&odd.name, Ok(odd.clone())).unwrap();
        assert_eq!(reading.marks.names, vec![p.name.clone()]);
        assert_eq!(reading.marks.packs.len(), 2);
        let rejected: Vec<_> = reading.rejected.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(rejected, [junk.as_str(), odd.name.as_str()]);
        assert!(reading.rejected[0].reason.contains("bad magic"));
        // A newer version that opens, and storage errors, are not rejections.
        let newer = RepoError::UnsupportedVersion {
            object: "plans/x".into(),
            found: 2,
            supported: 1,
        };
        assert!(reading.take("x", Err(newer)).is_err());
    }
}
