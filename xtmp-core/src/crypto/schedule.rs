//! The key schedule (SPEC.md, "Key schedule"): HKDF-SHA-384 with labelled
//! expansion in the style of TLS 1.3, every label prefixed `"xtmp1 "`.

use super::provider::{CryptoError, CryptoProvider, HASH_LEN, NONCE_LEN};
use super::secret::Secret;

/// The prefix of every label.
pub const LABEL_PREFIX: &[u8] = b"xtmp1 ";

/// `Expand-Label(secret, label, context, out.len())`:
/// `HKDF-Expand(secret, u16 len ‖ u8 |"xtmp1 " label| ‖ "xtmp1 " ‖ label ‖ u8 |context| ‖ context, len)`.
pub fn expand_label(
    p: &dyn CryptoProvider,
    secret: &Secret<HASH_LEN>,
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let len = u16::try_from(out.len()).map_err(|_| CryptoError::InvalidKey)?.to_be_bytes();
    let label_len = u8::try_from(LABEL_PREFIX.len() + label.len()).map_err(|_| CryptoError::InvalidKey)?;
    let context_len = u8::try_from(context.len()).map_err(|_| CryptoError::InvalidKey)?;
    p.hkdf_expand(secret, &[&len, &[label_len], LABEL_PREFIX, label, &[context_len], context], out)
}

/// `Derive(secret, label, context) = Expand-Label(secret, label, context, 48)`.
pub fn derive(
    p: &dyn CryptoProvider,
    secret: &Secret<HASH_LEN>,
    label: &[u8],
    context: &[u8],
) -> Result<Secret<HASH_LEN>, CryptoError> {
    let mut out = Secret::zero();
    expand_label(p, secret, label, context, out.expose_mut())?;
    Ok(out)
}

/// `Derive(Extract(0^48, 0^48), "derived", "")`: the salt of the handshake
/// secret without a PSK, a constant (security review P0d), so a full
/// handshake need not compute it. A test checks it against the schedule.
const DERIVED_WITHOUT_PSK: [u8; HASH_LEN] = [
    0x99, 0xca, 0x6a, 0xca, 0xc9, 0x27, 0x57, 0x1a, 0x8a, 0x5e, 0x7c, 0xe8, 0x99, 0x55, 0xc7, 0x58, 0xd3, 0xf7, 0xcb,
    0xf7, 0x8b, 0xde, 0xb8, 0x10, 0x2c, 0x8b, 0x8b, 0x5a, 0xd6, 0x0f, 0xb3, 0xcc, 0xee, 0x18, 0x39, 0xee, 0x06, 0x01,
    0xee, 0xa3, 0x03, 0x36, 0xdd, 0xc6, 0xab, 0xf5, 0x5f, 0xf8,
];

/// `HS = Extract(Derive(Extract(0^48, psk or 0^48), "derived", ""), ss_mlkem ‖ ss_x25519)`.
pub fn handshake_secret(
    p: &dyn CryptoProvider,
    psk: Option<&Secret<HASH_LEN>>,
    ss_mlkem: &Secret<32>,
    ss_x25519: &Secret<32>,
) -> Result<Secret<HASH_LEN>, CryptoError> {
    let mut ikm = Secret::<64>::zero();
    ikm.expose_mut()[..32].copy_from_slice(ss_mlkem.expose());
    ikm.expose_mut()[32..].copy_from_slice(ss_x25519.expose());
    let Some(psk) = psk else {
        return Ok(p.hkdf_extract(&DERIVED_WITHOUT_PSK, ikm.expose()));
    };
    let early = p.hkdf_extract(&[0u8; HASH_LEN], psk.expose());
    let salt = derive(p, &early, b"derived", b"")?;
    Ok(p.hkdf_extract(salt.expose(), ikm.expose()))
}

/// `MS = Extract(Derive(HS, "derived", ""), 0^48)`.
pub fn master_secret(p: &dyn CryptoProvider, hs: &Secret<HASH_LEN>) -> Result<Secret<HASH_LEN>, CryptoError> {
    let salt = derive(p, hs, b"derived", b"")?;
    Ok(p.hkdf_extract(salt.expose(), &[0u8; HASH_LEN]))
}

/// `HMAC-SHA-384(Expand-Label(base, "finished", "", 48), transcript_hash)`.
pub fn finished_mac(
    p: &dyn CryptoProvider,
    base: &Secret<HASH_LEN>,
    transcript_hash: &[u8; HASH_LEN],
) -> Result<Secret<HASH_LEN>, CryptoError> {
    let key = derive(p, base, b"finished", b"")?;
    Ok(p.hmac_sha384(key.expose(), &[transcript_hash]))
}

/// The next traffic secret of a direction: `Expand-Label(s, "traffic upd", "", 48)`.
pub fn next_traffic_secret(p: &dyn CryptoProvider, s: &Secret<HASH_LEN>) -> Result<Secret<HASH_LEN>, CryptoError> {
    derive(p, s, b"traffic upd", b"")
}

/// The secret of one in-session hybrid re-key (SPEC.md section 3.6):
/// `RK = Extract(th, ss_mlkem ‖ ss_x25519)`, `th` being the hash of the
/// exchange's two messages.
pub fn rekey_secret(
    p: &dyn CryptoProvider,
    exchange_hash: &[u8; HASH_LEN],
    ss_mlkem: &Secret<32>,
    ss_x25519: &Secret<32>,
) -> Secret<HASH_LEN> {
    let mut ikm = Secret::<64>::zero();
    ikm.expose_mut()[..32].copy_from_slice(ss_mlkem.expose());
    ikm.expose_mut()[32..].copy_from_slice(ss_x25519.expose());
    p.hkdf_extract(exchange_hash, ikm.expose())
}

/// The next traffic secret of a direction after a re-key:
/// `Expand-Label(Extract(s, RK), "traffic rekey", "", 48)`. The old secret
/// keys the extraction, so the result is secret while either `s` or `RK` is.
pub fn rekeyed_traffic_secret(
    p: &dyn CryptoProvider,
    s: &Secret<HASH_LEN>,
    rk: &Secret<HASH_LEN>,
) -> Result<Secret<HASH_LEN>, CryptoError> {
    let prk = p.hkdf_extract(s.expose(), rk.expose());
    derive(p, &prk, b"traffic rekey", b"")
}

/// The record keys of one direction and key generation, derived from its
/// traffic secret: `key = Expand-Label(s, "key", "", 32)`,
/// `iv = Expand-Label(s, "iv", "", 12)`, `key_id = Expand-Label(s, "kid", "", 16)`.
#[derive(Debug)]
pub struct TrafficKeys {
    /// AEAD key.
    pub key: Secret<32>,
    /// Per-direction IV; the nonce is `iv ⊕ (0^4 ‖ sequence_be64)`.
    pub iv: Secret<NONCE_LEN>,
    /// The public key id carried in the header (pseudorandom, unlinkable
    /// across generations).
    pub key_id: [u8; 16],
}

impl TrafficKeys {
    /// Derives the keys of `secret`.
    pub fn derive(p: &dyn CryptoProvider, secret: &Secret<HASH_LEN>) -> Result<TrafficKeys, CryptoError> {
        let mut keys = TrafficKeys { key: Secret::zero(), iv: Secret::zero(), key_id: [0; 16] };
        expand_label(p, secret, b"key", b"", keys.key.expose_mut())?;
        expand_label(p, secret, b"iv", b"", keys.iv.expose_mut())?;
        expand_label(p, secret, b"kid", b"", &mut keys.key_id)?;
        Ok(keys)
    }

    /// The AEAD nonce for `sequence`: `iv ⊕ (0^4 ‖ sequence_be64)`.
    pub fn nonce(&self, sequence: u64) -> [u8; NONCE_LEN] {
        let mut nonce = *self.iv.expose();
        for (n, s) in nonce[4..].iter_mut().zip(sequence.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RustCrypto;

    #[test]
    fn the_salt_without_a_psk_is_the_schedules() {
        let p = RustCrypto;
        let early = p.hkdf_extract(&[0u8; HASH_LEN], &[0u8; HASH_LEN]);
        let salt = derive(&p, &early, b"derived", b"").unwrap();
        assert_eq!(salt.expose(), &DERIVED_WITHOUT_PSK);
        // A zero PSK is the same schedule as none.
        let (ss1, ss2) = (Secret::<32>::new([1; 32]), Secret::<32>::new([2; 32]));
        let zero = Secret::<HASH_LEN>::zero();
        let with = handshake_secret(&p, Some(&zero), &ss1, &ss2).unwrap();
        let without = handshake_secret(&p, None, &ss1, &ss2).unwrap();
        assert_eq!(with.expose(), without.expose());
    }
}
