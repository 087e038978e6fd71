//! Message body compression (SPEC.md section 4.8): the LZ4 block format
//! behind a big-endian `u32` length of the uncompressed body.
//!
//! A compressed body is `uncompressed length u32 ‖ LZ4 block`. The receiver
//! checks the declared length against the largest message it accepts
//! *before* it allocates anything, and the block must decode to exactly
//! that many bytes: a size bomb (a tiny block that claims or expands to a
//! huge body) is refused, never inflated.

use alloc::vec::Vec;
use core::fmt;

use bytes::Bytes;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Bodies shorter than this are never compressed: LZ4 cannot win enough
/// on them to pay for the prefix.
pub const MIN_COMPRESS_LEN: usize = 64;

/// Why a compressed body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecompressError {
    /// Shorter than the length prefix.
    Truncated,
    /// The declared uncompressed length is above the receiver's maximum
    /// message length (a size bomb), or zero.
    DeclaredLength {
        /// What the prefix declares.
        declared: u64,
        /// The largest message this side accepts.
        max: u64,
    },
    /// The LZ4 block is malformed or decodes to another length than the
    /// one declared.
    Malformed,
}

impl DecompressError {
    /// What was wrong, without the figures (for a close reason).
    pub const fn reason(&self) -> &'static str {
        match self {
            DecompressError::Truncated => "compressed body shorter than its length prefix",
            DecompressError::DeclaredLength { .. } => {
                "compressed body declares a length of zero or beyond the announced maximum"
            }
            DecompressError::Malformed => "compressed body is not a valid LZ4 block of its declared length",
        }
    }
}

impl fmt::Display for DecompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecompressError::DeclaredLength { declared, max } => {
                write!(f, "compressed body declares {declared} bytes uncompressed (allowed: 1 to {max})")
            }
            other => f.write_str(other.reason()),
        }
    }
}

impl core::error::Error for DecompressError {}

/// Compresses `body`, or returns `None` when it is too short or the
/// result would not be smaller than the body.
pub fn compress(body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < MIN_COMPRESS_LEN || body.len() > u32::MAX as usize {
        return None;
    }
    let mut out = alloc::vec![0u8; PREFIX_LEN + lz4_flex::block::get_maximum_output_size(body.len())];
    out[..PREFIX_LEN].copy_from_slice(&(body.len() as u32).to_be_bytes());
    let n = lz4_flex::block::compress_into(body, &mut out[PREFIX_LEN..]).ok()?;
    let total = PREFIX_LEN + n;
    if total >= body.len() {
        return None;
    }
    out.truncate(total);
    Some(out)
}

/// The uncompressed length `data` declares, checked against `max`.
pub fn declared_len(data: &[u8], max: usize) -> Result<usize, DecompressError> {
    let prefix: [u8; PREFIX_LEN] =
        data.get(..PREFIX_LEN).and_then(|p| p.try_into().ok()).ok_or(DecompressError::Truncated)?;
    let declared = u32::from_be_bytes(prefix) as usize;
    if declared == 0 || declared > max {
        return Err(DecompressError::DeclaredLength { declared: declared as u64, max: max as u64 });
    }
    Ok(declared)
}

/// Decompresses a body compressed by [`compress`], allocating at most
/// `max` bytes (and only after the declared length passed that check).
pub fn decompress(data: &[u8], max: usize) -> Result<Bytes, DecompressError> {
    let declared = declared_len(data, max)?;
    let mut out = alloc::vec![0u8; declared];
    match lz4_flex::block::decompress_into(&data[PREFIX_LEN..], &mut out) {
        Ok(n) if n == declared => Ok(Bytes::from(out)),
        _ => Err(DecompressError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 17) as u8).collect();
        let c = compress(&body).expect("repetitive data compresses");
        assert!(c.len() < body.len() / 4);
        assert_eq!(&decompress(&c, body.len()).unwrap()[..], &body[..]);
        // The receiver's maximum is below the declared length: refused before allocating.
        assert_eq!(
            decompress(&c, body.len() - 1),
            Err(DecompressError::DeclaredLength { declared: 10_000, max: 9_999 })
        );
        // A prefix that lies about the length.
        let mut lying = c.clone();
        lying[..4].copy_from_slice(&9_000u32.to_be_bytes());
        assert_eq!(decompress(&lying, 1 << 20), Err(DecompressError::Malformed));
        lying[..4].copy_from_slice(&11_000u32.to_be_bytes());
        assert_eq!(decompress(&lying, 1 << 20), Err(DecompressError::Malformed));
        assert_eq!(decompress(&[0, 0], 100), Err(DecompressError::Truncated));
        assert_eq!(decompress(&[0, 0, 0, 0], 100), Err(DecompressError::DeclaredLength { declared: 0, max: 100 }));
        // Short or incompressible bodies are sent as they are.
        assert_eq!(compress(b"short"), None);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(compress(&noise), None);
    }

    /// SPEC.md section 4.8's test vector.
    #[test]
    fn spec_vector() {
        let vector = hex::decode("000000401f61010026606161616161 61".replace(' ', "")).unwrap();
        assert_eq!(&decompress(&vector, 64).unwrap()[..], &[b'a'; 64][..]);
        assert_eq!(compress(&[b'a'; 64]).unwrap(), vector);
    }

    #[test]
    fn size_bomb_is_refused_without_inflating() {
        // 16 MiB of zeros compresses to about 64 KiB; a receiver that
        // accepts 1 MiB refuses it from the prefix alone.
        let zeros = alloc::vec![0u8; 16 << 20];
        let bomb = compress(&zeros).unwrap();
        assert!(bomb.len() < 100_000);
        assert!(matches!(decompress(&bomb, 1 << 20), Err(DecompressError::DeclaredLength { .. })));
    }
}
