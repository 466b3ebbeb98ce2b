//! Object names in the repository. All names are built here and nowhere else; `docs/design/
//! repository-format.md` §Layout is the normative list.

use crate::ids::{KeyId, PackId, SegmentId};
use ibs_storage::ObjectKey;

/// The folder ibs creates under the configured location and writes nothing outside of.
pub const ROOT_FOLDER: &str = "MASBackup";

pub const CONFIG: &str = "config";
pub const PACKS: &str = "packs/";
pub const INDEX: &str = "index/";
pub const BACKUPS: &str = "backups/";
/// Reference segments (manifest versions 3 and 4): `refs/<segment id hex>`, see `refseg.rs`.
pub const REFS: &str = "refs/";
pub const LOCKS: &str = "locks/";
pub const DATA_KEYS: &str = "keys/data/";
pub const CERTS: &str = "keys/certs/";
pub const REPO_KEYS: &str = "keys/repo-";
/// Damage markers, one per pack that failed verification (see `damaged.rs`).
pub const DAMAGED: &str = "damaged/";
/// The grace area: what prune and forget removed, kept until the delete delay has passed so
/// `undelete` can bring it back. `trash/<batch>/<original key>`, one batch per operation.
pub const TRASH: &str = "trash/";
/// Prune plans (§19): `plans/<32 hex>`, the objects a prune marked and a later sweep may retire.
pub const PLANS: &str = "plans/";

/// Key prefixes of the objects the repository writes exactly once (content-addressed packs, index
/// and reference segments, manifests, data-key envelopes, and on object-lock storage the config,
/// which refuses certificate changes there). On a versioned store a later version of any of them is
/// never read and is tamper evidence unless it holds the same content (ADR 0035, ADR 0040).
pub const WRITE_ONCE: [&str; 6] = [CONFIG, PACKS, INDEX, REFS, BACKUPS, DATA_KEYS];

fn key(s: String) -> ObjectKey {
    // Every name built here is made of hex, digits, letters, '-', '.', '/' only.
    ObjectKey::new(s).expect("layout builds valid object keys")
}

pub fn config() -> ObjectKey {
    key(CONFIG.into())
}

pub fn pack(id: &PackId) -> ObjectKey {
    let h = id.to_hex();
    key(format!("{PACKS}{}/{h}", &h[..2]))
}

pub fn index(name: &str) -> ObjectKey {
    key(format!("{INDEX}{name}"))
}

pub fn refs_segment(id: &SegmentId) -> ObjectKey {
    key(format!("{REFS}{}", id.to_hex()))
}

/// Parses a reference segment key back to its id (`refs/<64 hex>`).
pub fn parse_refs_segment(k: &ObjectKey) -> Option<SegmentId> {
    let name = k.as_str().strip_prefix(REFS)?;
    (name.len() == 64
        && name
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
    .then(|| SegmentId::from_hex(name).ok())
    .flatten()
}

pub fn backup(id: &str) -> ObjectKey {
    key(format!("{BACKUPS}{id}"))
}

pub fn lock(name: &str) -> ObjectKey {
    key(format!("{LOCKS}{name}"))
}

pub fn data_key(id: &KeyId) -> ObjectKey {
    key(format!("{DATA_KEYS}{}.p7m", id.to_hex()))
}

pub fn cert(thumbprint: &str) -> ObjectKey {
    key(format!("{CERTS}{thumbprint}.cer"))
}

pub fn repo_key(thumbprint: &str) -> ObjectKey {
    key(format!("{REPO_KEYS}{thumbprint}.p7m"))
}

pub fn plan(name: &str) -> ObjectKey {
    key(format!("{PLANS}{name}"))
}

/// Parses a prune-plan key back to its name (`plans/<32 lower-case hex>`).
pub fn parse_plan(k: &ObjectKey) -> Option<&str> {
    let name = k.as_str().strip_prefix(PLANS)?;
    (name.len() == 32
        && name
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
    .then_some(name)
}

pub fn damaged(id: &PackId) -> ObjectKey {
    key(format!("{DAMAGED}{}", id.to_hex()))
}

/// Where `original` waits in the grace area while `batch` (a [`is_backup_id`]-shaped name: the
/// operation's time and a random part) is not purged.
pub fn trash(batch: &str, original: &ObjectKey) -> ObjectKey {
    key(format!("{TRASH}{batch}/{}", original.as_str()))
}

/// Parses a grace-area key back to (batch, original key). Only originals that ibs itself creates
/// are accepted, so `undelete` can never write a name of a trash object's choosing elsewhere.
pub fn parse_trash(k: &ObjectKey) -> Option<(&str, ObjectKey)> {
    let (batch, rest) = k.as_str().strip_prefix(TRASH)?.split_once('/')?;
    let original = ObjectKey::new(rest).ok()?;
    (is_backup_id(batch) && !original.as_str().starts_with(TRASH) && is_ibs_object(&original))
        .then_some((batch, original))
}

/// Parses a damage-marker key back to the pack id it names (`damaged/<64 hex>`).
pub fn parse_damaged(k: &ObjectKey) -> Option<PackId> {
    PackId::from_hex(k.as_str().strip_prefix(DAMAGED)?).ok()
}

/// Parses a pack object key back to its id (`packs/ab/ab…`).
pub fn parse_pack(k: &ObjectKey) -> Option<PackId> {
    let rest = k.as_str().strip_prefix(PACKS)?;
    let (dir, name) = rest.split_once('/')?;
    let id = PackId::from_hex(name).ok()?;
    (dir.len() == 2 && name.starts_with(dir)).then_some(id)
}

/// Parses a data-key envelope key back to its key id.
pub fn parse_data_key(k: &ObjectKey) -> Option<KeyId> {
    let name = k.as_str().strip_prefix(DATA_KEYS)?.strip_suffix(".p7m")?;
    KeyId::from_hex(name).ok()
}

/// True for a valid backup id: `YYYYMMDDTHHMMSSZ-` followed by 8 lower-case hex digits.
pub fn is_backup_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 25
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Every object name that ibs itself creates under `MASBackup` (for `store prune` of foreign files).
pub fn is_ibs_object(k: &ObjectKey) -> bool {
    let s = k.as_str();
    s == CONFIG
        || parse_pack(k).is_some()
        || parse_data_key(k).is_some()
        || parse_damaged(k).is_some()
        || parse_plan(k).is_some()
        || parse_refs_segment(k).is_some()
        || s.strip_prefix(INDEX)
            .is_some_and(|n| n.len() == 64 && n.bytes().all(|c| c.is_ascii_hexdigit()))
        || s.strip_prefix(BACKUPS).is_some_and(is_backup_id)
        || s.strip_prefix(LOCKS).is_some_and(|n| !n.contains('/'))
        || s.strip_prefix(CERTS)
            .and_then(|n| n.strip_suffix(".cer"))
            .is_some_and(is_thumbprint)
        || s.strip_prefix(REPO_KEYS)
            .and_then(|n| n.strip_suffix(".p7m"))
            .is_some_and(is_thumbprint)
        || (s.starts_with(TRASH) && parse_trash(k).is_some())
}

fn is_thumbprint(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = PackId([0xab; 32]);
        assert_eq!(parse_pack(&pack(&p)), Some(p));
        let k = KeyId([0x12; 16]);
        assert_eq!(parse_data_key(&data_key(&k)), Some(k));
        assert!(is_backup_id("20261126T135000Z-0a1b2c3d"));
        assert!(!is_backup_id("20261126T135000Z-0A1B2C3D"));
        assert!(!is_backup_id("../../etc/passwd"));
        assert!(is_ibs_object(&backup("20261126T135000Z-0a1b2c3d")));
        assert!(!is_ibs_object(&ObjectKey::new("notes.txt").unwrap()));
        assert_eq!(parse_damaged(&damaged(&p)), Some(p));
        let s = SegmentId([0xcd; 32]);
        assert_eq!(parse_refs_segment(&refs_segment(&s)), Some(s));
        assert!(is_ibs_object(&refs_segment(&s)));
        assert!(is_ibs_object(&trash(
            "20261204T210000Z-0a1b2c3d",
            &refs_segment(&s)
        )));
        assert!(!is_ibs_object(&ObjectKey::new("refs/notes").unwrap()));
        assert!(!is_ibs_object(
            &ObjectKey::new(format!("refs/{}", "CD".repeat(32))).unwrap()
        ));
        assert!(is_ibs_object(&damaged(&p)));
        assert!(!is_ibs_object(&ObjectKey::new("damaged/notes").unwrap()));
        let plan_key = plan("0123456789abcdef0123456789abcdef");
        assert_eq!(
            parse_plan(&plan_key),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(is_ibs_object(&plan_key));
        assert!(!is_ibs_object(&ObjectKey::new("plans/notes").unwrap()));
        let t = trash("20261204T210000Z-0a1b2c3d", &pack(&p));
        assert_eq!(
            parse_trash(&t),
            Some(("20261204T210000Z-0a1b2c3d", pack(&p)))
        );
        assert!(is_ibs_object(&t));
        for bad in [
            "trash/20261204T210000Z-0a1b2c3d/notes.txt",
            "trash/notabatch/config",
            "trash/20261204T210000Z-0a1b2c3d/trash/20261204T210000Z-0a1b2c3d/config",
        ] {
            assert_eq!(parse_trash(&ObjectKey::new(bad).unwrap()), None, "{bad}");
        }
    }
}
