//! The associated data of a manifest's sealed parts, one label per manifest version and part
//! (format §10). Versions 2 and later bind the exact catalog bytes, so a part opens only beside
//! the catalog it was sealed with, and only as the version it was written as.

/// Associated data of a manifest's tree part (public so fuzz targets can seal crafted parts).
pub fn tree_aad(id: &str) -> Vec<u8> {
    [b"ibs.manifest.tree.v1\0".as_slice(), id.as_bytes()].concat()
}

/// Associated data of a manifest's v1 refs part (public so fuzz targets can seal crafted parts).
pub fn refs_aad(id: &str) -> Vec<u8> {
    [b"ibs.manifest.refs.v1\0".as_slice(), id.as_bytes()].concat()
}

/// Associated data of a manifest's v2 refs part (per-source references).
pub fn refs_v2_aad(id: &str) -> Vec<u8> {
    [b"ibs.manifest.refs.v2\0".as_slice(), id.as_bytes()].concat()
}

/// Associated data of a version-2 manifest's tree part: binds the exact catalog bytes.
pub fn tree_v2_aad(id: &str, catalog_bytes: &[u8]) -> Vec<u8> {
    bound_aad(b"ibs.manifest.v2.tree\0", id, catalog_bytes)
}

/// Associated data of a version-2 manifest's refs part: binds the exact catalog bytes.
pub fn refs_v3_aad(id: &str, catalog_bytes: &[u8]) -> Vec<u8> {
    bound_aad(b"ibs.manifest.v2.refs\0", id, catalog_bytes)
}

fn bound_aad(label: &[u8], id: &str, catalog_bytes: &[u8]) -> Vec<u8> {
    [
        label,
        id.as_bytes(),
        b"\0",
        blake3::hash(catalog_bytes).as_bytes(),
    ]
    .concat()
}

/// Associated data of a version-3 manifest's tree part: binds the exact catalog bytes.
pub fn tree_v3_aad(id: &str, catalog_bytes: &[u8]) -> Vec<u8> {
    bound_aad(b"ibs.manifest.v3.tree\0", id, catalog_bytes)
}

/// Associated data of a version-3 manifest's refs part: binds the exact catalog bytes.
pub fn refs_v3_body_aad(id: &str, catalog_bytes: &[u8]) -> Vec<u8> {
    bound_aad(b"ibs.manifest.v3.refs\0", id, catalog_bytes)
}

/// Associated data of a version-4 manifest's tree part: binds the exact catalog bytes.
pub fn tree_v4_aad(id: &str, catalog_bytes: &[u8]) -> Vec<u8> {
    bound_aad(b"ibs.manifest.v4.tree\0", id, catalog_bytes)
}

/// Associated data of a version-4 manifest's refs part: binds the exact catalog bytes.
pub fn refs_v4_body_aad(id: &str, catalog_bytes: &[u8]) -> Vec<u8> {
    bound_aad(b"ibs.manifest.v4.refs\0", id, catalog_bytes)
}
