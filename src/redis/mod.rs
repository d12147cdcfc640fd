//! Redis adapters (feature `redis`): a pub/sub bridge between buses in
//! different processes ([`RedisBridge`], at most once) and Streams with
//! consumer groups ([`RedisStreams`], at least once).
//!
//! Everything crossing Redis travels in a signed [`envelope`](crate::envelope).
//! The adapters use the synchronous [`redis`](https://docs.rs/redis) client
//! on threads they own: no async runtime, and a slow or absent Redis never
//! blocks a publisher (see [`RedisBridge`]). The outbound writer, which
//! only sends pipelines it packs itself, has a connection of its own with a
//! reply reader that splits `:n` and `$len` replies off a buffer (the
//! generic reply parser was 18 % of its CPU); it authenticates and selects
//! the database from the same URL. TLS (`rediss://`) is not supported: the
//! crate builds the `redis` client without its TLS features.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use topicbus::envelope::{Codec, KeyRing};
//! use topicbus::redis::{RedisBridge, RedisStreams};
//! use topicbus::Bus;
//!
//! let bus = Bus::<String>::builder().build()?;
//! let codec = Codec::signed(KeyRing::new("2026-11", std::env::var("TOPICBUS_KEY")?)?);
//! // Each order is handled by one member of "billing", in whichever process.
//! let orders = RedisStreams::builder("redis://127.0.0.1/", codec.clone(), "orders")
//!     .export("orders.#")
//!     .consume("billing")
//!     .start(&bus)?;
//! // Cache invalidations reach every connected process.
//! let caches = RedisBridge::builder("redis://127.0.0.1/", codec)
//!     .export("cache.invalidate.#")
//!     .import("cache.invalidate.#")
//!     .start(&bus)?;
//! // ... publish and subscribe on `bus` as usual ...
//! caches.shutdown(Duration::from_secs(5));
//! orders.shutdown(Duration::from_secs(5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Blocking
//!
//! [`BridgeBuilder::start`], [`StreamsBuilder::start`],
//! [`RedisBridge::shutdown`] and [`RedisStreams::shutdown`] block (the
//! starts until their threads run, the shutdowns until they flushed or
//! timed out), as does dropping an adapter (a one-second flush); do not
//! call them from inside an async task. Everything else reads counters.

mod bridge;
mod common;
mod glob;
mod streams;
mod wire;

pub(crate) use crate::adapter::{Backoff, Stop};

pub use bridge::{BridgeBuilder, BridgeReport, BridgeStats, RedisBridge};
pub use streams::{RedisStreams, StreamStats, StreamsBuilder};

/// The header an imported message carries: the node that published it.
/// The bridge never exports a message carrying it, so messages do not
/// bounce between nodes.
pub use crate::envelope::ORIGIN_HEADER;

/// Why an adapter could not start.
///
/// # Examples
///
/// ```
/// use topicbus::envelope::Codec;
/// use topicbus::redis::{AdapterError, RedisBridge};
/// use topicbus::Bus;
/// let bus = Bus::<String>::builder().workers(1).build()?;
/// let err = RedisBridge::builder("not a url", Codec::unsigned()).start(&bus).unwrap_err();
/// assert!(matches!(err, AdapterError::Redis(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The connection settings were refused by the client (a bad URL).
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// An import or export pattern is not a valid pattern.
    #[error("pattern: {0}")]
    Pattern(#[from] crate::TopicError),
    /// The local side refused: the bus is shut down.
    #[error("subscribe: {0}")]
    Subscribe(#[from] crate::SubscribeError),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
    /// An adapter thread could not be started.
    #[error("spawn: {0}")]
    Spawn(#[from] std::io::Error),
}
