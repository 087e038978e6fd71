//! Record protection (SPEC.md section 3.3): per-direction key generations,
//! sealing into the caller's buffer, and transactional opening.

use alloc::boxed::Box;

use crate::crypto::schedule::{self, TrafficKeys};
use crate::crypto::{AeadAlgorithm, AeadKey, CryptoError, CryptoProvider, HASH_LEN, NONCE_LEN, Secret, TAG_LEN};
use crate::time::Instant;
use crate::wire::{self, EncryptionType, Flags, Frame, HEADER_LEN, Header, offset};

/// One key generation of one direction.
pub(crate) struct Generation {
    pub(crate) number: u32,
    secret: Secret<HASH_LEN>,
    keys: TrafficKeys,
    /// The keyed cipher (about 1 KiB of heap for AES-256-GCM): built at
    /// once for generations in use, on first use for the receiver's
    /// precomputed ones ([`RecvKeys::prepare`]).
    aead: Option<Box<dyn AeadKey>>,
}

impl core::fmt::Debug for Generation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Generation").field("number", &self.number).finish_non_exhaustive()
    }
}

impl Generation {
    pub(crate) fn new(
        p: &dyn CryptoProvider,
        alg: AeadAlgorithm,
        secret: Secret<HASH_LEN>,
        number: u32,
    ) -> Result<Generation, CryptoError> {
        let mut g = Generation::unkeyed(p, secret, number)?;
        g.key_cipher(p, alg)?;
        Ok(g)
    }

    /// A generation whose cipher is keyed only when first needed.
    fn unkeyed(p: &dyn CryptoProvider, secret: Secret<HASH_LEN>, number: u32) -> Result<Generation, CryptoError> {
        let keys = TrafficKeys::derive(p, &secret)?;
        Ok(Generation { number, secret, keys, aead: None })
    }

    fn key_cipher(&mut self, p: &dyn CryptoProvider, alg: AeadAlgorithm) -> Result<(), CryptoError> {
        if self.aead.is_none() {
            self.aead = Some(p.aead(alg, &self.keys.key)?);
        }
        Ok(())
    }

    /// The next generation, its cipher keyed on first use.
    fn next_unkeyed(&self, p: &dyn CryptoProvider) -> Result<Generation, CryptoError> {
        let s = schedule::next_traffic_secret(p, &self.secret)?;
        Generation::unkeyed(p, s, self.number.wrapping_add(1))
    }

    /// The next generation after a hybrid re-key with secret `rk`, its
    /// cipher keyed on first use.
    fn rekeyed_unkeyed(&self, p: &dyn CryptoProvider, rk: &Secret<HASH_LEN>) -> Result<Generation, CryptoError> {
        let s = schedule::rekeyed_traffic_secret(p, &self.secret, rk)?;
        Generation::unkeyed(p, s, self.number.wrapping_add(1))
    }

    /// The next generation: the symmetric ratchet (`"traffic upd"`).
    pub(crate) fn next(&self, p: &dyn CryptoProvider, alg: AeadAlgorithm) -> Result<Generation, CryptoError> {
        let mut g = self.next_unkeyed(p)?;
        g.key_cipher(p, alg)?;
        Ok(g)
    }

    /// The next generation after a hybrid re-key with secret `rk`.
    pub(crate) fn rekeyed(
        &self,
        p: &dyn CryptoProvider,
        alg: AeadAlgorithm,
        rk: &Secret<HASH_LEN>,
    ) -> Result<Generation, CryptoError> {
        let mut g = self.rekeyed_unkeyed(p, rk)?;
        g.key_cipher(p, alg)?;
        Ok(g)
    }

    pub(crate) fn key_id(&self) -> &[u8; 16] {
        &self.keys.key_id
    }

    pub(crate) fn nonce(&self, seq: u64) -> [u8; NONCE_LEN] {
        self.keys.nonce(seq)
    }
}

/// The sending half: the current generation and its usage.
#[derive(Debug)]
pub(crate) struct SendKeys {
    pub(crate) current: Generation,
    /// Frames sealed under `current`.
    pub(crate) sealed: u64,
    /// When `current` was installed.
    pub(crate) since: Instant,
}

impl SendKeys {
    /// Seals the frame in `out[..HEADER_LEN + len]`, whose plaintext payload
    /// is `out[HEADER_LEN..HEADER_LEN + len - tail.len()] ‖ tail` (a body
    /// is sealed from where it is, not copied in first, where the provider
    /// allows). Fills in the encryption fields, seals, writes the tag and
    /// the CRC. Up to [`TAG_LEN`] bytes of `out` after the frame may be
    /// overwritten.
    pub(crate) fn seal(
        &mut self,
        alg: AeadAlgorithm,
        mut header: Header,
        len: usize,
        out: &mut [u8],
        tail: &[u8],
    ) -> Result<usize, CryptoError> {
        let total = HEADER_LEN + len;
        let at = len.checked_sub(tail.len()).ok_or(CryptoError::Encrypt)?;
        header.flags |= Flags::ENCRYPTED;
        header.encryption = alg.encryption_type();
        header.key_id = *self.current.key_id();
        header.nonce = [0; 24];
        header.nonce[..NONCE_LEN].copy_from_slice(&self.current.nonce(header.sequence));
        header.payload_len = len as u32;
        header.crc = 0;
        header.tag = [0; TAG_LEN];
        debug_assert_eq!(header.validate(), Ok(()));
        if out.len() < total {
            return Err(CryptoError::Encrypt);
        }
        let (head, payload) = out.split_at_mut(HEADER_LEN);
        let head: &mut [u8; HEADER_LEN] = head.try_into().map_err(|_| CryptoError::InvalidKey)?;
        header.write(head);
        let aead = self.current.aead.as_deref().ok_or(CryptoError::InvalidKey)?;
        let tag = aead.seal_gather(&self.current.nonce(header.sequence), head, payload, at, tail)?;
        head[offset::TAG..offset::TAG + TAG_LEN].copy_from_slice(&tag);
        wire::write_crc(&mut out[..total]).map_err(|_| CryptoError::InvalidKey)?;
        self.sealed += 1;
        Ok(total)
    }
}

/// Which receive generation a key id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Previous,
    Current,
    Next,
    AfterNext,
}

/// Why a frame did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The key id names no generation this side holds.
    UnknownKey,
    /// The nonce field is not the one the sequence number gives.
    NonceMismatch,
    /// The header's encryption type is not the session's cipher.
    WrongCipher,
    /// The AEAD rejected the tag.
    Tag,
}

/// The receiving half: the previous generation during its grace period,
/// the current one, and the next two. The next two are derived when a
/// frame first names a generation other than the current or previous one
/// (a key update, or a forged key id), not when the session is set up:
/// that keeps them off the handshake's critical path (security review
/// P0d), and once derived a key update costs the receiver nothing per
/// frame and forged key ids cause no more work.
#[derive(Debug)]
pub(crate) struct RecvKeys {
    pub(crate) previous: Option<(Generation, Instant)>,
    pub(crate) current: Generation,
    /// The next generation and the one after, once derived.
    ahead: Option<(Generation, Generation)>,
}

impl RecvKeys {
    pub(crate) fn new(current: Generation) -> RecvKeys {
        RecvKeys { previous: None, current, ahead: None }
    }

    /// Derives the next two generations if they are not yet.
    fn ensure_ahead(&mut self, p: &dyn CryptoProvider) -> Result<(), CryptoError> {
        if self.ahead.is_none() {
            let next = self.current.next_unkeyed(p)?;
            let after_next = next.next_unkeyed(p)?;
            self.ahead = Some((next, after_next));
        }
        Ok(())
    }

    /// Keys the cipher of the generation `key_id` names, deriving the next
    /// two generations first if it is neither the current nor the previous
    /// one: before [`RecvKeys::open`]. (A cache: it changes nothing a frame
    /// could observe, so input stays transactional, and a forged key id
    /// costs one derivation of the generations ahead per session and one
    /// key expansion per generation, not work per frame.)
    pub(crate) fn prepare(
        &mut self,
        p: &dyn CryptoProvider,
        alg: AeadAlgorithm,
        key_id: &[u8; 16],
    ) -> Result<(), CryptoError> {
        if matches!(self.find(key_id), Some(Slot::Current | Slot::Previous)) {
            return Ok(());
        }
        self.ensure_ahead(p)?;
        match (self.find(key_id), self.ahead.as_mut()) {
            (Some(Slot::Next), Some((next, _))) => next.key_cipher(p, alg),
            (Some(Slot::AfterNext), Some((_, after_next))) => after_next.key_cipher(p, alg),
            _ => Ok(()),
        }
    }

    pub(crate) fn find(&self, key_id: &[u8; 16]) -> Option<Slot> {
        if key_id == self.current.key_id() {
            Some(Slot::Current)
        } else if self.ahead.as_ref().is_some_and(|(next, _)| key_id == next.key_id()) {
            Some(Slot::Next)
        } else if self.ahead.as_ref().is_some_and(|(_, after_next)| key_id == after_next.key_id()) {
            Some(Slot::AfterNext)
        } else if self.previous.as_ref().is_some_and(|(g, _)| key_id == g.key_id()) {
            Some(Slot::Previous)
        } else {
            None
        }
    }

    /// The generation number a slot holds.
    pub(crate) fn number(&self, slot: Slot) -> Option<u32> {
        self.get(slot).map(|g| g.number)
    }

    fn get(&self, slot: Slot) -> Option<&Generation> {
        match slot {
            Slot::Previous => self.previous.as_ref().map(|(g, _)| g),
            Slot::Current => Some(&self.current),
            Slot::Next => self.ahead.as_ref().map(|(next, _)| next),
            Slot::AfterNext => self.ahead.as_ref().map(|(_, after_next)| after_next),
        }
    }

    /// Checks the key id, cipher and nonce field of `frame`, then opens its
    /// payload into `plain` (cleared first). Changes nothing in `self`.
    pub(crate) fn open(
        &self,
        alg: AeadAlgorithm,
        frame: &Frame<'_>,
        plain: &mut bytes::BytesMut,
    ) -> Result<Slot, OpenError> {
        let h = frame.header();
        if h.encryption != alg.encryption_type() || h.encryption == EncryptionType::NONE {
            return Err(OpenError::WrongCipher);
        }
        let slot = self.find(&h.key_id).ok_or(OpenError::UnknownKey)?;
        let g = self.get(slot).ok_or(OpenError::UnknownKey)?;
        let nonce = g.nonce(h.sequence);
        if h.nonce[..NONCE_LEN] != nonce {
            return Err(OpenError::NonceMismatch);
        }
        let aad = wire::associated_data(frame.raw_header());
        // Decrypted straight from the frame: the zero fill is a cheaper
        // pass than a copy of the ciphertext.
        plain.clear();
        plain.resize(frame.payload().len(), 0);
        let aead = g.aead.as_deref().ok_or(OpenError::UnknownKey)?;
        aead.open_to(&nonce, &aad, frame.payload(), &h.tag, &mut plain[..]).map_err(|_| OpenError::Tag)?;
        Ok(slot)
    }

    /// After a frame opened under `slot`: a frame under a newer generation
    /// makes it current; the old current is kept until `grace_until`.
    /// Returns the new current generation number if it changed.
    pub(crate) fn promote(
        &mut self,
        p: &dyn CryptoProvider,
        slot: Slot,
        grace_until: Instant,
    ) -> Result<Option<u32>, CryptoError> {
        let steps = match slot {
            Slot::Previous | Slot::Current => return Ok(None),
            Slot::Next => 1,
            Slot::AfterNext => 2,
        };
        self.ensure_ahead(p)?;
        for _ in 0..steps {
            let Some((next, after_next)) = self.ahead.take() else { break };
            let fresh = after_next.next_unkeyed(p)?;
            let old_current = core::mem::replace(&mut self.current, next);
            self.ahead = Some((after_next, fresh));
            self.previous = Some((old_current, grace_until));
        }
        Ok(Some(self.current.number))
    }

    /// The peer will re-key after its current generation: replaces the
    /// precomputed next two generations with the re-keyed ones.
    pub(crate) fn rekey_next(&mut self, p: &dyn CryptoProvider, rk: &Secret<HASH_LEN>) -> Result<(), CryptoError> {
        let next = self.current.rekeyed_unkeyed(p, rk)?;
        let after_next = next.next_unkeyed(p)?;
        self.ahead = Some((next, after_next));
        Ok(())
    }

    /// Erases the previous generation once its grace period is over.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        if self.previous.as_ref().is_some_and(|(_, until)| now >= *until) {
            self.previous = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RustCrypto;

    #[test]
    fn the_generations_ahead_are_derived_when_a_frame_first_names_one() {
        let p = RustCrypto;
        let alg = AeadAlgorithm::Aes256Gcm;
        let secret = Secret::new([9; HASH_LEN]);
        let mut keys = RecvKeys::new(Generation::new(&p, alg, Secret::new([9; HASH_LEN]), 0).unwrap());
        // What the peer's next generation will be.
        let next = Generation::new(&p, alg, secret, 0).unwrap().next(&p, alg).unwrap();
        let current = *keys.current.key_id();
        keys.prepare(&p, alg, &current).unwrap();
        assert!(keys.ahead.is_none(), "frames under the current generation derive nothing");
        assert_eq!(keys.find(next.key_id()), None, "not derived yet");
        // A forged key id: derived once, and nothing matches it.
        keys.prepare(&p, alg, &[0xEE; 16]).unwrap();
        assert!(keys.ahead.is_some());
        assert_eq!(keys.find(&[0xEE; 16]), None);
        // The peer's key update is found and promoted.
        keys.prepare(&p, alg, next.key_id()).unwrap();
        assert_eq!(keys.find(next.key_id()), Some(Slot::Next));
        assert_eq!(keys.promote(&p, Slot::Next, Instant::ZERO).unwrap(), Some(1));
        assert_eq!(keys.current.key_id(), next.key_id());
        assert_eq!(keys.find(&current), Some(Slot::Previous));
    }
}
