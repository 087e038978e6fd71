//! The driver's subscriptions: opening one on the current session (or,
//! while that session is ending, on the next), the publisher's answer, and
//! items handed to the subscription's stream.

use super::*;

impl Driver {
    pub(super) fn open_subscription(&mut self, key: u64) {
        let Some(sub) = self.subs.get_mut(&key) else { return };
        match self.session.subscribe(sub.message_type, sub.filter.body(), SendOptions::default()) {
            Ok(id) => {
                sub.current = Some(id);
                self.by_id.insert(id, key);
            }
            Err(SendError::Closed) if !self.closing && self.backoff.is_some() && self.ready.is_none() => {
                // The session is ending and the driver has not seen it
                // end yet: the next session opens it (as for a send).
            }
            Err(e) => {
                if let Some(sub) = self.subs.remove(&key) {
                    end_sub(sub, Error::Send(e));
                }
            }
        }
    }

    pub(super) fn on_subscription_answer(&mut self, key: u64, m: Message) {
        let refused = m.error();
        let Some(sub) = self.subs.get_mut(&key) else { return };
        match (refused, sub.opening.take()) {
            (None, Some((reply, subscription))) => {
                if let Err(Ok(s)) = reply.send(Ok(subscription)) {
                    // The caller stopped waiting: leave at once.
                    drop(s);
                }
            }
            (None, None) => {}
            (Some((code, reason)), opening) => {
                if let Some(id) = sub.current.take() {
                    self.by_id.remove(&id);
                }
                if let Some(sub) = self.subs.remove(&key) {
                    match opening {
                        Some((reply, _)) => drop(reply.send(Err(Error::Remote { code, reason }))),
                        None => drop(sub.sink.unbounded_send(SubEvent::End(SubscriptionEnd::Refused { code, reason }))),
                    }
                }
            }
        }
    }

    pub(super) fn on_item(&mut self, id: SubscriptionId, m: Message) {
        // Whether it counts against the subscription's window: the session
        // then holds its credit until it is released.
        let credited = m.reliable || self.session.subscription_windowed(id);
        let Some(sub) = self.by_id.get(&id).and_then(|k| self.subs.get_mut(k)) else {
            // Left already: release what it holds.
            if credited {
                self.session.release_item(id);
            }
            return;
        };
        if !credited && sub.best_effort_unread >= self.config.subscription_queue {
            self.shared.update_stats(|s| s.items_dropped += 1);
            return;
        }
        let len = m.body.len();
        if sub.sink.unbounded_send(SubEvent::Item(m, credited)).is_err() {
            if credited {
                self.session.release_item(id);
            }
            return;
        }
        if credited {
            sub.credited_unread += 1;
        } else {
            sub.best_effort_unread += 1;
        }
        sub.bytes_unread += len;
        self.shared.update_stats(|s| {
            s.items_unread += 1;
            s.item_bytes_unread += len as u64;
        });
    }
}
