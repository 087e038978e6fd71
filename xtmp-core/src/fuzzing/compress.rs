//! Decompression of arbitrary compressed bodies.

use crate::compression::{self, DecompressError, PREFIX_LEN};

/// The first byte picks the mode. Even: the rest is a compressed body,
/// decompressed under a limit the second byte scales; it either fails
/// with a typed error or yields exactly the declared length, never more
/// than the limit. Odd: the rest is a body that must round-trip.
pub fn decompress(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 1 {
        if let Some(packed) = compression::compress(rest) {
            assert!(packed.len() < rest.len());
            let back = compression::decompress(&packed, rest.len()).expect("a compressed body decompresses");
            assert_eq!(&back[..], rest);
            assert!(compression::decompress(&packed, rest.len() - 1).is_err(), "a limit below the length passed");
        }
        return;
    }
    let Some((&scale, body)) = rest.split_first() else { return };
    let max = 64usize << (scale % 19);
    match compression::decompress(body, max) {
        Ok(out) => {
            let declared = u32::from_be_bytes(body[..PREFIX_LEN].try_into().expect("checked")) as usize;
            assert_eq!(out.len(), declared);
            assert!(out.len() <= max);
        }
        Err(DecompressError::DeclaredLength { declared, max: m }) => {
            assert_eq!(m, max as u64);
            assert!(declared == 0 || declared > m);
        }
        Err(_) => {}
    }
}
