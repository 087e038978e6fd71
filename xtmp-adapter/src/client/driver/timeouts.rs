//! Request timeouts, kept by the driver: one timer for every request
//! instead of a runtime timer per call.

use super::*;

impl Driver {
    /// Times the request `id` out at `t`.
    pub(super) fn expire_at(&mut self, t: Instant, id: MessageId) {
        if self.expiries.len() > 2 * self.pending.len() + 32 {
            // Mostly answered requests: keep the live ones only.
            let pending = &self.pending;
            self.expiries.retain(|(t, id)| pending.get(id).is_some_and(|p| p.deadline == Some(*t)));
        }
        // Requests come with the same timeout, so this is nearly always
        // the end (not for one sent again after a reconnection).
        let at = self.expiries.partition_point(|(u, _)| *u <= t);
        self.expiries.insert(at, (t, id));
    }

    /// The earliest deadline of a request: sent, or waiting to be.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        let sent = self.expiries.front().map(|(t, _)| *t);
        let waiting = self.deferred.iter().filter_map(command_deadline);
        let held = self.resend.iter().chain(&self.orphans).filter_map(|p| p.deadline);
        waiting.chain(held).chain(sent).min()
    }

    /// Fails the requests whose deadline passed by `now` with
    /// [`Error::Timeout`] (an answer that comes later is dropped).
    pub(super) fn expire_requests(&mut self, now: Instant) {
        while let Some(&(t, id)) = self.expiries.front().filter(|(t, _)| *t <= now) {
            self.expiries.pop_front();
            if self.pending.get(&id).is_some_and(|p| p.deadline == Some(t))
                && let Some(p) = self.pending.remove(&id)
            {
                p.reply.fail(Error::Timeout);
            }
        }
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if self.deferred.iter().any(|c| due(command_deadline(c))) {
            for c in std::mem::take(&mut self.deferred) {
                if due(command_deadline(&c)) {
                    fail_command(c, Error::Timeout);
                } else {
                    self.deferred.push_back(c);
                }
            }
        }
        for held in [&mut self.resend, &mut self.orphans] {
            for p in std::mem::take(held) {
                if due(p.deadline) {
                    p.reply.fail(Error::Timeout);
                } else {
                    held.push(p);
                }
            }
        }
    }
}
