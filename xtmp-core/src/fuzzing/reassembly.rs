//! Fragment reassembly against a naive model, and the receiver's memory
//! bound under arbitrary fragments.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::time::Duration;

use arbitrary::Unstructured;
use bytes::Bytes;

use super::fixture::start;
use crate::reliability::delivery::{Accepted, CLASSES, Inbound, Limits, Refused, WithBody};
use crate::reliability::reassembly::{FragmentError, MAX_RUNS, Reassembly, Stored};

/// The first byte picks the mode: one message against a byte-map model, or
/// a receiver's whole inbound side under a memory budget.
pub fn reassembly(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut u = Unstructured::new(rest);
    if mode & 1 == 0 {
        let _ = one_message(&mut u);
    } else {
        let _ = inbound(&mut u);
    }
}

/// The byte at `pos` of message `id` (so any delivered body can be checked).
fn pattern(id: u64, pos: u32) -> u8 {
    (id as u32).wrapping_mul(31).wrapping_add(pos.wrapping_mul(7)).wrapping_add(pos >> 8) as u8
}

/// What the byte-map model says one insertion does.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    OutOfBounds,
    TooManyRuns,
    Duplicate,
    Progress,
    Complete,
}

/// A naive model: a map from offset to byte. The head is the run from 0;
/// runs are the other maximal stretches of held bytes.
struct Model {
    total: u32,
    bytes: BTreeMap<u32, u8>,
}

impl Model {
    fn held(&self, at: u32) -> bool {
        self.bytes.contains_key(&at)
    }

    fn head_len(&self) -> u32 {
        let mut n = 0;
        for &k in self.bytes.keys() {
            if k != n {
                break;
            }
            n += 1;
        }
        n
    }

    fn runs(&self) -> usize {
        let head = self.head_len();
        let mut runs = 0;
        let mut prev: Option<u32> = None;
        for &k in self.bytes.range(head..).map(|(k, _)| k) {
            if prev.is_none_or(|p| p + 1 != k) {
                runs += 1;
            }
            prev = Some(k);
        }
        runs
    }

    /// Stores the bytes of `data` at `offset` that are not held yet, gap by
    /// gap in offset order; a gap that would open a run beyond
    /// [`MAX_RUNS`] stops it (gaps before it stay stored).
    fn insert(&mut self, offset: u32, data: &[u8]) -> Expect {
        let end = u64::from(offset) + data.len() as u64;
        if data.is_empty() || end > u64::from(self.total) {
            return Expect::OutOfBounds;
        }
        let mut progress = false;
        let mut at = offset;
        while u64::from(at) < end {
            if self.held(at) {
                at += 1;
                continue;
            }
            let mut gap_end = at;
            while u64::from(gap_end) < end && !self.held(gap_end) {
                gap_end += 1;
            }
            let opens_run = at != self.head_len() && !(at > 0 && self.held(at - 1)) && !self.held(gap_end);
            if opens_run && self.runs() >= MAX_RUNS {
                return Expect::TooManyRuns;
            }
            for p in at..gap_end {
                self.bytes.insert(p, data[(p - offset) as usize]);
            }
            progress = true;
            at = gap_end;
        }
        match () {
            _ if !progress => Expect::Duplicate,
            _ if self.head_len() == self.total => Expect::Complete,
            _ => Expect::Progress,
        }
    }
}

fn one_message(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let total = match u.int_in_range(0..=3u8)? {
        0 => u.int_in_range(1..=64u32)?,
        1 => u.int_in_range(1..=4096u32)?,
        2 => u.int_in_range(1..=1_000_000u32)?,
        _ => u32::MAX - u.int_in_range(0..=16u32)?,
    };
    let mut real = Reassembly::new(total);
    let mut model = Model { total, bytes: BTreeMap::new() };
    while !u.is_empty() {
        let offset = match u.int_in_range(0..=2u8)? {
            0 => u.int_in_range(0..=total.min(4096))?,
            1 => total.saturating_sub(u.int_in_range(0..=64u32)?),
            _ => u.arbitrary()?,
        };
        let len = u.int_in_range(0..=300usize)?;
        // Mostly the message's own bytes; sometimes different bytes over
        // held ones (the first writer wins).
        let conflicting = u.ratio(1, 8)?;
        let data: Vec<u8> =
            (0..len as u32).map(|i| pattern(1, offset.wrapping_add(i)) ^ if conflicting { 0xA5 } else { 0 }).collect();
        let expected = model.insert(offset, &data);
        let got = real.insert(offset, &data);
        match (got, &expected) {
            (Err(FragmentError::OutOfBounds), Expect::OutOfBounds)
            | (Err(FragmentError::TooManyRuns), Expect::TooManyRuns)
            | (Ok(Stored::Duplicate), Expect::Duplicate)
            | (Ok(Stored::Progress), Expect::Progress) => {}
            (Ok(Stored::Complete(body)), Expect::Complete) => {
                let want: Vec<u8> = model.bytes.values().copied().collect();
                assert_eq!(&body[..], &want[..], "reassembled bytes differ from the model's");
                return Ok(());
            }
            (got, _) => panic!("insert({offset}, {len} bytes) of {total}: got {got:?}, model says {expected:?}"),
        }
        let stored = model.bytes.len();
        assert!(real.held() <= 2 * stored + 64, "{} bytes held for {stored} stored", real.held());
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Item {
    id: u64,
    class: usize,
    order: u64,
    body: Bytes,
}

impl WithBody for Item {
    fn with_body(self, body: Bytes) -> Self {
        Item { body, ..self }
    }
}

/// The receiver's inbound side: fragments and whole messages of several
/// messages in three classes, forwards and expiry, under a small budget.
fn inbound(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let limits = Limits { max_message: u.int_in_range(1024..=65_536u32)?, max_held: u.int_in_range(0..=32_768usize)? };
    let timeout = Duration::from_secs(10);
    let mut rx: Inbound<Item> = Inbound::new();
    let mut now = start();
    // Per class: the next order number the model expects to be delivered.
    let mut next = [1u64; CLASSES];
    let mut delivered_unordered: BTreeSet<u64> = BTreeSet::new();
    let mut totals: BTreeMap<u64, u32> = BTreeMap::new();
    let mut delivered: Vec<Item> = Vec::new();
    while !u.is_empty() {
        let id = u.int_in_range(1..=12u64)?;
        let class = (id % CLASSES as u64) as usize;
        // Reliable messages carry order = id / 3 + 1 within their class.
        let order = if id > 9 { 0 } else { id / CLASSES as u64 + 1 };
        let total = *totals.entry(id).or_insert(match u.int_in_range(0..=4u8)? {
            0 => u32::MAX,
            1 => limits.max_message.saturating_add(1),
            _ => u.int_in_range(1..=limits.max_message)?,
        });
        let template = Item { id, class, order, body: Bytes::new() };
        let deliver = |item: Item| delivered.push(item);
        let result = match u.int_in_range(0..=9u8)? {
            0 => {
                let size = (total as usize).min(4096);
                let body: Bytes = (0..size as u32).map(|i| pattern(id, i)).collect();
                rx.on_message(class, order, Item { body, ..template }, size, &limits, deliver)
            }
            1 => {
                let floor = u.int_in_range(1..=6u64)?;
                rx.on_forward(class, floor, deliver);
                Ok(Accepted::New)
            }
            2 => {
                now = now.saturating_add(Duration::from_millis(u.int_in_range(0..=15_000u64)?));
                rx.expire(now, timeout);
                Ok(Accepted::New)
            }
            _ => {
                let offset = u.int_in_range(0..=total.saturating_sub(1))?;
                let len = u.int_in_range(1..=2048u32)?.min(total - offset);
                let data: Vec<u8> = (0..len).map(|i| pattern(id, offset + i)).collect();
                rx.on_fragment((class, order, id), template, (offset, total), &data, now, &limits, deliver)
            }
        };
        if let Err(Refused::Violation(_)) = result {
            assert!(total > limits.max_message, "violation without cause");
        }
        for item in delivered.drain(..) {
            let want: Vec<u8> = (0..item.body.len() as u32).map(|i| pattern(item.id, i)).collect();
            assert_eq!(&item.body[..], &want[..], "message {} delivered with other bytes", item.id);
            if item.order == 0 {
                delivered_unordered.insert(item.id);
                continue;
            }
            let c = item.class;
            // In order, at most once; a Forward may skip ahead.
            assert!(item.order >= next[c], "class {c}: order {} delivered after {}", item.order, next[c]);
            next[c] = item.order + 1;
        }
        // Beyond the budget only by the next message in line of each class
        // (capacities: up to twice its length while it grows).
        let bound = limits.max_held + CLASSES * (2 * limits.max_message as usize + 64);
        assert!(rx.held() <= bound, "{} bytes held, bound {bound}", rx.held());
    }
    Ok(())
}
