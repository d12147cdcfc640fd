//! The wall clock that stamps messages: the CPU's time-stamp counter,
//! anchored to the system clock.
//!
//! Every publish reads the wall clock once, for the message's timestamp and
//! its id's milliseconds. `SystemTime::now` is a vDSO `clock_gettime` here
//! (≈ 23 ns on the benchmark host, plus ≈ 10 ns to turn the `SystemTime`
//! into Unix milliseconds): a third of an inline publish. Reading the
//! time-stamp counter through [`quanta`] (which checks the counter is
//! invariant and calibrates it once, or falls back to the OS's monotonic
//! clock) costs ≈ 9.5 ns and gives nanoseconds directly.
//!
//! The counter gives monotonic nanoseconds since the clock was made; the
//! wall time is those plus an offset taken from the system clock. The
//! offset is taken again at most every [`RESYNC_NS`], by whichever reader
//! first sees it stale, so the reading follows the system clock's steps and
//! slews (NTP) within one interval. A reading is never earlier than a
//! system clock reading taken before it, and at most about one
//! `clock_gettime` call (≈ 10 ns) later than one taken after it, but for the
//! counter's calibration error over one interval (here about 0.5 ppm, so
//! under a nanosecond; measured: 1–2 µs of drift over 3 s without resyncs).
//! Like `SystemTime::now` it is not monotonic: a resync can move it back by
//! that error, or by a step of the system clock. Message ids stay strictly
//! increasing regardless (their sequence is an atomic `fetch_max`).
//!
//! Under loom the module reads `SystemTime::now` directly: the models are
//! about the atomics of the bus, not time.

#[cfg(not(topicbus_loom))]
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(not(topicbus_loom))]
use crate::sync::statics::AtomicU64;

/// How long an offset stays in use before a reader takes it again: 1 ms.
/// A resync costs two counter reads and one `SystemTime::now` (≈ 45 ns), so
/// at this period it is 0.005 % of one core.
#[cfg(not(topicbus_loom))]
const RESYNC_NS: u64 = 1_000_000;

/// A resync whose two counter reads are further apart than this was
/// interrupted (preempted, or a page fault): its pairing of counter and
/// system time is not trusted, and the old offset stays.
#[cfg(not(topicbus_loom))]
const MAX_PAIR_NS: u64 = 20_000;

/// The process's wall clock.
#[cfg(not(topicbus_loom))]
struct WallClock {
    clock: quanta::Clock,
    /// The counter's raw value when the clock was made: monotonic
    /// nanoseconds are measured from here.
    base: u64,
    /// Unix nanoseconds at `base` (wall time minus monotonic time).
    offset: AtomicU64,
    /// The monotonic nanoseconds of the last resync.
    synced: AtomicU64,
}

#[cfg(not(topicbus_loom))]
static WALL: OnceLock<WallClock> = OnceLock::new();

#[cfg(not(topicbus_loom))]
impl WallClock {
    fn new() -> Self {
        let clock = quanta::Clock::new();
        let base = clock.raw();
        let wall = WallClock {
            clock,
            base,
            offset: AtomicU64::new(system_nanos()),
            synced: AtomicU64::new(0),
        };
        // The first pairing may have been interrupted too: keep trying
        // (bounded) for a tight one; the one above stands if none is.
        for _ in 0..8 {
            if wall.resync() {
                break;
            }
        }
        wall
    }

    /// Monotonic nanoseconds since `base`.
    #[inline]
    fn mono(&self) -> u64 {
        self.clock.delta_as_nanos(self.base, self.clock.raw())
    }

    /// Pairs the counter with the system clock; false when the pairing was
    /// interrupted (the offset is then left alone).
    #[cold]
    #[inline(never)]
    fn resync(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let before = self.mono();
        let system = system_nanos();
        let after = self.mono();
        if after.saturating_sub(before) > MAX_PAIR_NS {
            // Try again on the next read rather than on every read of the
            // next interval: `synced` is moved only on success, so the
            // next reader retries.
            return false;
        }
        // The system clock was read after `before`: pairing it with
        // `before` puts our readings at most one `clock_gettime` call
        // (≈ 10 ns) ahead of the system clock, never behind it (but for the
        // counter's drift over one interval). So a message stamped after a
        // system clock reading is never stamped earlier than that reading.
        // (The midpoint put 1 % of readings up to 56 ns behind one taken
        // just before them.)
        // Relaxed: each of the two is a complete value on its own; a reader
        // that pairs a new offset with an old `synced` (or the reverse) at
        // worst resyncs once more or once less.
        self.offset.store(system.wrapping_sub(before), Relaxed);
        self.synced.store(before, Relaxed);
        true
    }

    #[inline]
    fn nanos(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let mono = self.mono();
        if mono.saturating_sub(self.synced.load(Relaxed)) > RESYNC_NS {
            self.resync();
        }
        mono.wrapping_add(self.offset.load(Relaxed))
    }
}

/// The system clock in Unix nanoseconds (0 before 1970, saturating after
/// 2554).
fn system_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The wall clock now, in nanoseconds since the Unix epoch.
#[inline]
pub(crate) fn unix_nanos() -> u64 {
    #[cfg(not(topicbus_loom))]
    {
        WALL.get_or_init(WallClock::new).nanos()
    }
    #[cfg(topicbus_loom)]
    {
        system_nanos()
    }
}

/// A reading of [`unix_nanos`] as a `SystemTime`.
#[inline]
pub(crate) fn from_unix_nanos(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// The wall clock now.
#[inline]
pub(crate) fn now() -> SystemTime {
    from_unix_nanos(unix_nanos())
}

#[cfg(all(test, not(topicbus_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    /// Far more than the error this clock has (≈ 10 ns ahead of the system
    /// clock at most, the counter's drift over one interval behind), far
    /// less than what a broken offset, scale, unit or pairing gives.
    const SLACK: u64 = 1_000;

    /// A system clock reading, ours, another system clock reading: ours
    /// lies between the two (within [`SLACK`]), across many resyncs.
    fn assert_brackets(clock: &WallClock, reads: usize) {
        let mut last = 0;
        let mut moved = 0;
        for _ in 0..reads {
            let before = system_nanos();
            let ours = clock.nanos();
            let after = system_nanos();
            assert!(
                ours + SLACK >= before && ours <= after + SLACK,
                "{before} <= {ours} <= {after} (± {SLACK} ns)"
            );
            moved += u64::from(ours > last);
            last = ours;
        }
        // It moves (it is not one frozen reading).
        assert!(moved as usize > reads / 2, "moved {moved} times in {reads}");
    }

    #[test]
    fn readings_lie_between_system_clock_readings() {
        assert_brackets(&WallClock::new(), 200_000);
        assert_brackets(WALL.get_or_init(WallClock::new), 1_000);
    }

    #[test]
    fn a_step_of_the_system_clock_is_followed_within_one_resync() {
        let clock = WallClock::new();
        // As if the system clock had just been set one second ahead (the
        // offset is one second behind it).
        clock.offset.fetch_sub(1_000_000_000, Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let before = system_nanos();
            let ours = clock.nanos();
            if ours + SLACK >= before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still {} ns behind the system clock",
                before - ours
            );
        }
        assert_brackets(&clock, 10_000);
    }

    #[test]
    fn a_reading_converts_to_the_same_system_time() {
        let n = unix_nanos();
        assert_eq!(
            from_unix_nanos(n)
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_nanos()),
            Some(u128::from(n))
        );
        assert_eq!(from_unix_nanos(0), UNIX_EPOCH);
    }
}
