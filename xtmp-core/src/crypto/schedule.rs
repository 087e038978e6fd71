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

/// `HS = Extract(Derive(Extract(0^48, psk or 0^48), "derived", ""), ss_mlkem ‖ ss_x25519)`.
pub fn handshake_secret(
    p: &dyn CryptoProvider,
    psk: Option<&Secret<HASH_LEN>>,
    ss_mlkem: &Secret<32>,
    ss_x25519: &Secret<32>,
) -> Result<Secret<HASH_LEN>, CryptoError> {
    let zero = [0u8; HASH_LEN];
    let early = p.hkdf_extract(&zero, psk.map_or(&zero, |k| k.expose()));
    let salt = derive(p, &early, b"derived", b"")?;
    let mut ikm = Secret::<64>::zero();
    ikm.expose_mut()[..32].copy_from_slice(ss_mlkem.expose());
    ikm.expose_mut()[32..].copy_from_slice(ss_x25519.expose());
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
