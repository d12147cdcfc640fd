//! Reliability: the timer and its clock, retry policies, dead letters,
//! circuit breakers and deduplication windows.
//!
//! The bus wires these together (see [`Bus`](crate::Bus)); the types here
//! are their settings and their records.

mod breaker;
mod clock;
mod dead_letter;
mod dedup;
mod retry;
// `pub` items so that `loom-tests` can reach the timer through `__loom`.
#[allow(unreachable_pub)]
pub(crate) mod timer;

pub(crate) use breaker::{Admit, Breaker, Change};
pub use breaker::{BreakerWindow, CircuitBreaker, CircuitState, WhenOpen};
pub use clock::{Clock, ManualClock, SystemClock};
pub use dead_letter::{
    DeadLetter, DeadLetterId, DeadLetterQuery, DeadLetterReason, DeadLetterSink, DeadLetterStats,
    Failure,
};
pub(crate) use dead_letter::{DeadLetterQueue, NewLetter};
pub use dedup::Dedup;
pub(crate) use dedup::Window;
pub use retry::{Classifier, ErrorKind, Permanent, RetryOrder, RetryPolicy};
