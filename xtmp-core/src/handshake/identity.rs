//! Identities: hybrid ML-DSA-87 + Ed25519 key pairs, their key ids, their
//! file format, and root-signed credentials.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use base64ct::{Base64, Encoding};
use zeroize::Zeroizing;

use super::error::TrustError;
use crate::crypto::{
    CryptoError, CryptoProvider, ED25519_PK_LEN, ED25519_SIG_LEN, HybridSigner, MLDSA_SIG_LEN, MLDSA_VK_LEN, Rng,
    Secret, ct_eq,
};

/// An identity's fingerprint: `SHA-384("xtmp1 key id" ‖ mldsa_vk ‖ ed25519_pk)[..16]`.
/// Covers both public keys, so neither half can be swapped.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    /// Constant-time equality.
    pub fn ct_eq(&self, other: &KeyId) -> bool {
        ct_eq(&self.0, &other.0)
    }

    /// Parses the text form `xtmp1:` followed by 32 hex digits.
    pub fn parse(text: &str) -> Option<KeyId> {
        let hex = text.trim().strip_prefix("xtmp1:")?;
        if hex.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(KeyId(out))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("xtmp1:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The public half of an identity.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicIdentity {
    mldsa: Box<[u8; MLDSA_VK_LEN]>,
    ed25519: [u8; ED25519_PK_LEN],
    key_id: KeyId,
}

/// Length of an encoded public identity (ML-DSA-87 key ‖ Ed25519 key).
pub const PUBLIC_IDENTITY_LEN: usize = MLDSA_VK_LEN + ED25519_PK_LEN;

const PUBLIC_PEM: &str = "XTMP PUBLIC IDENTITY";
const PRIVATE_PEM: &str = "XTMP PRIVATE IDENTITY";
const PUBLIC_MAGIC: &[u8; 8] = b"XTMPPK01";
const PRIVATE_MAGIC: &[u8; 8] = b"XTMPSK01";

/// Why an identity file could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityFileError {
    /// The `-----BEGIN …-----`/`-----END …-----` lines are missing or wrong.
    Armor,
    /// The body is not valid Base64.
    Base64,
    /// The decoded body has the wrong magic or length.
    Format,
    /// The keys could not be loaded.
    Key(CryptoError),
}

impl fmt::Display for IdentityFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityFileError::Armor => f.write_str("identity file: missing or wrong BEGIN/END lines"),
            IdentityFileError::Base64 => f.write_str("identity file: body is not valid Base64"),
            IdentityFileError::Format => f.write_str("identity file: wrong magic or length"),
            IdentityFileError::Key(e) => write!(f, "identity file: {e}"),
        }
    }
}

impl core::error::Error for IdentityFileError {}

impl PublicIdentity {
    /// Builds the identity and its key id from the two public keys.
    pub fn new(p: &dyn CryptoProvider, mldsa: &[u8; MLDSA_VK_LEN], ed25519: &[u8; ED25519_PK_LEN]) -> Self {
        let mut h = p.sha384();
        h.update(b"xtmp1 key id");
        h.update(mldsa);
        h.update(ed25519);
        let mut key_id = [0u8; 16];
        key_id.copy_from_slice(&h.current()[..16]);
        PublicIdentity { mldsa: Box::new(*mldsa), ed25519: *ed25519, key_id: KeyId(key_id) }
    }

    /// Decodes `mldsa_vk ‖ ed25519_pk` (the wire encoding).
    pub fn from_bytes(p: &dyn CryptoProvider, bytes: &[u8]) -> Option<Self> {
        let (mldsa, ed25519) = bytes.split_first_chunk::<MLDSA_VK_LEN>()?;
        Some(PublicIdentity::new(p, mldsa, ed25519.try_into().ok()?))
    }

    /// The wire encoding, `mldsa_vk ‖ ed25519_pk`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PUBLIC_IDENTITY_LEN);
        out.extend_from_slice(&self.mldsa[..]);
        out.extend_from_slice(&self.ed25519);
        out
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The ML-DSA-87 verifying key.
    pub fn mldsa(&self) -> &[u8; MLDSA_VK_LEN] {
        &self.mldsa
    }

    /// The Ed25519 public key.
    pub fn ed25519(&self) -> &[u8; ED25519_PK_LEN] {
        &self.ed25519
    }

    /// The PEM-like text form (SPEC.md, "Identity files").
    pub fn to_pem(&self) -> String {
        let mut body = Vec::with_capacity(8 + PUBLIC_IDENTITY_LEN);
        body.extend_from_slice(PUBLIC_MAGIC);
        body.extend_from_slice(&self.to_bytes());
        armor(PUBLIC_PEM, &body, Some(self.key_id))
    }

    /// Reads the text form written by [`PublicIdentity::to_pem`].
    pub fn from_pem(p: &dyn CryptoProvider, text: &str) -> Result<Self, IdentityFileError> {
        let body = dearmor(PUBLIC_PEM, text)?;
        let rest = body.strip_prefix(PUBLIC_MAGIC).ok_or(IdentityFileError::Format)?;
        if rest.len() != PUBLIC_IDENTITY_LEN {
            return Err(IdentityFileError::Format);
        }
        PublicIdentity::from_bytes(p, rest).ok_or(IdentityFileError::Format)
    }

    /// Verifies both halves of a hybrid signature by this identity.
    pub fn verify(
        &self,
        p: &dyn CryptoProvider,
        msg: &[u8],
        mldsa_sig: &[u8; MLDSA_SIG_LEN],
        ed25519_sig: &[u8; ED25519_SIG_LEN],
    ) -> Result<(), super::error::SignatureAlgorithm> {
        use super::error::SignatureAlgorithm as Alg;
        // Both halves are always checked, so timing does not reveal which failed first.
        let ml = p.mldsa_verify(&self.mldsa, msg, super::SIGNATURE_CONTEXT, mldsa_sig);
        let ed = p.ed25519_verify(&self.ed25519, msg, ed25519_sig);
        match (ml, ed) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(_), _) => Err(Alg::MlDsa87),
            (_, Err(_)) => Err(Alg::Ed25519),
        }
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({})", self.key_id)
    }
}

/// A full identity: the two signing keys, kept as seeds, and the public half.
///
/// `Debug` prints only the key id; the seeds are zeroized on drop and leave
/// the value only through [`IdentityKeypair::to_pem`].
pub struct IdentityKeypair {
    mldsa_seed: Secret<32>,
    ed25519_seed: Secret<32>,
    signer: Box<dyn HybridSigner>,
    public: PublicIdentity,
}

impl IdentityKeypair {
    /// A fresh identity from the caller's RNG.
    pub fn generate(p: &dyn CryptoProvider, rng: Rng<'_>) -> Result<Self, CryptoError> {
        let mut mldsa_seed = Secret::zero();
        let mut ed25519_seed = Secret::zero();
        rng.fill_bytes(mldsa_seed.expose_mut());
        rng.fill_bytes(ed25519_seed.expose_mut());
        IdentityKeypair::from_seeds(p, mldsa_seed, ed25519_seed)
    }

    /// The identity with these seeds (ML-DSA-87 ξ and the Ed25519 secret key).
    pub fn from_seeds(
        p: &dyn CryptoProvider,
        mldsa_seed: Secret<32>,
        ed25519_seed: Secret<32>,
    ) -> Result<Self, CryptoError> {
        let signer = p.signer(&mldsa_seed, &ed25519_seed)?;
        let public = PublicIdentity::new(p, &signer.mldsa_public(), &signer.ed25519_public());
        Ok(IdentityKeypair { mldsa_seed, ed25519_seed, signer, public })
    }

    /// The public half.
    pub fn public(&self) -> &PublicIdentity {
        &self.public
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id
    }

    /// Signs `msg` with both keys: `(ML-DSA-87 signature, Ed25519 signature)`.
    pub fn sign(
        &self,
        msg: &[u8],
        rng: Rng<'_>,
    ) -> Result<(Box<[u8; MLDSA_SIG_LEN]>, [u8; ED25519_SIG_LEN]), CryptoError> {
        let ml = self.signer.mldsa_sign(msg, super::SIGNATURE_CONTEXT, rng)?;
        Ok((ml, self.signer.ed25519_sign(msg)))
    }

    /// A 48-byte key derived from the identity's secret seeds for `label`
    /// (SPEC.md 3.7.1): `Expand-Label(Extract(0^48, mldsa_seed ‖
    /// ed25519_seed), label, "", 48)`. The same identity gives the same key
    /// after a restart; distinct labels give independent keys, and none
    /// reveals the seeds.
    pub fn derive_key(&self, p: &dyn CryptoProvider, label: &[u8]) -> Result<Secret<48>, CryptoError> {
        let mut ikm = zeroize::Zeroizing::new([0u8; 64]);
        ikm[..32].copy_from_slice(self.mldsa_seed.expose());
        ikm[32..].copy_from_slice(self.ed25519_seed.expose());
        let prk = p.hkdf_extract(&[0u8; 48], &ikm[..]);
        crate::crypto::schedule::derive(p, &prk, label, b"")
    }

    /// The private text form (SPEC.md, "Identity files"). It contains the
    /// secret seeds: write it with owner-only permissions.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let mut body = Zeroizing::new(Vec::with_capacity(72));
        body.extend_from_slice(PRIVATE_MAGIC);
        body.extend_from_slice(self.mldsa_seed.expose());
        body.extend_from_slice(self.ed25519_seed.expose());
        Zeroizing::new(armor(PRIVATE_PEM, &body, Some(self.public.key_id)))
    }

    /// Reads the private text form.
    pub fn from_pem(p: &dyn CryptoProvider, text: &str) -> Result<Self, IdentityFileError> {
        let body = Zeroizing::new(dearmor(PRIVATE_PEM, text)?);
        let rest = body.strip_prefix(PRIVATE_MAGIC).ok_or(IdentityFileError::Format)?;
        let (ml, ed) = rest.split_first_chunk::<32>().ok_or(IdentityFileError::Format)?;
        let ed: &[u8; 32] = ed.try_into().map_err(|_| IdentityFileError::Format)?;
        IdentityKeypair::from_seeds(p, Secret::new(*ml), Secret::new(*ed)).map_err(IdentityFileError::Key)
    }
}

impl fmt::Debug for IdentityKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKeypair({}, private keys redacted)", self.public.key_id)
    }
}

fn armor(label: &str, body: &[u8], key_id: Option<KeyId>) -> String {
    let b64 = Zeroizing::new(Base64::encode_string(body));
    let mut out = String::new();
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    if let Some(id) = key_id {
        use core::fmt::Write as _;
        let _ = writeln!(out, "Key-Id: {id}\n");
    }
    for line in b64.as_bytes().chunks(64) {
        out.push_str(core::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn dearmor(label: &str, text: &str) -> Result<Vec<u8>, IdentityFileError> {
    let mut lines = text.lines().map(str::trim).skip_while(|l| l.is_empty());
    let begin = lines.next().ok_or(IdentityFileError::Armor)?;
    if begin.strip_prefix("-----BEGIN ").and_then(|r| r.strip_suffix("-----")) != Some(label) {
        return Err(IdentityFileError::Armor);
    }
    let mut b64 = Zeroizing::new(String::new());
    let mut ended = false;
    for line in lines {
        if let Some(end) = line.strip_prefix("-----END ") {
            if end.strip_suffix("-----") != Some(label) {
                return Err(IdentityFileError::Armor);
            }
            ended = true;
            break;
        }
        if line.is_empty() || line.contains(':') {
            continue; // headers such as Key-Id are informative only
        }
        b64.push_str(line);
    }
    if !ended {
        return Err(IdentityFileError::Armor);
    }
    Base64::decode_vec(&b64).map_err(|_| IdentityFileError::Base64)
}

/// A short-lived server credential signed by a root identity
/// (SPEC.md, "Credentials").
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The issuer's key id.
    pub issuer: KeyId,
    /// Valid from (Unix seconds, inclusive).
    pub not_before: u64,
    /// Valid until (Unix seconds, exclusive).
    pub not_after: u64,
    /// The issuer's ML-DSA-87 signature.
    pub mldsa_sig: Box<[u8; MLDSA_SIG_LEN]>,
    /// The issuer's Ed25519 signature.
    pub ed25519_sig: [u8; ED25519_SIG_LEN],
}

/// Encoded length of a credential.
pub const CREDENTIAL_LEN: usize = 16 + 8 + 8 + MLDSA_SIG_LEN + ED25519_SIG_LEN;

impl Credential {
    fn signed_bytes(subject: &PublicIdentity, issuer: KeyId, not_before: u64, not_after: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(32 + PUBLIC_IDENTITY_LEN);
        m.extend_from_slice(b"xtmp1 credential\0");
        m.extend_from_slice(&issuer.0);
        m.extend_from_slice(&subject.to_bytes());
        m.extend_from_slice(&not_before.to_be_bytes());
        m.extend_from_slice(&not_after.to_be_bytes());
        m
    }

    /// `root` certifies `subject` for `[not_before, not_after)`.
    pub fn issue(
        root: &IdentityKeypair,
        subject: &PublicIdentity,
        not_before: u64,
        not_after: u64,
        rng: Rng<'_>,
    ) -> Result<Credential, CryptoError> {
        let msg = Credential::signed_bytes(subject, root.key_id(), not_before, not_after);
        let (mldsa_sig, ed25519_sig) = root.sign(&msg, rng)?;
        Ok(Credential { issuer: root.key_id(), not_before, not_after, mldsa_sig, ed25519_sig })
    }

    /// Checks that `root` issued this credential for `subject` and that it
    /// is valid at `unix_time`.
    pub fn verify(
        &self,
        p: &dyn CryptoProvider,
        root: &PublicIdentity,
        subject: &PublicIdentity,
        unix_time: Option<u64>,
    ) -> Result<(), TrustError> {
        if !self.issuer.ct_eq(&root.key_id()) {
            return Err(TrustError::UnknownIssuer);
        }
        let msg = Credential::signed_bytes(subject, self.issuer, self.not_before, self.not_after);
        root.verify(p, &msg, &self.mldsa_sig, &self.ed25519_sig).map_err(|_| TrustError::BadCredentialSignature)?;
        let now = unix_time.ok_or(TrustError::NoTime)?;
        if now < self.not_before {
            return Err(TrustError::CredentialNotYetValid);
        }
        if now >= self.not_after {
            return Err(TrustError::CredentialExpired);
        }
        Ok(())
    }

    /// The wire encoding: `issuer[16] ‖ not_before u64 ‖ not_after u64 ‖ mldsa_sig ‖ ed25519_sig`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CREDENTIAL_LEN);
        out.extend_from_slice(&self.issuer.0);
        out.extend_from_slice(&self.not_before.to_be_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
        out.extend_from_slice(&self.mldsa_sig[..]);
        out.extend_from_slice(&self.ed25519_sig);
        out
    }

    /// Decodes [`Credential::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Option<Credential> {
        if b.len() != CREDENTIAL_LEN {
            return None;
        }
        let issuer = KeyId(b[..16].try_into().ok()?);
        let not_before = u64::from_be_bytes(b[16..24].try_into().ok()?);
        let not_after = u64::from_be_bytes(b[24..32].try_into().ok()?);
        let mldsa_sig = Box::new(b[32..32 + MLDSA_SIG_LEN].try_into().ok()?);
        let ed25519_sig = b[32 + MLDSA_SIG_LEN..].try_into().ok()?;
        Some(Credential { issuer, not_before, not_after, mldsa_sig, ed25519_sig })
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("issuer", &self.issuer)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}
