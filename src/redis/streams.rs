//! Redis Streams with consumer groups: at-least-once queue groups across
//! processes.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use ::redis::{Connection, RedisResult, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::common::{add, common_setters, serve_inbound, Common, Io, Running, Shared, Sink, FIELD};
use super::AdapterError;
use crate::adapter::Window;
use crate::bus::Tracked;
use crate::envelope::Codec;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::{Bus, WeakBus};

/// Counters of one [`RedisStreams`], read without stopping it.
///
/// # Examples
///
/// ```
/// let s = topicbus::redis::StreamStats::default();
/// assert_eq!(s.exported, s.added + s.encode_failed + s.unsent);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Local messages taken from the outbox to add to the stream.
    pub exported: u64,
    /// Of those, added (`XADD` answered with an entry id).
    pub added: u64,
    /// Not added: the payload does not serialize or is over the limit.
    pub encode_failed: u64,
    /// Not added: left in the outbox at shutdown's deadline.
    pub unsent: u64,
    /// Dropped by the outbox's overflow policy while Redis was slow or down.
    pub outbox_dropped: u64,
    /// Waiting in the outbox now.
    pub outbox_depth: usize,
    /// Entries read by this consumer (new, its own pending, or claimed).
    pub read: u64,
    /// Of those, published on the local bus.
    pub delivered: u64,
    /// Entries acknowledged (`XACK`) after every local subscription settled
    /// them (or after they went to the dead-letter stream).
    pub acked: u64,
    /// Entries whose local outcomes did not all come within the handler
    /// timeout: left pending, delivered again after the visibility timeout.
    pub unconfirmed: u64,
    /// Seen before by this consumer (within the window): acknowledged, not
    /// delivered again.
    pub duplicates: u64,
    /// Entries taken over from consumers idle past the visibility timeout.
    pub claimed: u64,
    /// Entries moved to the dead-letter stream: delivered too often,
    /// forged or malformed.
    pub dead_lettered: u64,
    /// Rejected envelopes (unsigned, unknown key, bad signature).
    pub forged: u64,
    /// Entries that are not valid envelopes.
    pub malformed: u64,
    /// Connections lost and made again.
    pub reconnects: u64,
    /// The producer connection is up (or there is nothing to export).
    pub producer_connected: bool,
    /// The consumer connection is up (or this node does not consume).
    pub consumer_connected: bool,
}

/// Settings of a [`RedisStreams`]; from [`RedisStreams::builder`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use topicbus::envelope::Codec;
/// use topicbus::redis::RedisStreams;
/// use topicbus::Bus;
/// let bus = Bus::<String>::builder().build()?;
/// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders")
///     .export("orders.#")
///     .consume("billing")
///     .consumer_name("billing-1")
///     .maxlen(5_000_000)
///     .visibility_timeout(Duration::from_secs(60))
///     .max_deliveries(3)
///     .start(&bus)?;
/// # drop(streams);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct StreamsBuilder {
    common: Common,
    stream: String,
    group: Option<String>,
    consumer: Option<String>,
    maxlen: usize,
    count: usize,
    block: Duration,
    visibility: Duration,
    max_deliveries: u32,
    handler_timeout: Duration,
}

impl StreamsBuilder {
    common_setters!("RedisStreams::builder(\"redis://127.0.0.1/\", Codec::unsigned(), \"orders\")");

    /// Consumes the stream as a member of consumer group `group` (created,
    /// from the stream's beginning, if it does not exist): each entry goes
    /// to one member of the group, is published on this node's bus, and is
    /// acknowledged once every local subscription settled it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<String>::builder().build()?;
    /// // Run this in every billing process: each entry is handled by one of them.
    /// let _s = bus.subscribe("orders.#", |m: &Message<String>| println!("bill {}", m.payload()))?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders")
    ///     .consume("billing")
    ///     .start(&bus)?;
    /// # drop(streams);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn consume(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// This consumer's name within the group (default: the node id). Give
    /// a restarted process its old name and it takes back its pending
    /// entries at once instead of after the visibility timeout.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// // A stable name per process (here from the environment): after a restart
    /// // it takes back its own pending entries at once.
    /// let name = std::env::var("HOSTNAME").unwrap_or_else(|_| "billing-1".into());
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders")
    ///     .consume("billing")
    ///     .consumer_name(name)
    ///     .start(&bus)?;
    /// # drop(streams);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// The stream is trimmed to about this many entries (`MAXLEN ~`,
    /// default 1,000,000). Entries trimmed before any consumer read them
    /// are lost: size it for the longest outage of every consumer.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// // 2,000 entries/s and consumers that may be down for an hour: keep ~7.2M.
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders")
    ///     .export("orders.#")
    ///     .maxlen(2_000 * 3_600)
    ///     .start(&bus)?;
    /// # drop(streams);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn maxlen(mut self, entries: usize) -> Self {
        self.maxlen = entries;
        self
    }

    /// Entries read per `XREADGROUP` (default 256).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "clicks")
    ///     .consume("analytics")
    ///     .count(1_024) // fewer round trips for small, fast messages
    ///     .start(&bus)?;
    /// # drop(streams);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn count(mut self, entries: usize) -> Self {
        self.count = entries;
        self
    }

    /// How long one read waits for new entries (default 100 ms; also how
    /// quickly shutdown is noticed).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders")
    ///     .consume("billing")
    ///     .block(Duration::from_millis(500)) // must stay under the io timeout (2 s)
    ///     .start(&bus)?;
    /// # drop(streams);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn block(mut self, wait: Duration) -> Self {
        self.block = wait;
        self
    }

    /// Entries pending this long with another consumer are claimed by this
    /// one (default 30 s): at least twice the longest handler run.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// // Handlers take up to 2 minutes: claim a silent consumer's entries after 5.
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "renders")
    ///     .consume("renderers")
    ///     .visibility_timeout(Duration::from_secs(300))
    ///     .handler_timeout(Duration::from_secs(150))
    ///     .start(&bus)?;
    /// # drop(streams);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility = timeout;
        self
    }

    /// An entry delivered more often than this goes to the dead-letter
    /// stream instead (default 5).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders")
    ///     .consume("billing")
    ///     .max_deliveries(3) // then to topicbus:stream:orders:dead
    ///     .start(&bus)?;
    /// println!("dead-lettered: {}", streams.stats().dead_lettered);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// How long the consumer waits for the local outcomes of a batch before
    /// it leaves the rest pending (default 10 s).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders")
    ///     .consume("billing")
    ///     .handler_timeout(Duration::from_secs(30)) // past it, entries stay pending
    ///     .start(&bus)?;
    /// println!("left pending: {}", streams.stats().unconfirmed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// Starts the producer (when there are exports) and the consumer (when
    /// [`consume`](Self::consume) was set) threads. Blocks only to spawn
    /// them; Redis being down is not an error.
    ///
    /// # Errors
    ///
    /// As [`BridgeBuilder::start`](super::BridgeBuilder::start).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::{AdapterError, RedisStreams};
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders")
    ///     .export("orders.#")
    ///     .consume("billing")
    ///     .start(&bus)?; // Redis down is not an error: see stats()
    /// let zero = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders").count(0).start(&bus);
    /// assert!(matches!(zero, Err(AdapterError::Invalid(_))));
    /// # drop(streams);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start<T>(self, bus: &Bus<T>) -> Result<RedisStreams<T>, AdapterError>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        if self.count == 0 || self.maxlen == 0 || self.max_deliveries == 0 {
            return Err(AdapterError::Invalid(
                "count, maxlen and max deliveries must be positive",
            ));
        }
        if self.common.io_timeout <= self.block || self.block.is_zero() || self.visibility.is_zero()
        {
            return Err(AdapterError::Invalid(
                "block must be positive and shorter than the io timeout; visibility positive",
            ));
        }
        let key = format!("topicbus:stream:{}", self.stream);
        let sink = Sink::Stream {
            key: key.clone(),
            maxlen: self.maxlen,
        };
        let (mut running, io) =
            self.common
                .launch(bus, sink, "redis streams", ["producer", "consumer"])?;
        running.name = format!("redis streams {key}");
        match self.group {
            None => running
                .shared
                .counts
                .inbound_connected
                .store(true, Ordering::Relaxed),
            Some(group) => {
                let consumer = Consumer {
                    bus: bus.downgrade(),
                    io,
                    shared: Arc::clone(&running.shared),
                    codec: self.common.codec,
                    dead: format!("{key}:dead"),
                    key,
                    consumer: self
                        .consumer
                        .unwrap_or_else(|| running.shared.node.to_string()),
                    group,
                    count: self.count,
                    block: self.block,
                    visibility: self.visibility,
                    max_deliveries: self.max_deliveries,
                    handler_timeout: self.handler_timeout,
                    seen: Window::new(self.common.dedup),
                    last_janitor: None,
                };
                running.spawn("topicbus-stream-in", move || consumer.run())?;
            }
        }
        Ok(RedisStreams {
            running,
            report: None,
            _payload: PhantomData,
        })
    }
}

/// Redis Streams with consumer groups: **at-least-once** delivery across
/// processes. Producers add local messages matching the export patterns to
/// a stream (`XADD` with `MAXLEN ~`, pipelined from a bounded outbox);
/// consumers in a group each take a share of the entries
/// (`XREADGROUP`), publish them on their local bus, and acknowledge
/// (`XACK`) each only after every local subscription settled it. An entry
/// a consumer took and never acknowledged (it crashed, or its handlers ran
/// past the handler timeout) is taken over by another member once idle
/// past the visibility timeout (`XAUTOCLAIM`); one delivered more than the
/// maximum number of times goes to the dead-letter stream
/// (`topicbus:stream:<name>:dead`, with the reason), as do forged and
/// malformed entries. A restarted consumer with the same name first reads
/// its own pending entries. Each consumer drops duplicates it has seen by
/// message id; handlers should still be idempotent (a message can reach
/// two consumers when one is slow past the visibility timeout).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use topicbus::envelope::{Codec, KeyRing};
/// use topicbus::redis::RedisStreams;
/// use topicbus::{Bus, Message};
///
/// let bus = Bus::<String>::builder().build()?;
/// let codec = Codec::signed(KeyRing::new("2026-11", std::env::var("TOPICBUS_KEY")?)?);
/// // Every process runs this; each order is handled by one of them.
/// let streams = RedisStreams::builder("redis://127.0.0.1/", codec, "orders")
///     .export("orders.#")
///     .consume("billing")
///     .start(&bus)?;
/// let _s = bus.subscribe("orders.#", |m: &Message<String>| println!("bill {}", m.payload()))?;
/// bus.publish("orders.eu.created", "order 1".to_string())?;
/// streams.shutdown(Duration::from_secs(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisStreams<T: Send + Sync + 'static> {
    running: Running<T>,
    report: Option<StreamStats>,
    _payload: PhantomData<fn(T) -> T>,
}

impl<T: Send + Sync + 'static> fmt::Debug for RedisStreams<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreams")
            .field("node", &self.running.shared.node)
            .field("stats", &self.stats())
            .finish()
    }
}

impl RedisStreams<()> {
    /// Settings for the stream `stream` (key `topicbus:stream:<stream>`)
    /// on the Redis server at `url`, encoding with `codec`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().workers(1).build()?;
    /// // Neither exporting nor consuming yet: no thread, no connection.
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders").start(&bus)?;
    /// assert_eq!(streams.shutdown(Duration::from_secs(1)).unsent, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(
        url: impl Into<String>,
        codec: Codec,
        stream: impl Into<String>,
    ) -> StreamsBuilder {
        StreamsBuilder {
            common: Common::new(url.into(), codec),
            stream: stream.into(),
            group: None,
            consumer: None,
            maxlen: 1_000_000,
            count: 256,
            block: Duration::from_millis(100),
            visibility: Duration::from_secs(30),
            max_deliveries: 5,
            handler_timeout: Duration::from_secs(10),
        }
    }
}

impl<T: Send + Sync + 'static> RedisStreams<T> {
    /// This node's id.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().workers(1).build()?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders").node_id("worker-7").start(&bus)?;
    /// assert_eq!(streams.node_id(), "worker-7");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn node_id(&self) -> &str {
        &self.running.shared.node
    }

    /// The outbox as an [`Outlet`](crate::route::Outlet) for a
    /// [`Router`](crate::route::Router), when the adapter has one (export
    /// patterns, or [`routable`](StreamsBuilder::routable)). It is down from a failed
    /// write to Redis until one succeeds. Messages that came from another
    /// process ([`ORIGIN_HEADER`](crate::envelope::ORIGIN_HEADER)) are not
    /// sent, as for exports.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::route::Router;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders").routable().start(&bus)?;
    /// let router = Router::builder(&bus).to(streams.outlet().ok_or("not routable")?).local(false).build()?;
    /// router.publish("orders.created", "o-1".to_string())?; // XADD, not seen locally
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn outlet(&self) -> Option<crate::route::Outlet<T>> {
        self.running.outlet()
    }

    /// The counters now.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders").consume("billing").start(&bus)?;
    /// let s = streams.stats();
    /// println!("read {} acked {} claimed {} dead {}", s.read, s.acked, s.claimed, s.dead_lettered);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> StreamStats {
        let c = &self.running.shared.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (outbox_dropped, outbox_depth) = self.running.outbox_numbers();
        StreamStats {
            exported: get(&c.exported),
            added: get(&c.published),
            encode_failed: get(&c.encode_failed),
            unsent: get(&c.unsent),
            outbox_dropped,
            outbox_depth,
            read: get(&c.received),
            delivered: get(&c.imported),
            acked: get(&c.acked),
            unconfirmed: get(&c.unconfirmed),
            duplicates: get(&c.duplicates),
            claimed: get(&c.claimed),
            dead_lettered: get(&c.dead_lettered),
            forged: get(&c.forged),
            malformed: get(&c.malformed),
            reconnects: get(&c.reconnects),
            producer_connected: c.outbound_connected.load(Ordering::Relaxed),
            consumer_connected: c.inbound_connected.load(Ordering::Relaxed),
        }
    }

    /// Stops consuming (entries read and not yet settled stay pending, for
    /// this consumer's next start or another member), adds what the outbox
    /// holds until it is empty or `timeout` passes, joins the threads, and
    /// returns the final counters (`unsent` is what was left). Blocks: up
    /// to `timeout` for the outbox, and up to the handler timeout for a
    /// batch whose local outcomes are still coming in.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders")
    ///     .export("orders.#")
    ///     .consume("billing")
    ///     .start(&bus)?;
    /// bus.publish("orders.created", "o-1".to_string())?;
    /// let last = streams.shutdown(Duration::from_secs(5));
    /// assert_eq!(last.unsent, 0, "everything accepted reached Redis");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(mut self, timeout: Duration) -> StreamStats {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> StreamStats {
        if let Some(r) = self.report {
            return r;
        }
        self.running.stop(timeout);
        let stats = self.stats();
        self.report = Some(stats);
        stats
    }
}

impl<T: Send + Sync + 'static> Drop for RedisStreams<T> {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(1));
    }
}

/// What became of one entry.
enum Fate {
    /// Settled (or nothing to do): acknowledge.
    Ack,
    /// Published locally: acknowledge when its outcomes are in.
    Wait(Tracked),
    /// Move to the dead-letter stream with this reason, then acknowledge.
    Dead(&'static str),
    /// Leave pending (the bus refused it: shutting down).
    Leave,
}

/// The consuming side: one connection, reads, the janitor.
struct Consumer<T: Send + Sync + 'static> {
    bus: WeakBus<T>,
    io: Io,
    shared: Arc<Shared>,
    codec: Codec,
    key: String,
    dead: String,
    group: String,
    consumer: String,
    count: usize,
    block: Duration,
    visibility: Duration,
    max_deliveries: u32,
    handler_timeout: Duration,
    seen: Window,
    last_janitor: Option<Instant>,
}

impl<T: DeserializeOwned + Send + Sync + 'static> Consumer<T> {
    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let backoff = self.io.backoff;
        serve_inbound(&shared, backoff, "consumer", || self.session());
    }

    /// One connection: make the group, read the own pending entries, then
    /// new ones, with the janitor every half visibility timeout.
    fn session(&mut self) -> RedisResult<()> {
        let mut con = self.io.connect()?;
        let created: RedisResult<()> = ::redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.key)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut con);
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return Err(e);
            }
        }
        self.shared
            .counts
            .inbound_connected
            .store(true, Ordering::Relaxed);
        // Own pending entries first (a restart, a lost connection), then new.
        let mut cursor = String::from("0");
        while !self.shared.stop.is_stopped() {
            if self
                .last_janitor
                .is_none_or(|t| t.elapsed() >= self.visibility / 2)
            {
                self.janitor(&mut con)?;
                self.last_janitor = Some(Instant::now());
            }
            let pending = cursor != ">";
            let mut read = ::redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(&self.group)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(self.count);
            if !pending {
                read.arg("BLOCK").arg(self.block.as_millis().max(1) as u64);
            }
            let reply: Option<StreamReadReply> = read
                .arg("STREAMS")
                .arg(&self.key)
                .arg(&cursor)
                .query(&mut con)?;
            let entries: Vec<StreamId> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            if pending {
                match entries.last() {
                    Some(last) => cursor = last.id.clone(),
                    None => cursor = String::from(">"),
                }
            }
            self.process(&mut con, entries)?;
        }
        Ok(())
    }

    /// Handles a batch: publish every entry, wait for the outcomes, then
    /// acknowledge the settled ones in one `XACK`.
    fn process(&mut self, con: &mut Connection, entries: Vec<StreamId>) -> RedisResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        add(&self.shared.counts.received, entries.len() as u64);
        let mut ack: Vec<String> = Vec::with_capacity(entries.len());
        let mut waiting: Vec<(String, Tracked)> = Vec::new();
        let mut dead: Vec<(StreamId, &'static str)> = Vec::new();
        for entry in entries {
            match self.fate(&entry) {
                Fate::Ack => ack.push(entry.id),
                Fate::Wait(t) => waiting.push((entry.id, t)),
                Fate::Dead(why) => dead.push((entry, why)),
                Fate::Leave => {}
            }
        }
        let deadline = Instant::now() + self.handler_timeout;
        for (id, tracked) in waiting {
            if tracked.wait(deadline).complete {
                ack.push(id);
            } else {
                add(&self.shared.counts.unconfirmed, 1);
            }
        }
        for (entry, why) in &dead {
            self.bury(con, &entry.id, entry.map.get(FIELD), why)?;
            ack.push(entry.id.clone());
        }
        self.ack(con, &ack)
    }

    fn fate(&mut self, entry: &StreamId) -> Fate {
        let c = &self.shared.counts;
        let Some(Value::BulkString(bytes)) = entry.map.get(FIELD) else {
            add(&c.malformed, 1);
            return Fate::Dead("malformed");
        };
        let decoded = match self.codec.decode::<T>(bytes) {
            Ok(d) => d,
            Err(e) if e.is_forgery() => {
                add(&c.forged, 1);
                return Fate::Dead("forged");
            }
            Err(_) => {
                add(&c.malformed, 1);
                return Fate::Dead("malformed");
            }
        };
        if !self.seen.insert(decoded.message.id()) {
            add(&c.duplicates, 1);
            return Fate::Ack;
        }
        let Some(bus) = self.bus.upgrade() else {
            return Fate::Leave;
        };
        let mut message = decoded.message;
        message.set_header(super::ORIGIN_HEADER, decoded.origin);
        match bus.publish_tracked(message) {
            Ok(t) => {
                add(&c.imported, 1);
                Fate::Wait(t)
            }
            Err(_) => Fate::Leave,
        }
    }

    fn ack(&self, con: &mut Connection, ids: &[String]) -> RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let n: u64 = ::redis::cmd("XACK")
            .arg(&self.key)
            .arg(&self.group)
            .arg(ids)
            .query(con)?;
        add(&self.shared.counts.acked, n);
        Ok(())
    }

    /// Adds an entry to the dead-letter stream with `why`.
    fn bury(
        &self,
        con: &mut Connection,
        id: &str,
        envelope: Option<&Value>,
        why: &str,
    ) -> RedisResult<()> {
        let empty = Value::BulkString(Vec::new());
        let _: String = ::redis::cmd("XADD")
            .arg(&self.dead)
            .arg("*")
            .arg("reason")
            .arg(why)
            .arg("entry")
            .arg(id)
            .arg("consumer")
            .arg(&self.consumer)
            .arg(FIELD)
            .arg(match envelope.unwrap_or(&empty) {
                Value::BulkString(b) => b.as_slice(),
                _ => &[],
            })
            .query(con)?;
        add(&self.shared.counts.dead_lettered, 1);
        Ok(())
    }

    /// Moves entries delivered too often to the dead-letter stream, then
    /// claims entries idle past the visibility timeout and handles them.
    fn janitor(&mut self, con: &mut Connection) -> RedisResult<()> {
        let idle = self.visibility.as_millis() as u64;
        let over: StreamPendingCountReply = ::redis::cmd("XPENDING")
            .arg(&self.key)
            .arg(&self.group)
            .arg("IDLE")
            .arg(idle)
            .arg("-")
            .arg("+")
            .arg(self.count)
            .query(con)?;
        let mut buried = Vec::new();
        for p in over.ids {
            if p.times_delivered as u64 >= u64::from(self.max_deliveries) {
                let entry: StreamRange = ::redis::cmd("XRANGE")
                    .arg(&self.key)
                    .arg(&p.id)
                    .arg(&p.id)
                    .query(con)?;
                let envelope = entry.0.first().and_then(|e| e.map.get(FIELD));
                self.bury(con, &p.id, envelope, "max_deliveries")?;
                buried.push(p.id);
            }
        }
        self.ack(con, &buried)?;
        // Claim page by page until the scan wraps (a dead member's whole
        // backlog, not one page per janitor run).
        let mut from = String::from("0-0");
        loop {
            let claimed: StreamAutoClaimReply = ::redis::cmd("XAUTOCLAIM")
                .arg(&self.key)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(idle)
                .arg(&from)
                .arg("COUNT")
                .arg(self.count)
                .query(con)?;
            add(&self.shared.counts.claimed, claimed.claimed.len() as u64);
            // Entries trimmed away while pending come back as deleted ids:
            // nothing to deliver, nothing left to acknowledge.
            self.process(con, claimed.claimed)?;
            if claimed.next_stream_id == "0-0" || self.shared.stop.is_stopped() {
                return Ok(());
            }
            from = claimed.next_stream_id;
        }
    }
}

/// `XRANGE`'s reply.
struct StreamRange(Vec<StreamId>);

impl ::redis::FromRedisValue for StreamRange {
    fn from_redis_value(v: Value) -> Result<Self, ::redis::ParsingError> {
        let r: ::redis::streams::StreamRangeReply = ::redis::FromRedisValue::from_redis_value(v)?;
        Ok(Self(r.ids))
    }
}
