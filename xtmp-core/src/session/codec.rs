//! Payload encodings of the session's frames (SPEC.md section 3.4).
//!
//! Every parser returns `None` on any malformation; the caller turns that
//! into a typed error naming the frame.

use alloc::string::String;
use alloc::vec::Vec;

/// Kinds of a data record.
pub(crate) const KIND_MESSAGE: u8 = 0;
pub(crate) const KIND_REQUEST: u8 = 1;
pub(crate) const KIND_RESPONSE: u8 = 2;
/// Subscriptions (SPEC.md 4.9): a request that opens one, an item of one,
/// its end by the subscriber, its end by the publisher.
pub(crate) const KIND_SUBSCRIBE: u8 = 3;
pub(crate) const KIND_ITEM: u8 = 4;
pub(crate) const KIND_UNSUBSCRIBE: u8 = 5;
pub(crate) const KIND_END: u8 = 6;
/// Set in the kind byte of the frame that completes a reliable message
/// when the sender has nothing else to send: acknowledge at once (SPEC.md
/// 4.3).
pub(crate) const KIND_ACK_NOW: u8 = 0x80;
/// Set in the kind byte of a data frame whose data header is followed by
/// an acknowledgement block, the payload of an ACK frame (SPEC.md 4.3).
pub(crate) const KIND_WITH_ACK: u8 = 0x40;

/// `kind u8 ‖ message id u64 ‖ correlation id u64 ‖ order u64`.
pub(crate) const DATA_HEADER_LEN: usize = 25;
/// `offset u32 ‖ total length u32`, after the data header of a fragment.
pub(crate) const FRAGMENT_HEADER_LEN: usize = 8;

/// The head of an application, extension or Error frame's plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DataHeader {
    pub(crate) kind: u8,
    pub(crate) id: u64,
    pub(crate) correlation: u64,
    /// 0: unordered and unreliable; n: the n-th reliable message of its
    /// priority class (SPEC.md section 4.1).
    pub(crate) order: u64,
    /// The sender asks for an immediate acknowledgement ([`KIND_ACK_NOW`]).
    pub(crate) ack_now: bool,
    /// An acknowledgement block follows the header ([`KIND_WITH_ACK`]).
    pub(crate) with_ack: bool,
}

impl DataHeader {
    pub(crate) fn write(&self, out: &mut [u8]) {
        out[0] =
            self.kind | if self.ack_now { KIND_ACK_NOW } else { 0 } | if self.with_ack { KIND_WITH_ACK } else { 0 };
        out[1..9].copy_from_slice(&self.id.to_be_bytes());
        out[9..17].copy_from_slice(&self.correlation.to_be_bytes());
        out[17..25].copy_from_slice(&self.order.to_be_bytes());
    }

    pub(crate) fn parse(p: &[u8]) -> Option<DataHeader> {
        let h = p.get(..DATA_HEADER_LEN)?;
        let d = DataHeader {
            kind: h[0] & !(KIND_ACK_NOW | KIND_WITH_ACK),
            ack_now: h[0] & KIND_ACK_NOW != 0,
            with_ack: h[0] & KIND_WITH_ACK != 0,
            id: u64::from_be_bytes(h[1..9].try_into().ok()?),
            correlation: u64::from_be_bytes(h[9..17].try_into().ok()?),
            order: u64::from_be_bytes(h[17..25].try_into().ok()?),
        };
        let valid = match d.kind {
            KIND_MESSAGE | KIND_REQUEST | KIND_SUBSCRIBE => d.correlation == 0,
            KIND_RESPONSE | KIND_ITEM | KIND_UNSUBSCRIBE | KIND_END => d.correlation != 0,
            _ => false,
        };
        (valid && d.id != 0).then_some(d)
    }
}

/// Parses a fragment header: `(offset, total)`.
pub(crate) fn parse_fragment(p: &[u8]) -> Option<(u32, u32)> {
    let h = p.get(..FRAGMENT_HEADER_LEN)?;
    Some((u32::from_be_bytes(h[..4].try_into().ok()?), u32::from_be_bytes(h[4..].try_into().ok()?)))
}

pub(crate) fn write_fragment(offset: u32, total: u32, out: &mut [u8]) {
    out[..4].copy_from_slice(&offset.to_be_bytes());
    out[4..8].copy_from_slice(&total.to_be_bytes());
}

/// Forward (`C5`): `class u8 ‖ floor u64 ‖ credit u64`.
pub(crate) const FORWARD_LEN: usize = 17;

/// Parses a Forward: `(class, floor, credit)`; the class must be 0 to 2.
pub(crate) fn parse_forward(p: &[u8]) -> Option<(usize, u64, u64)> {
    let b: &[u8; FORWARD_LEN] = p.try_into().ok()?;
    let floor = u64::from_be_bytes(b[1..9].try_into().ok()?);
    let credit = u64::from_be_bytes(b[9..].try_into().ok()?);
    (b[0] <= 2).then_some((usize::from(b[0]), floor, credit))
}

pub(crate) fn write_forward(class: u8, floor: u64, credit: u64, out: &mut [u8]) {
    out[0] = class;
    out[1..9].copy_from_slice(&floor.to_be_bytes());
    out[9..17].copy_from_slice(&credit.to_be_bytes());
}

/// MaxData (`C6`): `class u8 ‖ limit u64`.
pub(crate) const MAX_DATA_LEN: usize = 9;

/// Parses a MaxData: `(class, limit)`; the class must be 0 to 2.
pub(crate) fn parse_max_data(p: &[u8]) -> Option<(usize, u64)> {
    let b: &[u8; MAX_DATA_LEN] = p.try_into().ok()?;
    (b[0] <= 2).then(|| (usize::from(b[0]), u64::from_be_bytes(b[1..].try_into().unwrap_or_default())))
}

pub(crate) fn write_max_data(class: u8, limit: u64, out: &mut [u8]) {
    out[0] = class;
    out[1..9].copy_from_slice(&limit.to_be_bytes());
}

/// SubscriptionCredit (`C8`): `subscription id u64 ‖ limit u64`.
pub(crate) const SUB_CREDIT_LEN: usize = 16;

/// Parses a SubscriptionCredit: `(subscription id, limit)`.
pub(crate) fn parse_sub_credit(p: &[u8]) -> Option<(u64, u64)> {
    let b: &[u8; SUB_CREDIT_LEN] = p.try_into().ok()?;
    let (id, limit) = b.split_at(8);
    Some((u64::from_be_bytes(id.try_into().ok()?), u64::from_be_bytes(limit.try_into().ok()?)))
}

pub(crate) fn write_sub_credit(id: u64, limit: u64, out: &mut [u8]) {
    out[..8].copy_from_slice(&id.to_be_bytes());
    out[8..16].copy_from_slice(&limit.to_be_bytes());
}

/// Heartbeat kinds.
pub(crate) const PING: u8 = 0;
pub(crate) const PONG: u8 = 1;
/// `kind u8 ‖ id u64`.
pub(crate) const HEARTBEAT_LEN: usize = 9;

pub(crate) fn parse_heartbeat(p: &[u8]) -> Option<(u8, u64)> {
    let b: &[u8; HEARTBEAT_LEN] = p.try_into().ok()?;
    (b[0] <= PONG).then(|| (b[0], u64::from_be_bytes(b[1..].try_into().unwrap_or_default())))
}

pub(crate) fn write_heartbeat(kind: u8, id: u64, out: &mut [u8]) {
    out[0] = kind;
    out[1..9].copy_from_slice(&id.to_be_bytes());
}

/// Longest reason string carried by Disconnect and Error.
pub const MAX_REASON_LEN: usize = 1024;

/// `code u16 ‖ reason length u16 ‖ reason (UTF-8)`: Disconnect and Error bodies.
pub(crate) fn encode_code_reason(code: u16, reason: &str) -> Vec<u8> {
    let reason = truncate_utf8(reason, MAX_REASON_LEN);
    let mut out = Vec::with_capacity(4 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

pub(crate) fn parse_code_reason(p: &[u8]) -> Option<(u16, String)> {
    let code = u16::from_be_bytes(p.get(..2)?.try_into().ok()?);
    let len = u16::from_be_bytes(p.get(2..4)?.try_into().ok()?) as usize;
    let reason = p.get(4..)?;
    if reason.len() != len || len > MAX_REASON_LEN {
        return None;
    }
    Some((code, String::from(core::str::from_utf8(reason).ok()?)))
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Handshake stages: which flight a Handshake (client) or HandshakeAck
/// (server) frame carries.
pub(crate) const STAGE_CLIENT_HELLO: u8 = 0;
pub(crate) const STAGE_SERVER_FLIGHT: u8 = 1;
pub(crate) const STAGE_CLIENT_FLIGHT: u8 = 2;
/// A server's Retry message (one whole message in one frame).
pub(crate) const STAGE_RETRY: u8 = 3;
/// A server's Busy message (one whole message in one frame): the hello
/// was not taken, try again later.
pub(crate) const STAGE_BUSY: u8 = 4;
/// `stage u8 ‖ offset u32 ‖ ack u32`, then (stage `00` only)
/// `token length u8 ‖ token`, then the flight's bytes from `offset`.
/// `ack` counts the bytes of the peer's flight received in order.
pub(crate) const HANDSHAKE_HEADER_LEN: usize = 9;

/// A parsed handshake frame payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HandshakeChunk<'a> {
    pub(crate) stage: u8,
    pub(crate) offset: u32,
    pub(crate) ack: u32,
    /// The Retry token a stage-`00` frame carries (SPEC.md 3.2), empty if
    /// none (and always for other stages).
    pub(crate) token: &'a [u8],
    pub(crate) data: &'a [u8],
}

impl<'a> HandshakeChunk<'a> {
    pub(crate) fn parse(p: &'a [u8]) -> Option<Self> {
        let (h, rest) = p.split_first_chunk::<HANDSHAKE_HEADER_LEN>()?;
        let stage = h[0];
        let (token, data) = match stage {
            STAGE_CLIENT_HELLO => {
                let (&n, rest) = rest.split_first()?;
                (rest.get(..usize::from(n))?, &rest[usize::from(n)..])
            }
            _ => (&[][..], rest),
        };
        (stage <= STAGE_BUSY).then(|| HandshakeChunk {
            stage,
            offset: u32::from_be_bytes([h[1], h[2], h[3], h[4]]),
            ack: u32::from_be_bytes([h[5], h[6], h[7], h[8]]),
            token,
            data,
        })
    }

    /// The length of the header [`HandshakeChunk::write_header`] writes.
    pub(crate) fn header_len(stage: u8, token: &[u8]) -> usize {
        HANDSHAKE_HEADER_LEN + if stage == STAGE_CLIENT_HELLO { 1 + token.len() } else { 0 }
    }

    /// Appends the header to `out`; `token` (at most 255 bytes) is written
    /// only for stage `00`.
    pub(crate) fn write_header(stage: u8, offset: u32, ack: u32, token: &[u8], out: &mut Vec<u8>) {
        out.push(stage);
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&ack.to_be_bytes());
        if stage == STAGE_CLIENT_HELLO {
            let token = &token[..token.len().min(255)];
            out.push(token.len() as u8);
            out.extend_from_slice(token);
        }
    }
}

/// Path challenge and response: 8 random bytes.
pub(crate) const PATH_DATA_LEN: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_header_rules() {
        let mut b = [0u8; DATA_HEADER_LEN];
        let h = |kind, id, correlation| DataHeader { kind, id, correlation, order: 9, ack_now: false, with_ack: false };
        h(KIND_RESPONSE, 7, 3).write(&mut b);
        assert_eq!(DataHeader::parse(&b), Some(h(KIND_RESPONSE, 7, 3)));
        h(KIND_RESPONSE, 7, 0).write(&mut b);
        assert_eq!(DataHeader::parse(&b), None, "a response names its request");
        h(KIND_REQUEST, 7, 1).write(&mut b);
        assert_eq!(DataHeader::parse(&b), None, "a request is no response");
        h(KIND_MESSAGE, 0, 0).write(&mut b);
        assert_eq!(DataHeader::parse(&b), None, "id 0 is never used");
        h(7, 1, 0).write(&mut b);
        assert_eq!(DataHeader::parse(&b), None, "no kind 7");
        for kind in [KIND_ITEM, KIND_UNSUBSCRIBE, KIND_END] {
            h(kind, 1, 0).write(&mut b);
            assert_eq!(DataHeader::parse(&b), None, "kind {kind} names its subscription");
            h(kind, 1, 5).write(&mut b);
            assert_eq!(DataHeader::parse(&b), Some(h(kind, 1, 5)));
        }
        h(KIND_SUBSCRIBE, 1, 5).write(&mut b);
        assert_eq!(DataHeader::parse(&b), None, "a subscribe names nothing");
        let now = DataHeader { ack_now: true, ..h(KIND_REQUEST, 7, 0) };
        now.write(&mut b);
        assert_eq!(b[0], KIND_REQUEST | KIND_ACK_NOW);
        assert_eq!(DataHeader::parse(&b), Some(now), "the hint is not part of the kind");
        let carrying = DataHeader { with_ack: true, ..h(KIND_RESPONSE, 7, 3) };
        carrying.write(&mut b);
        assert_eq!(b[0], KIND_RESPONSE | KIND_WITH_ACK);
        assert_eq!(DataHeader::parse(&b), Some(carrying), "an attached ACK is not part of the kind");
        h(0x20 | KIND_REQUEST, 7, 0).write(&mut b);
        assert_eq!(DataHeader::parse(&b), None, "bits 3-5 of the kind byte are not used");
        assert_eq!(DataHeader::parse(&b[..24]), None);
        let mut f = [0u8; FRAGMENT_HEADER_LEN];
        write_fragment(1200, 70_000, &mut f);
        assert_eq!(parse_fragment(&f), Some((1200, 70_000)));
        assert_eq!(parse_fragment(&f[..7]), None);
    }

    #[test]
    fn code_reason_round_trip_and_limits() {
        let e = encode_code_reason(0x1234, "bad wallet");
        assert_eq!(parse_code_reason(&e), Some((0x1234, String::from("bad wallet"))));
        assert_eq!(parse_code_reason(&e[..e.len() - 1]), None);
        let long = "é".repeat(MAX_REASON_LEN);
        let e = encode_code_reason(1, &long);
        let (_, r) = parse_code_reason(&e).unwrap();
        assert!(r.len() <= MAX_REASON_LEN && r.chars().all(|c| c == 'é'));
        assert_eq!(parse_code_reason(&[0, 1, 0, 2, 0xff, 0xfe]), None, "reason must be UTF-8");
    }

    #[test]
    fn heartbeat_and_stage() {
        let mut b = [0u8; HEARTBEAT_LEN];
        write_heartbeat(PONG, 99, &mut b);
        assert_eq!(parse_heartbeat(&b), Some((PONG, 99)));
        b[0] = 2;
        assert_eq!(parse_heartbeat(&b), None);
        assert_eq!(parse_heartbeat(&b[..8]), None);
        let mut h = Vec::new();
        HandshakeChunk::write_header(STAGE_CLIENT_FLIGHT, 1000, 77, b"ignored", &mut h);
        assert_eq!(h.len(), HandshakeChunk::header_len(STAGE_CLIENT_FLIGHT, b"ignored"));
        h.extend_from_slice(&[0, 0]);
        let c = HandshakeChunk::parse(&h).unwrap();
        assert_eq!(
            (c.stage, c.offset, c.ack, c.token, c.data),
            (STAGE_CLIENT_FLIGHT, 1000, 77, &[][..], &[0u8, 0][..])
        );
        h[0] = 5;
        assert_eq!(HandshakeChunk::parse(&h), None);
        assert_eq!(HandshakeChunk::parse(&h[..8]), None);

        // Stage 00 carries its token between the header and the data.
        let mut h = Vec::new();
        HandshakeChunk::write_header(STAGE_CLIENT_HELLO, 0, 0, b"tok", &mut h);
        assert_eq!(h.len(), HandshakeChunk::header_len(STAGE_CLIENT_HELLO, b"tok"));
        h.push(9);
        let c = HandshakeChunk::parse(&h).unwrap();
        assert_eq!((c.token, c.data), (&b"tok"[..], &[9u8][..]));
        // A token length past the end is malformed.
        assert_eq!(HandshakeChunk::parse(&h[..12]), None);
        assert_eq!(HandshakeChunk::parse(&h[..9]), None);
    }
}
