//! Stateless reset (SPEC.md 3.7.1): a server that restarted, or otherwise
//! lost a session, tells its client so in one frame it can build from a
//! static key alone, and the client, which learned the session's token in
//! the handshake, ends the session at once instead of waiting for its idle
//! timeout.

use crate::crypto::{CryptoProvider, HASH_LEN, Secret, schedule};
use crate::wire::{Frame, HEADER_LEN, Header, MessageType};

/// Control frame: stateless reset, in cleartext; its payload is the
/// session's 16-byte reset token.
pub const STATELESS_RESET: MessageType = MessageType(0xC9);

/// Length of a reset token.
pub const RESET_TOKEN_LEN: usize = 16;

/// Length of a Reset frame on the wire (header and token).
pub const RESET_FRAME_LEN: usize = HEADER_LEN + RESET_TOKEN_LEN;

/// The reset token of the server session `server_session_id`:
/// `Expand-Label(reset_key, "stateless reset", u64(server_session_id), 16)`.
pub fn reset_token(p: &dyn CryptoProvider, reset_key: &Secret<HASH_LEN>, server_session_id: u64) -> [u8; 16] {
    let mut out = [0u8; RESET_TOKEN_LEN];
    // 16 bytes from a 48-byte key with a short label cannot fail.
    let _ = schedule::expand_label(p, reset_key, b"stateless reset", &server_session_id.to_be_bytes(), &mut out);
    out
}

/// The Reset frame for `server_session_id`: a cleartext frame of type
/// [`STATELESS_RESET`] whose session id is the one the lost session's
/// client writes (the server's) and whose payload is the token.
pub fn reset_frame(
    p: &dyn CryptoProvider,
    reset_key: &Secret<HASH_LEN>,
    server_session_id: u64,
) -> alloc::vec::Vec<u8> {
    let token = reset_token(p, reset_key, server_session_id);
    let header = Header::new(STATELESS_RESET, server_session_id, 0);
    let mut out = alloc::vec![0u8; RESET_FRAME_LEN];
    // The buffer is exactly the frame's length.
    let _ = Frame::encode(&header, &token, &mut out);
    out
}
