//! Handshake message encodings (SPEC.md, "Handshake messages").
//!
//! Each message is `type u8 ‖ length u24 ‖ body`. Parsing never panics and
//! names the message and field of the first thing that is wrong.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::error::HandshakeError;
use crate::crypto::{MLKEM_CT_LEN, MLKEM_EK_LEN, Suite, X25519_LEN};

/// ClientHello (cleartext).
pub const CLIENT_HELLO: u8 = 0x01;
/// ServerHello (cleartext).
pub const SERVER_HELLO: u8 = 0x02;
/// Retry: the server's stateless cookie (cleartext).
pub const RETRY: u8 = 0x03;
/// Busy: the server will not take this hello now; try again later
/// (cleartext).
pub const BUSY: u8 = 0x04;
/// An AEAD-sealed sequence of the messages below, under a handshake key.
pub const ENCRYPTED: u8 = 0x10;
/// The server's identity (inline or key id only) and its requests.
pub const SERVER_AUTH: u8 = 0x11;
/// Both signatures over the transcript hash.
pub const CERTIFICATE_VERIFY: u8 = 0x12;
/// The Finished MAC.
pub const FINISHED: u8 = 0x13;
/// The client's identity, when the server asked for one.
pub const CLIENT_AUTH: u8 = 0x14;
/// The sender's session parameters (both flights, encrypted).
pub const PARAMETERS: u8 = 0x15;

/// Cap on any one handshake message (SPEC.md): 16 KiB.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;
/// Cap on a Retry token (it travels behind a one-byte length in every
/// stage-`00` frame, SPEC.md 3.2).
pub const MAX_TOKEN_LEN: usize = 255;
/// Cap on a whole ClientHello message (type and length included): a
/// server refuses a longer one as soon as its header is read, and so never
/// holds more than this for a hello being reassembled.
pub const MAX_CLIENT_HELLO_LEN: usize = 4096;
/// Length of the handshake randoms.
pub const RANDOM_LEN: usize = 32;
/// Length of mac1.
pub const MAC1_LEN: usize = 16;

/// A message split off a buffer: `(type, body, bytes used)`.
pub type SplitMessage<'a> = (u8, &'a [u8], usize);

/// Splits the first complete message off `buf`: `(type, body, bytes used)`,
/// or `None` if more bytes are needed. Refuses a declared length above
/// [`MAX_MESSAGE_LEN`] before waiting for it.
pub fn split_message(buf: &[u8]) -> Result<Option<SplitMessage<'_>>, HandshakeError> {
    let Some((head, rest)) = buf.split_first_chunk::<4>() else { return Ok(None) };
    let len = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
    if len > MAX_MESSAGE_LEN {
        return Err(HandshakeError::TooLarge { length: len, max: MAX_MESSAGE_LEN });
    }
    Ok(rest.get(..len).map(|body| (head[0], body, 4 + len)))
}

/// Starts a message of type `ty` in `out`; call [`end_message`] with the
/// returned position when the body is written.
pub(crate) fn begin_message(out: &mut Vec<u8>, ty: u8) -> usize {
    out.push(ty);
    out.extend_from_slice(&[0; 3]);
    out.len()
}

/// Fills in the length of the message begun at `start`.
pub(crate) fn end_message(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u32;
    out[start - 3..start].copy_from_slice(&len.to_be_bytes()[1..]);
}

/// A cursor over a message body whose errors name the message and field.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    message: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(message: &'static str, buf: &'a [u8]) -> Self {
        Reader { buf, message }
    }

    fn err(&self, field: &'static str) -> HandshakeError {
        HandshakeError::Malformed { message: self.message, field }
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], HandshakeError> {
        if self.buf.len() < n {
            return Err(self.err(field));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<&'a [u8; N], HandshakeError> {
        let b = self.bytes(N, field)?;
        b.try_into().map_err(|_| self.err(field))
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, HandshakeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, HandshakeError> {
        Ok(u16::from_be_bytes(*self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, HandshakeError> {
        Ok(u32::from_be_bytes(*self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, HandshakeError> {
        Ok(u64::from_be_bytes(*self.array(field)?))
    }

    pub(crate) fn finish(self) -> Result<(), HandshakeError> {
        if self.buf.is_empty() { Ok(()) } else { Err(self.err("trailing bytes")) }
    }
}

/// Session parameters each side announces in its encrypted flight
/// (SPEC.md, "Parameters"). Unknown parameter ids are ignored, so later
/// versions can add parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionParams {
    /// Parameter 1: the idle timeout this side wants, in milliseconds. The
    /// session uses the minimum of both sides' values; 0 means "none from me".
    pub idle_timeout_ms: u32,
    /// Parameter 2: the largest frame payload this side accepts.
    pub max_frame_payload: u32,
    /// Parameter 3: the largest message (after reassembly) this side accepts.
    pub max_message_len: u32,
    /// Parameter 4: the flow-control window of each priority class
    /// (SPEC.md 4.6): bytes of reliable messages the peer may send beyond
    /// what this side's application has read, and the bound on unread
    /// unreliable bytes. At least 1.
    pub receive_window: u32,
    /// Parameter 5: the flow-control window of each subscription this side
    /// holds (SPEC.md 4.9): bytes of a subscription's reliable items the
    /// publisher may send beyond what this side's application has read.
    /// 0: none (the class windows alone apply). Default 64 KiB: enough for
    /// a live stream's rate over a round trip, small enough that a
    /// subscription nobody reads stops its publisher soon and many of
    /// them pin little memory.
    pub subscription_window: u32,
    /// Parameter 6, a server's only: the session's stateless reset token
    /// (SPEC.md 3.7.1), 16 bytes. A client that holds it ends the session
    /// at once when a Reset frame carrying it arrives.
    pub reset_token: Option<[u8; 16]>,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            idle_timeout_ms: 30_000,
            max_frame_payload: crate::wire::DEFAULT_MAX_PAYLOAD,
            max_message_len: 16 * 1024 * 1024,
            receive_window: 4 * 1024 * 1024,
            subscription_window: 64 * 1024,
            reset_token: None,
        }
    }
}

const PARAM_IDLE: u16 = 1;
const PARAM_MAX_FRAME: u16 = 2;
const PARAM_MAX_MESSAGE: u16 = 3;
const PARAM_RECEIVE_WINDOW: u16 = 4;
const PARAM_SUBSCRIPTION_WINDOW: u16 = 5;
const PARAM_RESET_TOKEN: u16 = 6;

impl SessionParams {
    /// The largest transmit a session announcing these parameters writes:
    /// one frame header plus the largest frame payload it sends, which is
    /// at most the larger of `max_frame_payload` and the floor every peer
    /// accepts ([`crate::wire::MIN_MAX_PAYLOAD`]). A `poll_transmit`
    /// buffer this long never gets `BufferTooSmall`.
    pub fn max_transmit_len(&self) -> usize {
        crate::wire::HEADER_LEN + self.max_frame_payload.max(crate::wire::MIN_MAX_PAYLOAD) as usize
    }

    /// Writes a Parameters message: a list of `id u16 ‖ length u16 ‖ value`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_message(out, PARAMETERS);
        for (id, v) in [
            (PARAM_IDLE, self.idle_timeout_ms),
            (PARAM_MAX_FRAME, self.max_frame_payload),
            (PARAM_MAX_MESSAGE, self.max_message_len),
            (PARAM_RECEIVE_WINDOW, self.receive_window),
            (PARAM_SUBSCRIPTION_WINDOW, self.subscription_window),
        ] {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&v.to_be_bytes());
        }
        if let Some(token) = &self.reset_token {
            out.extend_from_slice(&PARAM_RESET_TOKEN.to_be_bytes());
            out.extend_from_slice(&16u16.to_be_bytes());
            out.extend_from_slice(token);
        }
        end_message(out, start);
    }

    /// Parses a Parameters body. Every known parameter must appear exactly
    /// once with a 4-byte value; unknown ids are skipped.
    pub(crate) fn parse(body: &[u8]) -> Result<SessionParams, HandshakeError> {
        let mut r = Reader::new("Parameters", body);
        let mut seen = [None::<u32>; 5];
        let mut reset_token = None;
        while !r.buf.is_empty() {
            let id = r.u16("parameter id")?;
            let len = r.u16("parameter length")? as usize;
            let value = r.bytes(len, "parameter value")?;
            if id == PARAM_RESET_TOKEN {
                let t: [u8; 16] = value.try_into().map_err(|_| r.err("parameter length"))?;
                if reset_token.replace(t).is_some() {
                    return Err(r.err("duplicate parameter"));
                }
                continue;
            }
            let Some(slot) = seen.get_mut(usize::from(id).wrapping_sub(1)) else { continue };
            let v: [u8; 4] = value.try_into().map_err(|_| r.err("parameter length"))?;
            if slot.replace(u32::from_be_bytes(v)).is_some() {
                return Err(r.err("duplicate parameter"));
            }
        }
        let [Some(idle), Some(frame), Some(message), Some(window), Some(subscription_window)] = seen else {
            return Err(r.err("missing parameter"));
        };
        if frame < crate::wire::MIN_MAX_PAYLOAD || message < frame.min(64 * 1024) || window == 0 {
            return Err(r.err("parameter value"));
        }
        Ok(SessionParams {
            idle_timeout_ms: idle,
            max_frame_payload: frame,
            max_message_len: message,
            receive_window: window,
            subscription_window,
            reset_token,
        })
    }
}

/// The fields of a ClientHello other than mac1.
#[derive(Clone, Debug)]
pub(crate) struct ClientHello {
    pub(crate) version: u8,
    pub(crate) suites: Vec<Suite>,
    pub(crate) ciphers: Vec<u8>,
    pub(crate) random: [u8; RANDOM_LEN],
    pub(crate) session_id: u64,
    pub(crate) x25519: [u8; X25519_LEN],
    pub(crate) mlkem_ek: Box<[u8; MLKEM_EK_LEN]>,
    /// Bit 0: pinned (the client holds the identity that keyed mac1).
    pub(crate) flags: u8,
    pub(crate) padding: usize,
}

/// ClientHello flag: the client holds the full identity that keyed mac1 and
/// asks for the key-id-only reply.
pub(crate) const HELLO_PINNED: u8 = 0x01;

impl ClientHello {
    /// Encodes the whole message except mac1; returns the bytes with room
    /// for mac1 at the end (the caller computes and fills it).
    pub(crate) fn encode_without_mac(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1700 + self.padding);
        let start = begin_message(&mut out, CLIENT_HELLO);
        out.push(self.version);
        out.push(self.suites.len() as u8);
        for s in &self.suites {
            out.extend_from_slice(&s.0.to_be_bytes());
        }
        out.push(self.ciphers.len() as u8);
        out.extend_from_slice(&self.ciphers);
        out.extend_from_slice(&self.random);
        out.extend_from_slice(&self.session_id.to_be_bytes());
        out.extend_from_slice(&self.x25519);
        out.extend_from_slice(&self.mlkem_ek[..]);
        out.push(self.flags);
        out.extend_from_slice(&(self.padding as u16).to_be_bytes());
        out.resize(out.len() + self.padding + MAC1_LEN, 0);
        end_message(&mut out, start);
        out
    }

    /// Parses a ClientHello body; returns it and its mac1.
    pub(crate) fn parse(body: &[u8]) -> Result<(ClientHello, [u8; MAC1_LEN]), HandshakeError> {
        let mut r = Reader::new("ClientHello", body);
        let version = r.u8("version")?;
        let n = r.u8("suite count")? as usize;
        if n == 0 {
            return Err(HandshakeError::Malformed { message: "ClientHello", field: "suite count" });
        }
        let suites =
            r.bytes(2 * n, "suites")?.chunks_exact(2).map(|c| Suite(u16::from_be_bytes([c[0], c[1]]))).collect();
        let n = r.u8("cipher count")? as usize;
        if n == 0 {
            return Err(HandshakeError::Malformed { message: "ClientHello", field: "cipher count" });
        }
        let ciphers = r.bytes(n, "ciphers")?.to_vec();
        let random = *r.array("client random")?;
        let session_id = r.u64("client session id")?;
        if session_id == 0 {
            return Err(HandshakeError::Malformed { message: "ClientHello", field: "client session id" });
        }
        let x25519 = *r.array("x25519 share")?;
        let mlkem_ek = Box::new(*r.array::<MLKEM_EK_LEN>("ML-KEM encapsulation key")?);
        let flags = r.u8("flags")?;
        if flags & !HELLO_PINNED != 0 {
            return Err(HandshakeError::Malformed { message: "ClientHello", field: "flags" });
        }
        let padding = r.u16("padding length")? as usize;
        if r.bytes(padding, "padding")?.iter().any(|&b| b != 0) {
            return Err(HandshakeError::Malformed { message: "ClientHello", field: "padding" });
        }
        let mac1 = *r.array("mac1")?;
        r.finish()?;
        let hello = ClientHello { version, suites, ciphers, random, session_id, x25519, mlkem_ek, flags, padding };
        Ok((hello, mac1))
    }
}

/// The ServerHello.
#[derive(Clone, Debug)]
pub(crate) struct ServerHello {
    pub(crate) version: u8,
    pub(crate) suite: Suite,
    pub(crate) cipher: u8,
    pub(crate) random: [u8; RANDOM_LEN],
    pub(crate) session_id: u64,
    pub(crate) x25519: [u8; X25519_LEN],
    pub(crate) mlkem_ct: Box<[u8; MLKEM_CT_LEN]>,
}

impl ServerHello {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_message(out, SERVER_HELLO);
        out.push(self.version);
        out.extend_from_slice(&self.suite.0.to_be_bytes());
        out.push(self.cipher);
        out.extend_from_slice(&self.random);
        out.extend_from_slice(&self.session_id.to_be_bytes());
        out.extend_from_slice(&self.x25519);
        out.extend_from_slice(&self.mlkem_ct[..]);
        end_message(out, start);
    }

    pub(crate) fn parse(body: &[u8]) -> Result<ServerHello, HandshakeError> {
        let mut r = Reader::new("ServerHello", body);
        let hello = ServerHello {
            version: r.u8("version")?,
            suite: Suite(r.u16("suite")?),
            cipher: r.u8("cipher")?,
            random: *r.array("server random")?,
            session_id: r.u64("server session id")?,
            x25519: *r.array("x25519 share")?,
            mlkem_ct: Box::new(*r.array::<MLKEM_CT_LEN>("ML-KEM ciphertext")?),
        };
        r.finish()?;
        if hello.session_id == 0 {
            return Err(HandshakeError::Malformed { message: "ServerHello", field: "server session id" });
        }
        Ok(hello)
    }
}

/// Encodes a Retry carrying `token`.
pub(crate) fn encode_retry(token: &[u8], out: &mut Vec<u8>) {
    let start = begin_message(out, RETRY);
    out.extend_from_slice(&(token.len() as u16).to_be_bytes());
    out.extend_from_slice(token);
    end_message(out, start);
}

/// Encodes a Busy message: try again after `retry_after_ms`.
pub(crate) fn encode_busy(retry_after_ms: u32, out: &mut Vec<u8>) {
    let start = begin_message(out, BUSY);
    out.extend_from_slice(&retry_after_ms.to_be_bytes());
    end_message(out, start);
}

/// Parses a Busy body into its delay in milliseconds.
pub fn parse_busy(body: &[u8]) -> Result<u32, HandshakeError> {
    let mut r = Reader::new("Busy", body);
    let ms = r.u32("retry after")?;
    r.finish()?;
    Ok(ms)
}

/// Parses a Retry body into its token.
pub fn parse_retry(body: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let mut r = Reader::new("Retry", body);
    let len = r.u16("token length")? as usize;
    if len == 0 || len > MAX_TOKEN_LEN {
        return Err(HandshakeError::Malformed { message: "Retry", field: "token length" });
    }
    let token = r.bytes(len, "token")?.to_vec();
    r.finish()?;
    Ok(token)
}
