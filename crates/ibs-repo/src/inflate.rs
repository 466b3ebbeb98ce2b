//! Bounded zstd decompression of metadata bodies (index segments and manifest refs parts): the one
//! owner of their size cap. A body that would inflate past the cap is refused whole, never cut
//! short, because a shortened reference list would read as a valid, smaller one.

use std::io::Read;

/// Upper bound of a decompressed metadata body, 1 GiB: an index segment of about 14 million
/// entries, or a reference list of 33 million chunks (a backup of about 30 TiB).
pub const MAX_METADATA_BODY: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("decompresses to more than {cap} bytes (refused as a decompression bomb)")]
    TooLarge { cap: u64 },
    /// The zstd error is shown in the message, not exposed as a source, so an error chain
    /// (`{:#}`) prints it once.
    #[error("decompression: {0}")]
    Zstd(std::io::Error),
}

impl From<std::io::Error> for InflateError {
    fn from(e: std::io::Error) -> Self {
        InflateError::Zstd(e)
    }
}

/// Decompresses `compressed`, failing if the result would exceed `cap` bytes.
pub fn decompress_bounded(compressed: &[u8], cap: u64) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(compressed)?
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(InflateError::TooLarge { cap });
    }
    Ok(out)
}

/// [`decompress_bounded`] with the metadata cap.
pub fn decompress_metadata(compressed: &[u8]) -> Result<Vec<u8>, InflateError> {
    decompress_bounded(compressed, MAX_METADATA_BODY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_past_the_cap_is_refused_not_cut() {
        let body = vec![0u8; 4097];
        let z = zstd::bulk::compress(&body, 3).unwrap();
        assert_eq!(decompress_bounded(&z, 4097).unwrap(), body);
        assert!(matches!(
            decompress_bounded(&z, 4096),
            Err(InflateError::TooLarge { cap: 4096 })
        ));
        assert!(matches!(
            decompress_bounded(b"not zstd", 10),
            Err(InflateError::Zstd(_))
        ));
    }
}
