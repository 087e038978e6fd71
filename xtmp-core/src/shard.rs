//! Spreading a server's sessions over several endpoints (one per core),
//! routed by session id (SPEC.md section 3.8.1).
//!
//! A server that runs `n` [`Endpoint`](crate::endpoint::Endpoint)s gives
//! each a [`Shard`] in its [`ServerConfig`](crate::handshake::ServerConfig).
//! An endpoint then picks only session ids whose shard number,
//! `(id mod 2^32) mod n`, is its own, and every frame of a session names
//! that id in its header: a ClientHello names the client's id, and the
//! server's id is chosen in the same shard as the client's, so a session's
//! frames all carry ids of one shard from its first byte to its last.
//! [`Shard::route`] reads that number from a frame's first 16 bytes; it is
//! a fixed-offset load and a remainder, which a kernel socket filter
//! (`SO_ATTACH_REUSEPORT_CBPF`) can compute as well.

use crate::wire::HEADER_LEN;

/// One of `count` endpoints of a server: the session ids it picks are those
/// with `(id mod 2^32) mod count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Where the session id sits in a frame header (SPEC.md 1.1).
const SESSION_ID: usize = 8;

impl Shard {
    /// The only shard of a server that does not shard: every id is its own.
    pub const SINGLE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`; `None` unless `index < count`.
    pub const fn new(index: u32, count: u32) -> Option<Shard> {
        if index < count { Some(Shard { index, count }) } else { None }
    }

    /// This shard's number.
    pub const fn index(&self) -> u32 {
        self.index
    }

    /// How many shards the server has.
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The shard of session id `id` among `count` (`count` is at least 1).
    pub const fn of(id: u64, count: u32) -> u32 {
        (id as u32) % if count == 0 { 1 } else { count }
    }

    /// Whether `id` is one of this shard's ids.
    pub const fn owns(&self, id: u64) -> bool {
        Shard::of(id, self.count) == self.index
    }

    /// The shard among `count` that owns the frame starting at `bytes`
    /// (a datagram, or the start of a stream connection): the shard of the
    /// session id in its header. `None` until 16 bytes are there. Bytes
    /// that are not a frame get a shard all the same; its endpoint drops
    /// them.
    pub fn route(bytes: &[u8], count: u32) -> Option<u32> {
        let raw = bytes.get(SESSION_ID..SESSION_ID + 8)?;
        let mut id = [0u8; 8];
        id.copy_from_slice(raw);
        Some(Shard::of(u64::from_be_bytes(id), count))
    }

    /// A session id of this shard made from the random `r`: `r` with its
    /// low 32 bits moved down into the shard's class. `None` when that
    /// would leave 32 bits (a draw near `2^32` for a count that does not
    /// divide it) or give the reserved id 0: draw again.
    pub(crate) fn id_from(&self, r: u64) -> Option<u64> {
        let low = r as u32;
        let class = low - low % self.count;
        let low = class.checked_add(self.index)?;
        let id = (r & !0xFFFF_FFFF) | u64::from(low);
        (id != 0).then_some(id)
    }
}

impl Default for Shard {
    fn default() -> Shard {
        Shard::SINGLE
    }
}

// A frame header is longer than what `route` reads.
const _: () = assert!(HEADER_LEN >= SESSION_ID + 8);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Frame, Header, MessageType};

    #[test]
    fn ids_fall_in_their_shard_and_route_back_to_it() {
        for count in [1u32, 2, 3, 7, 64, 1000] {
            for index in [0, count / 2, count - 1] {
                let shard = Shard::new(index, count).unwrap();
                for r in [0u64, 1, 0xFFFF_FFFF, 0x1_0000_0000, u64::MAX, 0x0123_4567_89AB_CDEF, 0xDEAD_BEEF_FFFF_FFF0] {
                    let Some(id) = shard.id_from(r) else {
                        // Only a draw at the top of a class that does not fit, or id 0.
                        let low = r as u32;
                        assert!(u64::from(low - low % count) + u64::from(index) > u64::from(u32::MAX) || r >> 32 == 0);
                        continue;
                    };
                    assert!(shard.owns(id), "{id:#x} in shard {index}/{count}");
                    assert_eq!(id >> 32, r >> 32, "the high half is kept");
                    let mut frame = [0u8; HEADER_LEN];
                    Frame::encode(&Header::new(MessageType::HEARTBEAT, id, 9), &[], &mut frame).unwrap();
                    assert_eq!(Shard::route(&frame, count), Some(index));
                    assert_eq!(Shard::route(&frame[..16], count), Some(index));
                }
            }
        }
    }

    #[test]
    fn a_single_shard_keeps_every_id_and_short_input_has_no_route() {
        for r in [1u64, 2, 0xFFFF_FFFF, u64::MAX] {
            assert_eq!(Shard::SINGLE.id_from(r), Some(r));
        }
        assert_eq!(Shard::SINGLE.id_from(0), None);
        assert_eq!(Shard::route(&[0u8; 15], 4), None);
        assert_eq!(Shard::new(4, 4), None);
        assert_eq!(Shard::new(0, 0), None);
    }
}
