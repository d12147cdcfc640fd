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
//! system clock reading taken before it, and later than one taken after it
//! by at most the width of the pairing behind it (the tightest of up to
//! four tries: ≈ 10 ns when the thread is not interrupted), but for the
//! counter's calibration error over one interval (here about 0.5 ppm, so
//! under a nanosecond; measured: 1–2 µs of drift over 3 s without resyncs).
//! Like `SystemTime::now` it is not monotonic: a resync can move it back by
//! that error or by a narrower pairing's difference, or by a step of the
//! system clock. Message ids stay strictly increasing regardless (their
//! sequence is an atomic `fetch_max`). `quanta` uses the counter whenever
//! the CPU reports it invariant; on a machine whose kernel distrusts it
//! anyway (a clocksource other than `tsc`), readings taken on different
//! cores can also differ by the cores' counter skew.
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

/// A pairing of counter and system clock this tight is taken at once; a
/// wider one (the thread was preempted, or the build is slow, as under a
/// sanitizer) is tried again, up to [`PAIR_TRIES`] times, and the tightest
/// is kept.
#[cfg(not(topicbus_loom))]
const TIGHT_NS: u64 = 1_000;

/// Pairings tried per resync at most.
#[cfg(not(topicbus_loom))]
const PAIR_TRIES: usize = 4;

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
    /// The width of the last pairing: how far ahead of the system clock
    /// the offset can put a reading.
    width: AtomicU64,
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
            offset: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            width: AtomicU64::new(0),
        };
        wall.resync();
        wall
    }

    /// Monotonic nanoseconds since `base`.
    #[inline]
    fn mono(&self) -> u64 {
        self.clock.delta_as_nanos(self.base, self.clock.raw())
    }

    /// Pairs the counter with the system clock: the tightest of up to
    /// [`PAIR_TRIES`] pairings.
    #[cold]
    #[inline(never)]
    fn resync(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut best = (u64::MAX, 0, 0);
        for _ in 0..PAIR_TRIES {
            let before = self.mono();
            let system = system_nanos();
            let width = self.mono().saturating_sub(before);
            if width < best.0 {
                best = (width, before, system);
            }
            if width <= TIGHT_NS {
                break;
            }
        }
        let (width, before, system) = best;
        // The system clock was read after `before`: pairing it with
        // `before` puts a reading ahead of the system clock by at most the
        // pairing's width (≈ 10 ns when not interrupted), never behind it
        // (but for the counter's drift over one interval). So a message
        // stamped after a system clock reading is never stamped earlier
        // than that reading. (The midpoint put 1 % of readings up to 56 ns
        // behind one taken just before them.)
        // Relaxed: each value is complete on its own; a reader that pairs a
        // new offset with an old `synced` (or the reverse) at worst
        // resyncs once more or once less.
        self.offset.store(system.wrapping_sub(before), Relaxed);
        self.width.store(width, Relaxed);
        self.synced.store(before, Relaxed);
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

    /// More than the counter drifts from the system clock within one resync
    /// interval (well under a nanosecond on a quiet machine, but 1.0 µs was
    /// seen once under AddressSanitizer on the 2-core CI VM, where the guest's
    /// system clock is slewed against the counter), far less than what a
    /// broken offset, scale or unit gives (milliseconds and more).
    const DRIFT: u64 = 5_000;

    /// A system clock reading, ours, another system clock reading: ours is
    /// not before the first, and not after the second by more than the
    /// width of the pairing behind it; across many resyncs.
    fn assert_brackets(clock: &WallClock, reads: usize) {
        let mut last = 0;
        let mut moved = 0;
        for _ in 0..reads {
            let before = system_nanos();
            let ours = clock.nanos();
            let width = clock.width.load(Relaxed);
            let after = system_nanos();
            assert!(
                ours + DRIFT >= before && ours <= after + width + DRIFT,
                "{before} <= {ours} <= {after} + {width} (± {DRIFT} ns)"
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
    }

    #[test]
    fn the_process_clock_reads_the_system_time() {
        // Other tests resync the shared clock meanwhile, so the width read
        // here may belong to another pairing: a loose bound, which still
        // catches a wrong unit, scale or offset.
        const LOOSE: u64 = 1_000_000;
        for _ in 0..1_000 {
            let before = system_nanos();
            let ours = unix_nanos();
            let after = system_nanos();
            assert!(ours + LOOSE >= before && ours <= after + LOOSE);
        }
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
            if ours + DRIFT >= before {
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
