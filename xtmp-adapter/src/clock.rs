//! Time and randomness handed to the core: a monotonic clock, and a
//! ChaCha20 generator seeded from the operating system.

use std::io;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Maps the system's monotonic clock onto the core's
/// [`xtmp_core::time::Instant`] (nanoseconds since the clock was made,
/// plus one second so that zero never appears).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

const OFFSET: Duration = Duration::from_secs(1);

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Clock {
        Clock { origin: Instant::now() }
    }

    /// The core's "now".
    pub fn now(&self) -> xtmp_core::time::Instant {
        self.at(Instant::now())
    }

    /// The core's instant for the system instant `t` (a driver reads the
    /// system clock once per turn and hands the core that reading).
    pub fn at(&self, t: Instant) -> xtmp_core::time::Instant {
        let elapsed = t.saturating_duration_since(self.origin) + OFFSET;
        xtmp_core::time::Instant::from_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The system instant of a core deadline.
    pub fn deadline(&self, t: xtmp_core::time::Instant) -> Instant {
        self.origin + Duration::from_nanos(t.as_nanos()).saturating_sub(OFFSET)
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// A CSPRNG for the core, seeded from the operating system.
pub fn rng() -> io::Result<ChaCha20Rng> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(ChaCha20Rng::from_seed(seed))
}
