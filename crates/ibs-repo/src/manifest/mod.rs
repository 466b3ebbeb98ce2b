//! Backup manifests (`backups/<backup-id>`): one object in three parts.
//!
//! ```text
//! "IBSMAN" u16 version (4; 1, 2 and 3 are still read)
//! u32 len ‖ catalog      cleartext JSON: id, times, status, per-source counts, thumbprint, data key id
//! u32 len ‖ tree part    sealed under the backup's data key:
//!                        JSON {sources: [{name, kind, origin, tree: [chunk ids]}], errors: […]}
//! u32 len ‖ refs part    sealed under the metadata key: zstd(refs body), the body one of
//!   refs v1: sorted, distinct chunk ids, 32 bytes each — every chunk the backup needs
//!   refs v2: u16 version=2, u32 n, n × chunk id (sorted, distinct),
//!            u32 s, s × {u16 name_len, name, u32 k, k × u32 position in the list above}
//!            — the same list, plus which of its chunks each source references
//!   refs v3: u16 version=3, u32 s, s × {u16 name_len, name, u64 chunks, u32 k, k × segment id}
//!            — per source, the reference segments (`refs/<id>`, see `refseg.rs`) that hold its
//!            sorted chunk list, in order
//!   refs v4: u16 version=4, u32 s, s × {u16 name_len, name, u64 chunks, u32 k, k × segment id,
//!            u32 ka, ka × added-segment id, u32 kr, kr × removed-segment id}
//!            — per source, base segments (as v3, usually the parent backup's) and a delta
//!            stored as segments too: the references are base − removed ∪ added (ADR 0046)
//! ```
//! Associated data (which also tells the versions apart, authenticated, so they cannot be confused):
//! ```text
//! version 4: tree "ibs.manifest.v4.tree\0" ‖ id ‖ "\0" ‖ BLAKE3(catalog bytes)
//!            refs "ibs.manifest.v4.refs\0" ‖ id ‖ "\0" ‖ BLAKE3(catalog bytes)   (refs v4 body)
//! version 3: tree "ibs.manifest.v3.tree\0" ‖ id ‖ "\0" ‖ BLAKE3(catalog bytes)
//!            refs "ibs.manifest.v3.refs\0" ‖ id ‖ "\0" ‖ BLAKE3(catalog bytes)   (refs v3 body)
//! version 2: tree "ibs.manifest.v2.tree\0" ‖ id ‖ "\0" ‖ BLAKE3(catalog bytes)
//!            refs "ibs.manifest.v2.refs\0" ‖ id ‖ "\0" ‖ BLAKE3(catalog bytes)   (refs v2 body)
//! version 1: tree "ibs.manifest.tree.v1\0" ‖ id
//!            refs "ibs.manifest.refs.v1\0" ‖ id (refs v1) or "ibs.manifest.refs.v2\0" ‖ id (refs v2)
//! ```
//! In versions 2 to 4 the catalog is authenticated: its exact bytes are bound into both sealed
//! parts, so a catalog edited on storage (times, hostname, status, counts) makes the refs part fail
//! to open with the metadata key (writer state or .pfx) and the tree part with the data key (.pfx).
//! Without a key nothing can tell an edited catalog from a genuine one. Version 1 catalogs are not
//! authenticated; a newer manifest cannot be passed off as an older version (its parts do not open
//! with the older associated data). v1 refs cannot attribute a chunk to a source: callers
//! then say "all components of that backup".
//! The catalog lets anyone list backups with no key; the refs let forget, prune and check run with
//! only the writer's metadata key; file names and contents need the data key, hence the .pfx.
//! The manifest is the commit point of a backup: it is written last, after its packs, index and
//! reference segments. A version-3 or -4 refs part names segments (and in version 4 a delta
//! against them): [`Manifest::open_refs_part`] returns them, and `Repository::open_refs` /
//! `Repository::for_each_ref` read the segments from storage and apply the delta.

use crate::crypto::SymKey;
use crate::error::{RepoError, Result};
use crate::ids::{ChunkId, SegmentId};
use serde::{Deserialize, Serialize};

pub const MANIFEST_MAGIC: &[u8; 6] = b"IBSMAN";
/// The version new manifests are written in (catalog authenticated, refs in segments with a
/// delta whose lists are segments too).
pub const MANIFEST_VERSION: u16 = 4;
/// The third version (catalog authenticated, refs in segments, no delta), still read.
pub const MANIFEST_V3: u16 = 3;
/// The second version (catalog authenticated, every reference inline), still read.
pub const MANIFEST_V2: u16 = 2;
/// The first version (catalog not authenticated), still read.
pub const MANIFEST_V1: u16 = 1;
/// The repository format revision this build writes and reads: one number for the whole
/// combination of structure versions and additive changes (fields, encodings) a build knows
/// (`docs/design/repository-format.md` §14). Revision 1: config 1, manifest 2, tree 2, chunk
/// encodings 1 and 2, catalogs with `deployment_id`, `format_revision` and `server_version`.
/// Every later format change bumps it; a backup with a higher revision was written by a newer
/// build and restores refuse it unless overridden. Revision 2: manifest 3 (reference segments).
/// Revision 3: manifest 4 (reference segments with a delta stored as segments, ADR 0046).
/// Revision 4: a tree stream's chunks may be delta recipes (ADR 0049).
pub const FORMAT_REVISION: u32 = 4;
/// Upper bound of a catalog (a hostile length field cannot make a reader allocate more).
pub const MAX_CATALOG: usize = 4 << 20;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum BackupStatus {
    Succeeded,
    PartialSucceeded,
    Failed,
}

/// Per-source figures, in cleartext.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceSummary {
    pub name: String,
    pub kind: String,
    pub status: BackupStatus,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub errors: u64,
    pub changed_while_read: u64,
    /// The source is needed to rebuild the system (cloud recovery). Added in format 1.1 of the
    /// catalog; absent in older catalogs, where every source counts as essential.
    #[serde(default = "yes")]
    pub essential: bool,
    /// Entries left out because they cannot be backed up (sockets). Added with tree format 2;
    /// absent (0) in older catalogs.
    #[serde(default)]
    pub skipped: u64,
    /// The version the source's server reported when the backup read it (PostgreSQL
    /// `server_version`, MariaDB `VERSION()`, Redis `redis_version`, the SQLite library's version);
    /// absent for files and command sources and in catalogs older than format revision 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
}

fn yes() -> bool {
    true
}

/// The cleartext part of a manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Catalog {
    pub format_version: u32,
    pub backup_id: String,
    pub repository_id: String,
    pub started: String,
    pub finished: String,
    pub duration_ms: u64,
    pub status: BackupStatus,
    pub sources: Vec<SourceSummary>,
    /// `certificate` or `legacy-key`.
    pub encryption_mode: String,
    /// SHA-1 thumbprint (upper-case hex) of the certificate the data key is wrapped for.
    pub certificate_thumbprint: Option<String>,
    pub data_key_id: String,
    /// Plaintext bytes read from the sources.
    pub bytes_read: u64,
    /// Plaintext bytes of chunks this backup added to the repository.
    pub bytes_new: u64,
    /// Bytes this backup added to the repository (packs, index, manifest).
    pub bytes_stored: u64,
    pub hostname: String,
    pub ibs_version: String,
    /// Every essential source succeeded: this backup can rebuild the system. Absent in older
    /// catalogs (read as `status == Succeeded`).
    #[serde(default)]
    pub recovery_ready: Option<bool>,
    /// The id of the deployment (controller, or CLI writer host) that wrote the backup; absent in
    /// catalogs older than format revision 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// The repository format revision of the build that wrote the backup ([`FORMAT_REVISION`]);
    /// absent (revision 0) in catalogs older than revision 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_revision: Option<u32>,
}

impl Catalog {
    /// Whether this backup is ready for cloud recovery.
    pub fn is_recovery_ready(&self) -> bool {
        self.recovery_ready
            .unwrap_or(self.status == BackupStatus::Succeeded)
    }

    /// The catalog's format revision: 0 when it records none.
    pub fn revision(&self) -> u32 {
        self.format_revision.unwrap_or(0)
    }
}

/// One source in the sealed tree part.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceTree {
    pub name: String,
    pub kind: String,
    /// Where the source was read from (a path, or `-` for stdin).
    pub origin: String,
    /// Chunk ids of the source's tree stream (see tree.rs), in order.
    pub tree: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TreePart {
    pub sources: Vec<SourceTree>,
    /// Per-file errors (path and cause), at most the first 1000.
    pub errors: Vec<String>,
}

/// The chunks one source references (refs v2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRefs {
    pub name: String,
    pub chunks: Vec<ChunkId>,
}

/// An opened refs part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refs {
    /// Every chunk the backup needs, sorted and distinct.
    pub all: Vec<ChunkId>,
    /// Per-source references; `None` for a v1 refs part, which does not record them.
    pub sources: Option<Vec<SourceRefs>>,
}

/// One source of a version-3 or -4 refs part: its base reference segments, in order, and
/// (version 4) the segments of the delta against them. The source's references are the base
/// segments' ids − the removed segments' ids ∪ the added segments' ids.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SourceSegments {
    pub name: String,
    /// How many references the source has (base − removed ∪ added; checked when the segments
    /// are read).
    pub chunks: u64,
    /// The base segments.
    pub segments: Vec<SegmentId>,
    /// Segments whose concatenated ids (strictly ascending) are references not in the base
    /// (empty in version 3).
    pub added_segments: Vec<SegmentId>,
    /// Segments whose concatenated ids (strictly ascending) are base ids that are not references
    /// (empty in version 3).
    pub removed_segments: Vec<SegmentId>,
}

impl SourceSegments {
    /// Whether the source carries a delta (only version 4 can).
    pub fn has_delta(&self) -> bool {
        !self.added_segments.is_empty() || !self.removed_segments.is_empty()
    }

    /// Every segment the source lists: base, added and removed. Whatever keeps, locks, checks or
    /// restores "the segments a manifest lists" goes through this.
    pub fn listed(&self) -> impl Iterator<Item = &SegmentId> {
        self.segments
            .iter()
            .chain(&self.added_segments)
            .chain(&self.removed_segments)
    }
}

/// An opened refs part: the references themselves (refs v1, v2) or the segments that hold them
/// (refs v3, v4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefsPart {
    Inline(Refs),
    Segmented(Vec<SourceSegments>),
}

/// A manifest with its sealed parts still sealed.
pub struct Manifest {
    /// The parsed catalog. What is written and authenticated are `catalog_bytes`, fixed when the
    /// manifest is sealed or read: changing this field does not change the object.
    pub catalog: Catalog,
    pub tree_sealed: Vec<u8>,
    pub refs_sealed: Vec<u8>,
    catalog_bytes: Vec<u8>,
    version: u16,
}

pub use aad::{
    refs_aad, refs_v2_aad, refs_v3_aad, refs_v3_body_aad, refs_v4_body_aad, tree_aad, tree_v2_aad,
    tree_v3_aad, tree_v4_aad,
};
use refs_body::{decode_refs_v2, decode_refs_v3, encode_refs_v2, encode_refs_v3};
pub use refs_body::{decode_refs_v4, encode_refs_v4, REFS_V2, REFS_V3, REFS_V4};

impl Manifest {
    /// Seals a version-1 manifest with a v1 refs part (no per-source references, catalog not
    /// authenticated): how manifests were written before. Kept so tests and fuzz targets can make
    /// old objects; backups use [`Manifest::seal_with_sources`].
    pub fn seal(
        mut catalog: Catalog,
        tree: &TreePart,
        refs: &mut Vec<ChunkId>,
        data_key: &SymKey,
        metadata_key: &SymKey,
    ) -> Self {
        catalog.format_version = MANIFEST_V1 as u32;
        refs.sort_unstable();
        refs.dedup();
        let tree_json = serde_json::to_vec(tree).expect("tree part serializes");
        let tree_sealed = data_key.seal(&tree_aad(&catalog.backup_id), &tree_json);
        let flat: Vec<u8> = refs.iter().flat_map(|r| r.0).collect();
        let compressed = zstd::bulk::compress(&flat, 3).expect("zstd of an in-memory buffer");
        let refs_sealed = metadata_key.seal(&refs_aad(&catalog.backup_id), &compressed);
        Self::from_sealed_v1(catalog, tree_sealed, refs_sealed)
    }

    /// A version-1 manifest from its parts (fuzz targets build hostile ones this way).
    pub fn from_sealed_v1(catalog: Catalog, tree_sealed: Vec<u8>, refs_sealed: Vec<u8>) -> Self {
        let catalog_bytes = serde_json::to_vec(&catalog).expect("catalog serializes");
        Manifest {
            catalog,
            tree_sealed,
            refs_sealed,
            catalog_bytes,
            version: MANIFEST_V1,
        }
    }

    /// Seals a version-2 manifest: a v2 refs part with the chunks each source references (the
    /// union is the backup's reference list), and the catalog's bytes bound into both sealed
    /// parts. How backups were written before reference segments; kept so tests and fixtures can
    /// make such objects.
    pub fn seal_with_sources(
        mut catalog: Catalog,
        tree: &TreePart,
        sources: &[(String, Vec<ChunkId>)],
        data_key: &SymKey,
        metadata_key: &SymKey,
    ) -> Self {
        catalog.format_version = MANIFEST_V2 as u32;
        let catalog_bytes = serde_json::to_vec(&catalog).expect("catalog serializes");
        let id = &catalog.backup_id;
        let tree_json = serde_json::to_vec(tree).expect("tree part serializes");
        let tree_sealed = data_key.seal(&tree_v2_aad(id, &catalog_bytes), &tree_json);
        // The plain body (36 bytes per reference) is freed before sealing.
        let compressed =
            zstd::bulk::compress(&encode_refs_v2(sources), 3).expect("zstd of an in-memory buffer");
        let refs_sealed = metadata_key.seal(&refs_v3_aad(id, &catalog_bytes), &compressed);
        Manifest {
            catalog,
            tree_sealed,
            refs_sealed,
            catalog_bytes,
            version: MANIFEST_V2,
        }
    }

    /// Seals a current (version 4) manifest: a v4 refs part naming each source's reference
    /// segments and delta segments (already stored, see `Repository::put_refs`), and the
    /// catalog's bytes bound into both sealed parts. New backups are written this way.
    pub fn seal_with_segments(
        catalog: Catalog,
        tree: &TreePart,
        sources: &[SourceSegments],
        data_key: &SymKey,
        metadata_key: &SymKey,
    ) -> Self {
        Self::seal_segmented(
            catalog,
            tree,
            &encode_refs_v4(sources),
            MANIFEST_VERSION,
            data_key,
            metadata_key,
        )
    }

    /// Seals a version-3 manifest (segments, no delta: `added` and `removed` must be empty). How
    /// backups were written before reference deltas; kept so tests and fixtures can make such
    /// objects.
    pub fn seal_with_segments_v3(
        catalog: Catalog,
        tree: &TreePart,
        sources: &[SourceSegments],
        data_key: &SymKey,
        metadata_key: &SymKey,
    ) -> Self {
        assert!(
            sources.iter().all(|s| !s.has_delta()),
            "a version-3 manifest has no delta"
        );
        Self::seal_segmented(
            catalog,
            tree,
            &encode_refs_v3(sources),
            MANIFEST_V3,
            data_key,
            metadata_key,
        )
    }

    /// Seals a version-4 manifest around a refs body given as bytes (tests build hostile bodies
    /// this way: the reader, not the sealer, must refuse them).
    pub fn seal_with_refs_body_v4(
        catalog: Catalog,
        tree: &TreePart,
        body: &[u8],
        data_key: &SymKey,
        metadata_key: &SymKey,
    ) -> Self {
        Self::seal_segmented(
            catalog,
            tree,
            body,
            MANIFEST_VERSION,
            data_key,
            metadata_key,
        )
    }

    fn seal_segmented(
        mut catalog: Catalog,
        tree: &TreePart,
        body: &[u8],
        version: u16,
        data_key: &SymKey,
        metadata_key: &SymKey,
    ) -> Self {
        catalog.format_version = version as u32;
        let catalog_bytes = serde_json::to_vec(&catalog).expect("catalog serializes");
        let id = &catalog.backup_id;
        let (tree_aad, refs_aad) = if version == MANIFEST_V3 {
            (
                tree_v3_aad(id, &catalog_bytes),
                refs_v3_body_aad(id, &catalog_bytes),
            )
        } else {
            (
                tree_v4_aad(id, &catalog_bytes),
                refs_v4_body_aad(id, &catalog_bytes),
            )
        };
        let tree_json = serde_json::to_vec(tree).expect("tree part serializes");
        let tree_sealed = data_key.seal(&tree_aad, &tree_json);
        let compressed = zstd::bulk::compress(body, 3).expect("zstd of an in-memory buffer");
        let refs_sealed = metadata_key.seal(&refs_aad, &compressed);
        Manifest {
            catalog,
            tree_sealed,
            refs_sealed,
            catalog_bytes,
            version,
        }
    }

    /// The manifest's format version (1 to 4).
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Whether the catalog is bound into the sealed parts (version 2), so that opening them
    /// authenticates it.
    pub fn catalog_authenticated(&self) -> bool {
        self.version >= MANIFEST_V2
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let cat = &self.catalog_bytes;
        let mut out =
            Vec::with_capacity(20 + cat.len() + self.tree_sealed.len() + self.refs_sealed.len());
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        for part in [&cat[..], &self.tree_sealed, &self.refs_sealed] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Parses the catalog only, from a prefix of the object (listing needs no more). Returns `Ok(Err(n))`
    /// if the prefix is too short, where `n` is the prefix length needed.
    pub fn parse_catalog(name: &str, prefix: &[u8]) -> Result<std::result::Result<Catalog, usize>> {
        let what = format!("backups/{name}");
        if prefix.len() < 12 || &prefix[..6] != MANIFEST_MAGIC {
            return Err(RepoError::corrupt(what, "missing manifest magic"));
        }
        let version = u16::from_le_bytes([prefix[6], prefix[7]]);
        if !(MANIFEST_V1..=MANIFEST_VERSION).contains(&version) {
            return Err(RepoError::UnsupportedVersion {
                object: what,
                found: version as u32,
                supported: MANIFEST_VERSION as u32,
            });
        }
        let len = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes")) as usize;
        if len > MAX_CATALOG {
            return Err(RepoError::corrupt(what, "catalog length out of range"));
        }
        if prefix.len() < 12 + len {
            return Ok(Err(12 + len));
        }
        let catalog: Catalog = serde_json::from_slice(&prefix[12..12 + len])
            .map_err(|e| RepoError::corrupt(&what, format!("catalog: {e}")))?;
        if catalog.backup_id != name {
            return Err(RepoError::corrupt(
                what,
                format!("catalog names backup {}, not {name}", catalog.backup_id),
            ));
        }
        if catalog.format_version != version as u32 {
            return Err(RepoError::corrupt(
                what,
                format!(
                    "catalog says format {}, the object's header {version}",
                    catalog.format_version
                ),
            ));
        }
        Ok(Ok(catalog))
    }

    pub fn from_bytes(name: &str, b: &[u8]) -> Result<Self> {
        let what = format!("backups/{name}");
        let catalog = Self::parse_catalog(name, b)?
            .map_err(|_| RepoError::corrupt(&what, "truncated catalog"))?;
        let mut pos = 8;
        let mut parts = Vec::new();
        for _ in 0..3 {
            let len = b
                .get(pos..pos + 4)
                .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize)
                .ok_or_else(|| RepoError::corrupt(&what, "truncated"))?;
            let part = b
                .get(pos + 4..pos + 4 + len)
                .ok_or_else(|| RepoError::corrupt(&what, "truncated"))?;
            parts.push(part.to_vec());
            pos += 4 + len;
        }
        if pos != b.len() {
            return Err(RepoError::corrupt(what, "trailing bytes"));
        }
        let refs_sealed = parts.pop().expect("3 parts");
        let tree_sealed = parts.pop().expect("3 parts");
        let catalog_bytes = parts.pop().expect("3 parts");
        Ok(Manifest {
            catalog,
            tree_sealed,
            refs_sealed,
            catalog_bytes,
            version: u16::from_le_bytes([b[6], b[7]]),
        })
    }

    pub fn open_tree(&self, data_key: &SymKey) -> Result<TreePart> {
        let id = &self.catalog.backup_id;
        let (aad, why) = if self.catalog_authenticated() {
            (
                match self.version {
                    MANIFEST_V2 => tree_v2_aad(id, &self.catalog_bytes),
                    MANIFEST_V3 => tree_v3_aad(id, &self.catalog_bytes),
                    _ => tree_v4_aad(id, &self.catalog_bytes),
                },
                "tree part does not open with the backup's data key: the catalog was changed after the backup was written, or the part is damaged",
            )
        } else {
            (
                tree_aad(id),
                "tree part does not open with the backup's data key",
            )
        };
        let plain = data_key
            .open(&aad, &self.tree_sealed)
            .ok_or_else(|| RepoError::corrupt(format!("backups/{id}"), why))?;
        serde_json::from_slice(&plain)
            .map_err(|e| RepoError::corrupt(format!("backups/{id}"), format!("tree part: {e}")))
    }

    /// Opens the refs part: the references themselves (refs v1 and v2) or, in a version-3 or -4
    /// manifest, the reference segments that hold them and the delta against them
    /// (`Repository::open_refs` reads those). A v4 delta is checked here as far as it can be
    /// without the segments (order, counts); membership in the segments when they are read.
    pub fn open_refs_part(&self, metadata_key: &SymKey) -> Result<RefsPart> {
        let id = &self.catalog.backup_id;
        let what = format!("backups/{id}");
        // A decompression bomb stops at the metadata cap (crate::inflate owns it).
        let unzip = |compressed: Vec<u8>| {
            crate::inflate::decompress_metadata(&compressed)
                .map_err(|e| RepoError::corrupt(&what, format!("refs: {e}")))
        };
        let tampered = "the catalog (times, hostname, status, counts) does not match the one sealed with the backup: it was changed after the backup was written, or the refs part is damaged";
        type Decode = fn(&[u8]) -> std::result::Result<Vec<SourceSegments>, String>;
        let segmented: Option<(Vec<u8>, Decode)> = match self.version {
            MANIFEST_VERSION => Some((refs_v4_body_aad(id, &self.catalog_bytes), decode_refs_v4)),
            MANIFEST_V3 => Some((refs_v3_body_aad(id, &self.catalog_bytes), decode_refs_v3)),
            _ => None,
        };
        if let Some((aad, decode)) = segmented {
            let compressed = metadata_key
                .open(&aad, &self.refs_sealed)
                .ok_or_else(|| RepoError::corrupt(&what, tampered))?;
            return decode(&unzip(compressed)?)
                .map(RefsPart::Segmented)
                .map_err(|d| RepoError::corrupt(&what, format!("refs: {d}")));
        }
        if self.catalog_authenticated() {
            let compressed = metadata_key
                .open(&refs_v3_aad(id, &self.catalog_bytes), &self.refs_sealed)
                .ok_or_else(|| RepoError::corrupt(&what, tampered))?;
            return decode_refs_v2(&unzip(compressed)?)
                .map(RefsPart::Inline)
                .map_err(|d| RepoError::corrupt(&what, format!("refs: {d}")));
        }
        if let Some(compressed) = metadata_key.open(&refs_v2_aad(id), &self.refs_sealed) {
            return decode_refs_v2(&unzip(compressed)?)
                .map(RefsPart::Inline)
                .map_err(|d| RepoError::corrupt(&what, format!("refs: {d}")));
        }
        let compressed = metadata_key
            .open(&refs_aad(id), &self.refs_sealed)
            .ok_or_else(|| {
                RepoError::corrupt(&what, "refs part does not open with the metadata key")
            })?;
        let flat = unzip(compressed)?;
        if flat.len() % 32 != 0 {
            return Err(RepoError::corrupt(
                what,
                "refs length is not a multiple of 32",
            ));
        }
        Ok(RefsPart::Inline(Refs {
            all: flat
                .chunks_exact(32)
                .map(|c| ChunkId::from_slice(c).expect("32 bytes"))
                .collect(),
            sources: None,
        }))
    }
}

mod aad;
mod refs_body;
#[cfg(test)]
mod tests;
