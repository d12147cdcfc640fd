//! The bus's typed errors.

use crate::message::PayloadTooLarge;
use crate::topic::TopicError;

use super::stats::Receipt;

/// Why a publish failed.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, PublishError};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// assert!(matches!(bus.publish("orders.*", 1), Err(PublishError::Topic(_))));
/// bus.shutdown(std::time::Duration::from_secs(1))?;
/// assert!(matches!(bus.publish("orders.new", 1), Err(PublishError::Closed)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic is invalid (or beyond the bus's limits); nothing was
    /// published. Fix the topic.
    #[error("invalid topic: {0}")]
    Topic(#[from] TopicError),
    /// The payload is larger than the bus's limit; nothing was published.
    /// Send a reference (a key, a URL) instead of the bytes, or raise the
    /// limit with `BusBuilder::max_payload`.
    #[error(transparent)]
    PayloadTooLarge(#[from] PayloadTooLarge),
    /// The bus is shutting down or shut down; nothing was published.
    #[error("the bus is shut down; nothing was published")]
    Closed,
    /// At least one subscription with overflow policy `Reject` had a full
    /// mailbox. The message went to every other matched subscription (see
    /// the receipt); retry later or slow down.
    #[error(
        "{} of {} matched subscription(s) rejected the message (full mailbox, policy Reject)",
        receipt.rejected,
        receipt.matched
    )]
    Rejected {
        /// What the publish did elsewhere.
        receipt: Receipt,
    },
    /// A reply to a message that names no `reply_to`; nothing was
    /// published.
    #[error("the message has no reply_to: nothing to reply to")]
    NoReplyTo,
}

/// Why a subscribe failed.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, SubscribeError, SubscribeOptions};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let err = bus.receiver("orders.a*").unwrap_err();
/// assert!(matches!(err, SubscribeError::Pattern(_)));
/// let err = bus.receiver_with(SubscribeOptions::new()).unwrap_err();
/// assert!(matches!(err, SubscribeError::NoPatterns));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// A pattern is invalid (or beyond the bus's limits). Fix the pattern.
    #[error("invalid pattern: {0}")]
    Pattern(#[from] TopicError),
    /// The options name no pattern: add one with `SubscribeOptions::pattern`.
    #[error("no pattern given: add one with SubscribeOptions::pattern")]
    NoPatterns,
    /// The bus is shutting down or shut down.
    #[error("the bus is shut down")]
    Closed,
    /// A queue group already exists with another dispatch strategy; every
    /// member must use the same one.
    #[error("queue group {group:?} already uses another strategy")]
    GroupStrategy {
        /// The group's name.
        group: String,
    },
    /// The options do not fit the subscription kind (for example concurrency
    /// on an inline or pull subscription).
    #[error("invalid options: {0}")]
    Options(&'static str),
}

/// Why [`Bus::shutdown`](crate::Bus::shutdown) could not run.
///
/// # Examples
///
/// ```
/// use topicbus::ShutdownError;
/// assert!(ShutdownError::InHandler.to_string().contains("handler"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// Called from a handler running on this bus: it cannot wait for
    /// itself. Signal another thread to shut down instead.
    #[error("shutdown called from a handler of the same bus; call it from another thread")]
    InHandler,
}

/// Why a blocking receive returned no message.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, RecvError};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let rx = bus.receiver("a")?;
/// bus.shutdown(std::time::Duration::from_secs(1))?;
/// assert_eq!(rx.recv().unwrap_err(), RecvError::Closed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The bus shut down and every queued message was received.
    #[error("the bus is shut down and the receiver is empty")]
    Closed,
}

/// Why a non-blocking receive returned no message.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, TryRecvError};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let rx = bus.receiver("a")?;
/// assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing queued right now.
    #[error("no message queued")]
    Empty,
    /// The bus shut down and every queued message was received.
    #[error("the bus is shut down and the receiver is empty")]
    Closed,
}

/// Why a receive with a timeout returned no message.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, RecvTimeoutError};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let rx = bus.receiver("a")?;
/// let err = rx.recv_timeout(Duration::from_millis(1)).unwrap_err();
/// assert_eq!(err, RecvTimeoutError::Timeout);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// Nothing arrived in time.
    #[error("no message arrived in time")]
    Timeout,
    /// The bus shut down and every queued message was received.
    #[error("the bus is shut down and the receiver is empty")]
    Closed,
}

/// Why the bus could not be built.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, BuildError};
/// let err = Bus::<u32>::builder().capacity(0).build().unwrap_err();
/// assert!(matches!(err, BuildError::Config(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// A worker thread could not be started.
    #[error("could not start a worker thread: {0}")]
    Spawn(#[from] std::io::Error),
}
