//! The guide: how topicbus works and how to use it well, page by page
//! (the reference is the rest of the crate).
//!
//! - [`concepts`]: topics and patterns, delivery and ordering, backpressure
//!   and overflow, reliability, shutdown.
//! - [`patterns`]: worker queues, request-reply, fan-out, cache
//!   invalidation, the outbox.
//! - [`performance`]: what it costs, how it was measured, how to tune it.
//! - [`limitations`]: what topicbus does not do, and what to use instead.
//! - [`internals`]: the data flow, the invariants, and the model checks
//!   that hold them.
//!
//! Running it in production: `docs/OPERATIONS.md` in the repository.

#[doc = include_str!("concepts.md")]
pub mod concepts {}

#[doc = include_str!("patterns.md")]
pub mod patterns {}

#[doc = include_str!("performance.md")]
pub mod performance {}

#[doc = include_str!("limitations.md")]
pub mod limitations {}

#[doc = include_str!("internals.md")]
pub mod internals {}
