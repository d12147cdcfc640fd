//! # topicbus
//!
//! A lock-free, in-process, topic-routed message bus.
//!
//! ## Motivation
//!
//! An application's event bus sits on the hot path: every event is routed to
//! every interested subscriber, while subscribers come and go. topicbus routes
//! hierarchical topics (`orders.eu.created`) to wildcard patterns
//! (`orders.*.created`, `orders.#`) through a compiled matcher held in a
//! copy-on-write table, so publishers never take a lock and subscription
//! churn never stalls them.
//!
//! ## What is here today
//!
//! - [`Topic`] and [`Pattern`]: parsed once, valid by construction, with a
//!   typed [`TopicError`] that names the broken rule and its byte position.
//! - [`matcher::Matcher`]: the compiled matcher, usable on its own. Exact
//!   patterns in a hash map, wildcards in a trie walked as an NFA; results
//!   deduplicated per value; no allocation per match; persistent, so a change
//!   copies O(depth) nodes instead of rebuilding.
//! - [`registry::Registry`]: the copy-on-write subscription table (arc-swap)
//!   the bus routes through; lock-free reads, serialised writers.
//! - [`Message`]: the immutable envelope the bus delivers: a time-ordered,
//!   process-monotonic [`MessageId`], headers, [`Priority`], expiry,
//!   correlation and causation ids, addressing, attempt; built with a
//!   [`MessageBuilder`]; [`PayloadSize`] limits byte-like payloads.
//!
//! - [`Bus`]: the bus itself. Callback subscribers run on a fixed worker
//!   pool, inline ones on the publisher's thread, pull [`Receiver`]s wait for
//!   you; each subscription has a bounded mailbox with three priority lanes
//!   and an [`OverflowPolicy`]; queue groups, pause/resume, confirmed and
//!   batch publishing, graceful [`shutdown`](Bus::shutdown) with a
//!   [`ShutdownReport`]; every delivery ends in exactly one counted
//!   [`Outcome`] ([`SubStats`], [`BusStats`]).
//! - Reliability, on one timer thread driven by an injectable [`Clock`]
//!   ([`ManualClock`] in tests): [`RetryPolicy`] (exponential backoff with
//!   full jitter, a transient/[`Permanent`] classifier, strict or reordering
//!   [`RetryOrder`]; a waiting retry never occupies a worker), a bounded
//!   dead-letter queue ([`DeadLetters`]: query by pattern, subscription,
//!   error kind, reason and time; replay; a [`DeadLetterSink`]), per
//!   subscription [`CircuitBreaker`]s, [`Dedup`] windows, TTL at enqueue
//!   and dequeue, request-reply ([`Bus::request`], [`Message::reply`]),
//!   addressing / header / predicate filters that run before enqueue,
//!   delayed delivery ([`MessageBuilder::delay`]) and lifecycle hooks
//!   ([`BusBuilder::on_publish`] and the others), isolated and free when
//!   unset.
//!
//! ## The guide
//!
//! [`docs`] teaches the model, page by page: [concepts](docs::concepts)
//! (topics and patterns, delivery and ordering, backpressure, reliability,
//! shutdown), [patterns](docs::patterns) (worker queues, request-reply,
//! fan-out, cache invalidation, the outbox),
//! [performance](docs::performance), [limitations](docs::limitations) and
//! [internals](docs::internals) (the data flow, the invariants and the
//! loom models that check them).
//!
//! ## Quick start
//!
//! ```
//! use std::time::Duration;
//! use topicbus::{Bus, Message};
//!
//! let bus = Bus::<String>::builder().workers(2).build()?;
//! let billing = bus.subscribe("orders.*.created", |m: &Message<String>| {
//!     println!("bill {}", m.payload());
//! })?;
//! let audit = bus.receiver("orders.#")?;
//! assert_eq!(bus.publish("orders.eu.created", "order 17".into())?.matched, 2);
//! assert_eq!(audit.recv()?.payload(), "order 17");
//! assert!(bus.shutdown(Duration::from_secs(5))?.is_clean());
//! assert_eq!(billing.stats().handled, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The matcher on its own:
//!
//! ```
//! use topicbus::matcher::Matcher;
//! use topicbus::{Pattern, Topic};
//!
//! let mut routes = Matcher::new();
//! routes.insert(&Pattern::parse("orders.*.created")?, "billing");
//! routes.insert(&Pattern::parse("orders.#")?, "audit");
//! routes.insert(&Pattern::parse("#.failed")?, "alerts");
//!
//! let topic = Topic::parse("orders.eu.created")?;
//! let mut hit = routes.matches(&topic).to_vec();
//! hit.sort();
//! assert_eq!(hit, ["audit", "billing"]);
//! # Ok::<(), topicbus::TopicError>(())
//! ```
//!
//! ## Semantics
//!
//! - Levels are separated by `.`; each is non-empty; matching is byte-exact
//!   and case-sensitive; default limits are 255 bytes and 32 levels.
//! - In patterns, `*` matches exactly one level and `#` zero or more levels;
//!   both only as whole levels, `#` any number of times, anywhere.
//! - [`Pattern::matches`] is the reference definition; the compiled matcher is
//!   tested against it with property tests and a differential fuzz target.
//!
//! ## Features
//!
//! | feature | enables |
//! |---|---|
//! | `serde` | `Serialize` / `Deserialize` for [`Topic`] and [`Pattern`] (deserializing validates) |
//! | `bytes` | [`PayloadSize`] for `bytes::Bytes` |
//! | `async` | `futures_core::Stream` for [`Receiver`] |

#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]
// One exception, `sync/ring.rs` (the lanes' queue): benchmarked, with a
// `// SAFETY:` note per block, loom models and AddressSanitizer runs.
#![deny(unsafe_code)]

#[cfg(any(feature = "redis", feature = "postgres"))]
mod adapter;
mod bus;
pub mod docs;
#[cfg(feature = "envelope")]
pub mod envelope;
mod mailbox;
pub mod matcher;
mod message;
// Items are `pub` so that `loom-tests` can reach them through `__loom`.
mod metrics;
#[allow(unreachable_pub)]
mod pool;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod registry;
mod reliability;
#[cfg(any(feature = "redis", feature = "postgres"))]
pub mod route;
mod sync;
mod time;
mod topic;

pub use crate::bus::{
    BatchError, BatchReceipt, BoxError, BuildError, Bus, BusBuilder, BusStats, Confirmation,
    Counts, DeadLettered, DeadLetters, DelayedStats, Delivery, DropReason, Drops, GroupStrategy,
    HandlerResult, Health, HealthCheck, HealthIssue, HealthStatus, HealthThresholds, IntoTopic,
    Outcome, PatternArg, PublishError, Receipt, Receiver, RecvError, RecvTimeoutError, ReplayError,
    ReplaySummary, Replier, RequestError, ShutdownError, ShutdownReport, SubStats, SubscribeError,
    SubscribeOptions, Subscription, TryRecvError, WeakBus, DEFAULT_BATCH, DEFAULT_CAPACITY,
    DEFAULT_DROP_TIMEOUT, MAX_CAPACITY,
};
pub use crate::mailbox::lanes::OverflowPolicy;
pub use crate::message::{
    check_payload_size, HeaderText, Headers, Message, MessageBuilder, MessageId,
    ParseMessageIdError, PayloadSize, PayloadTooLarge, Priority, DEFAULT_MAX_PAYLOAD,
};
pub use crate::metrics::{Latency, Metrics, SubscriptionLatency, DEFAULT_LATENCY_SAMPLING};
pub use crate::pool::WorkerStates;
pub use crate::registry::SubscriptionId;
pub use crate::reliability::{
    BreakerWindow, CircuitBreaker, CircuitState, Classifier, Clock, DeadLetter, DeadLetterId,
    DeadLetterQuery, DeadLetterReason, DeadLetterSink, DeadLetterStats, Dedup, ErrorKind, Failure,
    ManualClock, Permanent, RetryOrder, RetryPolicy, SystemClock, WhenOpen,
};
pub use crate::topic::{
    Level, Limits, Pattern, Topic, TopicError, TopicErrorKind, HASH, SEPARATOR, STAR,
};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Internals reachable by the loom models in `loom-tests/`, and only there.
#[cfg(topicbus_loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::bus::request::{Inbox, Waiter};
    pub use crate::bus::stats::{Entered, Publishes};
    pub use crate::mailbox::lanes::{Lanes, OverflowPolicy, Push};
    pub use crate::mailbox::state::{AfterRun, OnPush, State};
    pub use crate::pool::{Pool, Task, TaskRef};
    pub use crate::reliability::timer::{Fire, Job, Timer};
    pub use crate::sync::Ring;
}
