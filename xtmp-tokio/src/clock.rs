//! Time and randomness handed to the core: a monotonic clock from tokio's,
//! and a ChaCha20 generator seeded from the operating system.

use std::io;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::time::Instant;

/// Maps tokio's clock onto the core's [`Instant`] (nanoseconds since the
/// clock was made, plus one second so that zero never appears).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: tokio::time::Instant,
}

const OFFSET: Duration = Duration::from_secs(1);

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock { origin: tokio::time::Instant::now() }
    }

    pub(crate) fn now(&self) -> Instant {
        let elapsed = self.origin.elapsed() + OFFSET;
        Instant::from_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The tokio instant of a core deadline.
    pub(crate) fn deadline(&self, t: Instant) -> tokio::time::Instant {
        self.origin + Duration::from_nanos(t.as_nanos()).saturating_sub(OFFSET)
    }
}

/// A CSPRNG for the core, seeded from the operating system.
pub(crate) fn rng() -> io::Result<ChaCha20Rng> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(ChaCha20Rng::from_seed(seed))
}
