//! An endpoint's counters.

/// An endpoint's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Frames dropped before reaching a session.
    pub dropped: u64,
    /// Complete ClientHellos refused by the cheap checks.
    pub hellos_refused: u64,
    /// Retry messages sent.
    pub retries_sent: u64,
    /// Tokens that failed validation.
    pub tokens_rejected: u64,
    /// Sessions created.
    pub sessions_created: u64,
    /// Hello frames dropped because of the half-open or session limits.
    pub hellos_shed: u64,
    /// Hello frames not taken because their address prefix had
    /// [`EndpointConfig::max_half_open_per_prefix`](super::EndpointConfig::max_half_open_per_prefix) handshakes half open
    /// (counted apart from `hellos_shed`).
    pub hellos_shed_per_prefix: u64,
    /// Unproven hellos forgotten to make room for newer ones
    /// ([`EndpointConfig::max_unproven_hellos`](super::EndpointConfig::max_unproven_hellos)).
    pub hellos_evicted: u64,
    /// Busy frames sent (a hello not taken, SPEC.md 3.2).
    pub busy_sent: u64,
    /// Busy frames not sent: over the rate, or for a datagram shorter than
    /// the Busy frame.
    pub busy_withheld: u64,
    /// New remotes (a rebinding, a reconnection) accepted as paths of a
    /// known session after a frame from them authenticated.
    pub migrations: u64,
    /// Stream connections closed before joining a session: a malformed
    /// frame, or no handshake within the hello timeout.
    pub streams_reset: u64,
    /// Reset frames sent for sessions the endpoint does not hold.
    pub resets_sent: u64,
    /// Reset frames not sent: over the rate, or the datagram that called
    /// for one was not longer than a Reset (SPEC.md 3.7.1).
    pub resets_withheld: u64,
}

impl core::ops::AddAssign for EndpointStats {
    /// Adds `other`'s counters to these: the totals of a server of several
    /// endpoints ([`crate::shard`]).
    fn add_assign(&mut self, other: EndpointStats) {
        self.dropped += other.dropped;
        self.hellos_refused += other.hellos_refused;
        self.retries_sent += other.retries_sent;
        self.tokens_rejected += other.tokens_rejected;
        self.sessions_created += other.sessions_created;
        self.hellos_shed += other.hellos_shed;
        self.hellos_shed_per_prefix += other.hellos_shed_per_prefix;
        self.hellos_evicted += other.hellos_evicted;
        self.busy_sent += other.busy_sent;
        self.busy_withheld += other.busy_withheld;
        self.migrations += other.migrations;
        self.streams_reset += other.streams_reset;
        self.resets_sent += other.resets_sent;
        self.resets_withheld += other.resets_withheld;
    }
}
