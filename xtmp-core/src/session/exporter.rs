//! Keying material exporters (SPEC.md 2.4.1), in the style of TLS 1.3
//! (RFC 8446 section 7.5), and the channel binding of RFC 9266 built on
//! them: values only the two ends of one session can compute, which an
//! application signs to bind a statement to the session it is made in.

use core::fmt;

use super::Session;
use crate::crypto::{HASH_LEN, Secret, schedule};

/// The exporter label of the channel binding (RFC 9266's).
pub const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
/// The channel binding's length in bytes.
pub const CHANNEL_BINDING_LEN: usize = 32;

/// Why [`Session::export`] produced nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportError {
    /// The handshake has not completed: there is no exporter secret yet.
    NotEstablished,
    /// The label is longer than 249 bytes, or more than 12,240 bytes
    /// (255 hashes) were asked for.
    TooLong,
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExportError::NotEstablished => "the session is not established: nothing to export yet",
            ExportError::TooLong => "exporter label longer than 249 bytes or output longer than 12,240 bytes",
        })
    }
}

impl core::error::Error for ExportError {}

impl Session {
    /// Fills `out` with keying material exported from the session
    /// (SPEC.md 2.4.1):
    /// `Expand-Label(Derive(exporter, label, ""), "exporter", SHA-384(context), |out|)`.
    ///
    /// Both ends of a session compute the same bytes for the same label and
    /// context, and nobody else can: the value depends on the handshake's
    /// key exchange and transcript. Distinct labels give independent values.
    /// Available once the session is established, until it is dropped (also
    /// after it closed).
    pub fn export(&self, label: &[u8], context: &[u8], out: &mut [u8]) -> Result<(), ExportError> {
        let exporter = self.exporter.as_ref().ok_or(ExportError::NotEstablished)?;
        export(&*self.provider, exporter, label, context, out)
    }

    /// The session's channel binding (RFC 9266 `tls-exporter`):
    /// `export("EXPORTER-Channel-Binding", "", 32)`.
    pub fn channel_binding(&self) -> Result<[u8; CHANNEL_BINDING_LEN], ExportError> {
        let mut out = [0u8; CHANNEL_BINDING_LEN];
        self.export(CHANNEL_BINDING_LABEL, b"", &mut out)?;
        Ok(out)
    }
}

pub(crate) fn export(
    p: &dyn crate::crypto::CryptoProvider,
    exporter: &Secret<HASH_LEN>,
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Result<(), ExportError> {
    if label.len() > 255 - schedule::LABEL_PREFIX.len() || out.len() > 255 * HASH_LEN {
        return Err(ExportError::TooLong);
    }
    let secret = schedule::derive(p, exporter, label, b"").map_err(|_| ExportError::TooLong)?;
    let mut h = p.sha384();
    h.update(context);
    schedule::expand_label(p, &secret, b"exporter", &h.current(), out).map_err(|_| ExportError::TooLong)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RustCrypto;

    #[test]
    fn labels_contexts_and_lengths_give_independent_values() {
        let p = RustCrypto;
        let s = Secret::new([7u8; HASH_LEN]);
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        export(&p, &s, b"a", b"", &mut a).unwrap();
        export(&p, &s, b"a", b"", &mut b).unwrap();
        assert_eq!(a, b);
        export(&p, &s, b"b", b"", &mut b).unwrap();
        assert_ne!(a, b);
        export(&p, &s, b"a", b"x", &mut b).unwrap();
        assert_ne!(a, b);
        let other = Secret::new([8u8; HASH_LEN]);
        export(&p, &other, b"a", b"", &mut b).unwrap();
        assert_ne!(a, b);
        let mut long = [0u8; 64];
        export(&p, &s, b"a", b"", &mut long).unwrap();
        assert_ne!(&long[..32], &a[..], "the length is part of the expansion");
        assert_eq!(export(&p, &s, &[b'l'; 250], b"", &mut a), Err(ExportError::TooLong));
        export(&p, &s, &[b'l'; 249], b"", &mut a).unwrap();
        let mut huge = alloc::vec![0u8; 255 * HASH_LEN + 1];
        assert_eq!(export(&p, &s, b"a", b"", &mut huge), Err(ExportError::TooLong));
    }
}
