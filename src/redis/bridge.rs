//! The Redis pub/sub bridge.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ::redis::Msg;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::common::{add, common_setters, serve_inbound, Common, Io, Running, Shared, Sink, POLL};
use super::{glob, AdapterError, ORIGIN_HEADER};
use crate::adapter::Window;
use crate::envelope::Codec;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::{Bus, Pattern, WeakBus};

/// Counters of one bridge, read without stopping it.
///
/// Outbound: `exported == published + encode_failed + unsent` once the
/// bridge is shut down, plus what a failed pipeline may have half-sent
/// (then published again: at-most-once becomes at-least-once there, and
/// the receivers' deduplication takes the copy out).
///
/// # Examples
///
/// ```
/// let s = topicbus::redis::BridgeStats::default();
/// assert_eq!(s.exported, s.published + s.encode_failed + s.unsent);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeStats {
    /// Local messages the bridge took from its outbox to send.
    pub exported: u64,
    /// Of those, published to Redis (the server took the `PUBLISH`).
    pub published: u64,
    /// Published while no process subscribed to the channel (Redis pub/sub
    /// keeps nothing: these reached nobody).
    pub no_subscribers: u64,
    /// Not sent: the payload does not serialize or the envelope is over
    /// the codec's limit.
    pub encode_failed: u64,
    /// Not sent: still in the outbox or the unsent batch when shutdown's
    /// deadline passed.
    pub unsent: u64,
    /// Messages the outbox (a bounded pull subscription on the local bus)
    /// dropped by its overflow policy while Redis was slow or down.
    pub outbox_dropped: u64,
    /// Messages waiting in the outbox now.
    pub outbox_depth: usize,
    /// Imported messages seen by the export side and not sent back out.
    pub not_reexported: u64,
    /// Envelopes read from Redis.
    pub received: u64,
    /// Of those, published on the local bus.
    pub imported: u64,
    /// Read back from this node itself (loop prevention).
    pub own: u64,
    /// Outside the import patterns (the Redis glob is a superset).
    pub filtered: u64,
    /// Seen before (within the deduplication window).
    pub duplicates: u64,
    /// Rejected: unsigned, unknown key or bad signature. Never delivered.
    pub forged: u64,
    /// Rejected: not a valid envelope. Never delivered.
    pub malformed: u64,
    /// Refused by the local bus (shut down, or a limit).
    pub local_rejected: u64,
    /// Connections lost and made again (both directions).
    pub reconnects: u64,
    /// The outbound connection is up.
    pub outbound_connected: bool,
    /// The inbound (subscriber) connection is up.
    pub inbound_connected: bool,
}

/// What [`RedisBridge::shutdown`] did.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::envelope::Codec;
/// use topicbus::redis::RedisBridge;
/// use topicbus::Bus;
/// let bus = Bus::<String>::builder().workers(1).build()?;
/// // Nothing to export or import: no thread, no connection.
/// let bridge = RedisBridge::builder("redis://127.0.0.1:1/", Codec::unsigned()).start(&bus)?;
/// let report = bridge.shutdown(Duration::from_secs(1));
/// assert!(report.flushed && report.stats.unsent == 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeReport {
    /// Everything in the outbox was sent (or refused by the codec) by the
    /// deadline.
    pub flushed: bool,
    /// The final counters (`unsent` says what was left behind).
    pub stats: BridgeStats,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

/// Settings of a [`RedisBridge`]; from [`RedisBridge::builder`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use topicbus::envelope::{Codec, KeyRing};
/// use topicbus::redis::RedisBridge;
/// use topicbus::{Bus, OverflowPolicy};
/// let bus = Bus::<String>::builder().build()?;
/// let codec = Codec::signed(KeyRing::new("2026-12", std::env::var("TOPICBUS_KEY")?)?);
/// let bridge = RedisBridge::builder("redis://127.0.0.1/", codec)
///     .node_id("web-1")
///     .export("orders.#")
///     .import("prices.*")
///     .outbox_capacity(50_000)
///     .outbox_overflow(OverflowPolicy::DropOldest)
///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(5))
///     .start(&bus)?;
/// # drop(bridge);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct BridgeBuilder {
    common: Common,
    import: Vec<String>,
    prefix: String,
}

impl BridgeBuilder {
    common_setters!("RedisBridge::builder(\"redis://127.0.0.1/\", Codec::unsigned())");

    /// Publishes messages from Redis matching `pattern` on the local bus.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisBridge;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<String>::builder().build()?;
    /// let prices = bus.receiver("prices.#")?;
    /// let _bridge = RedisBridge::builder("redis://127.0.0.1/", Codec::unsigned())
    ///     .import("prices.#") // other nodes' prices appear on this bus
    ///     .start(&bus)?;
    /// let m = prices.recv_timeout(Duration::from_secs(10))?;
    /// println!("{} from {:?}", m.payload(), m.headers().get(topicbus::envelope::ORIGIN_HEADER));
    /// # let _ = Message::builder("a".parse()?, ());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn import(mut self, pattern: impl Into<String>) -> Self {
        self.import.push(pattern.into());
        self
    }

    /// The Redis channel of a topic is `prefix` + topic (default
    /// `topicbus:`); buses sharing a prefix share messages.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisBridge;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// // Staging and production share one Redis but never see each other's messages.
    /// let bridge = RedisBridge::builder("redis://127.0.0.1/", Codec::unsigned())
    ///     .prefix("staging:")
    ///     .export("#")
    ///     .import("#")
    ///     .start(&bus)?;
    /// # drop(bridge);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Starts the bridge on `bus`: the outbox subscription, a writer thread
    /// and, when there are imports, a reader thread. Connections are made
    /// by the threads (and made again when lost): Redis being down at
    /// start is not an error, it shows in [`RedisBridge::stats`] and the
    /// bus's health.
    ///
    /// Blocks only to spawn the threads.
    ///
    /// # Errors
    ///
    /// [`AdapterError::Redis`] for a bad URL, [`AdapterError::Pattern`] for
    /// a bad pattern, [`AdapterError::Invalid`] for a zero capacity, batch
    /// or timeout, [`AdapterError::Subscribe`] when the bus is shut down,
    /// [`AdapterError::Spawn`] when a thread cannot start.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::{AdapterError, RedisBridge};
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let bridge = RedisBridge::builder("redis://127.0.0.1/", Codec::unsigned()).export("orders.#").start(&bus)?;
    /// println!("connected: {}", bridge.stats().outbound_connected); // Redis down is not an error
    /// let bad = RedisBridge::builder("redis://127.0.0.1/", Codec::unsigned()).export("orders.b*").start(&bus);
    /// assert!(matches!(bad, Err(AdapterError::Pattern(_))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start<T>(self, bus: &Bus<T>) -> Result<RedisBridge<T>, AdapterError>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let imports = super::common::parse(&self.import)?;
        let sink = Sink::Publish {
            prefix: self.prefix.clone(),
        };
        let (mut running, io) =
            self.common
                .launch(bus, sink, "redis bridge", ["outbound", "inbound"])?;
        if imports.is_empty() {
            // Nothing to read: the inbound side counts as up.
            running
                .shared
                .counts
                .inbound_connected
                .store(true, Ordering::Relaxed);
        } else {
            let reader = Reader {
                bus: bus.downgrade(),
                io,
                shared: Arc::clone(&running.shared),
                codec: self.common.codec,
                globs: glob::globs(&self.prefix, &imports),
                imports,
                seen: Window::new(self.common.dedup),
            };
            running.spawn("topicbus-redis-in", move || reader.run())?;
        }
        Ok(RedisBridge {
            running,
            report: None,
            _payload: PhantomData,
        })
    }
}

/// A pub/sub bridge between a local bus and Redis: local messages matching
/// the export patterns are published to Redis; messages other nodes
/// published that match the import patterns are published on the local
/// bus, marked with [`ORIGIN_HEADER`].
///
/// **At most once.** Redis pub/sub keeps nothing: a node that is not
/// connected when a message is published never sees it, and while this
/// node cannot reach Redis its outbox holds messages up to its bound, then
/// drops by its overflow policy (counted). For at-least-once delivery
/// across processes use Redis Streams queue groups. Every rejected
/// envelope (unsigned, badly signed, malformed) is counted and never
/// delivered; duplicates within the window and this node's own messages
/// are dropped, counted.
///
/// Shut it down with [`shutdown`](Self::shutdown) to flush the outbox;
/// dropping it stops it with a one-second flush.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use topicbus::envelope::{Codec, KeyRing};
/// use topicbus::redis::RedisBridge;
/// use topicbus::{Bus, Message};
///
/// let bus = Bus::<String>::builder().build()?;
/// let codec = Codec::signed(KeyRing::new("2026-11", std::env::var("TOPICBUS_KEY")?)?);
/// let bridge = RedisBridge::builder("redis://127.0.0.1/", codec)
///     .node_id("billing-1")
///     .export("orders.#")
///     .import("payments.#")
///     .start(&bus)?;
/// let _s = bus.subscribe("payments.#", |m: &Message<String>| println!("{}", m.payload()))?;
/// bus.publish("orders.eu.created", "order 1".to_string())?;
/// let report = bridge.shutdown(Duration::from_secs(5));
/// assert!(report.flushed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedisBridge<T: Send + Sync + 'static> {
    running: Running<T>,
    report: Option<BridgeReport>,
    _payload: PhantomData<fn(T) -> T>,
}

impl<T: Send + Sync + 'static> fmt::Debug for RedisBridge<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBridge")
            .field("node", &self.running.shared.node)
            .field("stats", &self.stats())
            .finish()
    }
}

impl RedisBridge<()> {
    /// Settings for a bridge to the Redis server at `url`
    /// (`redis://host:port/db`, `redis+unix:///path/to/socket`, …),
    /// encoding with `codec` (use a signed codec wherever another party can
    /// write to the server).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisBridge;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().workers(1).build()?;
    /// // Nothing exported or imported yet: no thread, no connection.
    /// let bridge = RedisBridge::builder("redis+unix:///run/redis/redis.sock", Codec::unsigned()).start(&bus)?;
    /// assert!(bridge.shutdown(Duration::from_secs(1)).flushed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(url: impl Into<String>, codec: Codec) -> BridgeBuilder {
        BridgeBuilder {
            common: Common::new(url.into(), codec),
            import: Vec::new(),
            prefix: "topicbus:".into(),
        }
    }
}

impl<T: Send + Sync + 'static> RedisBridge<T> {
    /// This node's id.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisBridge;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().workers(1).build()?;
    /// let named = RedisBridge::builder("redis://127.0.0.1/", Codec::unsigned()).node_id("api-3").start(&bus)?;
    /// assert_eq!(named.node_id(), "api-3");
    /// let random = RedisBridge::builder("redis://127.0.0.1/", Codec::unsigned()).start(&bus)?;
    /// assert!(random.node_id().starts_with("node-"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn node_id(&self) -> &str {
        &self.running.shared.node
    }

    /// The outbox as an [`Outlet`](crate::route::Outlet) for a
    /// [`Router`](crate::route::Router), when the adapter has one (export
    /// patterns, or [`routable`](BridgeBuilder::routable)). It is down from a failed
    /// write to Redis until one succeeds. Messages that came from another
    /// process ([`ORIGIN_HEADER`](crate::envelope::ORIGIN_HEADER)) are not
    /// sent, as for exports.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisBridge;
    /// use topicbus::route::Router;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let bridge = RedisBridge::builder("redis://127.0.0.1/", Codec::unsigned()).routable().start(&bus)?;
    /// let router = Router::builder(&bus).to(bridge.outlet().ok_or("not routable")?).build()?;
    /// router.publish("orders.created", "o-1".to_string())?;
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
    /// use topicbus::redis::RedisBridge;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let bridge = RedisBridge::builder("redis://127.0.0.1/", Codec::unsigned()).export("#").import("#").start(&bus)?;
    /// let s = bridge.stats();
    /// println!("sent {} / dropped {} / forged rejected {}", s.published, s.outbox_dropped, s.forged);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> BridgeStats {
        let c = &self.running.shared.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (outbox_dropped, outbox_depth) = self.running.outbox_numbers();
        BridgeStats {
            exported: get(&c.exported),
            published: get(&c.published),
            no_subscribers: get(&c.no_subscribers),
            encode_failed: get(&c.encode_failed),
            unsent: get(&c.unsent),
            outbox_dropped,
            outbox_depth,
            not_reexported: get(&c.not_reexported),
            received: get(&c.received),
            imported: get(&c.imported),
            own: get(&c.own),
            filtered: get(&c.filtered),
            duplicates: get(&c.duplicates),
            forged: get(&c.forged),
            malformed: get(&c.malformed),
            local_rejected: get(&c.local_rejected),
            reconnects: get(&c.reconnects),
            outbound_connected: c.outbound_connected.load(Ordering::Relaxed),
            inbound_connected: c.inbound_connected.load(Ordering::Relaxed),
        }
    }

    /// Stops importing, sends what the outbox holds (retrying a lost
    /// connection) until it is empty or `timeout` passes, and joins the
    /// threads. Blocks.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisBridge;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let bridge = RedisBridge::builder("redis://127.0.0.1/", Codec::unsigned()).export("orders.#").start(&bus)?;
    /// bus.publish("orders.created", "o-1".to_string())?;
    /// let report = bridge.shutdown(Duration::from_secs(5));
    /// if !report.flushed {
    ///     eprintln!("{} messages not sent: {:?}", report.stats.unsent, report.last_error);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(mut self, timeout: Duration) -> BridgeReport {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> BridgeReport {
        if let Some(r) = &self.report {
            return r.clone();
        }
        self.running.stop(timeout);
        let stats = self.stats();
        let report = BridgeReport {
            flushed: stats.unsent == 0,
            stats,
            last_error: self.running.shared.last_error.lock().clone(),
        };
        self.report = Some(report.clone());
        report
    }
}

impl<T: Send + Sync + 'static> Drop for RedisBridge<T> {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(1));
    }
}

/// The inbound side: a subscriber connection → checks → the local bus.
struct Reader<T: Send + Sync + 'static> {
    /// Weak: the bridge does not keep the bus alive.
    bus: WeakBus<T>,
    io: Io,
    shared: Arc<Shared>,
    codec: Codec,
    globs: Vec<String>,
    imports: Vec<Pattern>,
    seen: Window,
}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Reader<T> {
    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let backoff = self.io.backoff;
        serve_inbound(&shared, backoff, "inbound", || self.session());
    }

    /// One connection's life: subscribe, then read until stopped (`Ok`) or
    /// the connection fails (`Err`).
    fn session(&mut self) -> ::redis::RedisResult<()> {
        let mut con = self.io.connect()?;
        let mut sub = con.as_pubsub();
        sub.psubscribe(&self.globs)?;
        sub.set_read_timeout(Some(POLL))?;
        self.shared
            .counts
            .inbound_connected
            .store(true, Ordering::Relaxed);
        while !self.shared.stop.is_stopped() {
            match sub.get_message() {
                Ok(msg) => self.handle(&msg),
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn handle(&mut self, msg: &Msg) {
        let c = &self.shared.counts;
        add(&c.received, 1);
        let decoded = match self.codec.decode::<T>(msg.get_payload_bytes()) {
            Ok(d) => d,
            Err(e) if e.is_forgery() => return add(&c.forged, 1),
            Err(_) => return add(&c.malformed, 1),
        };
        if *decoded.origin == *self.shared.node {
            return add(&c.own, 1);
        }
        let mut message = decoded.message;
        if !self.imports.iter().any(|p| p.matches(message.topic())) {
            return add(&c.filtered, 1);
        }
        if !self.seen.insert(message.id()) {
            return add(&c.duplicates, 1);
        }
        message.set_header(ORIGIN_HEADER, decoded.origin);
        match self.bus.upgrade().map(|bus| bus.publish_message(message)) {
            Some(Ok(_)) => add(&c.imported, 1),
            // Refused, or the bus is gone.
            _ => add(&c.local_rejected, 1),
        }
    }
}
