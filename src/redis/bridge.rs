//! The Redis pub/sub bridge.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::redis::{Client, Connection, Msg};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{glob, AdapterError, Backoff, Stop};
use crate::bus::{HealthCheck, HealthIssue, HealthStatus};
use crate::envelope::Codec;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::Mutex;
use crate::{
    Bus, Message, MessageId, OverflowPolicy, Pattern, Receiver, RecvTimeoutError, SubscribeOptions,
    WeakBus,
};

/// The header an imported message carries: the node that published it.
/// The bridge never exports a message carrying it, so messages do not
/// bounce between nodes.
pub const ORIGIN_HEADER: &str = "topicbus-origin";

/// How often the adapter threads look at their stop flag while idle.
const POLL: Duration = Duration::from_millis(50);

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

#[derive(Default)]
struct Counters {
    exported: AtomicU64,
    published: AtomicU64,
    no_subscribers: AtomicU64,
    encode_failed: AtomicU64,
    unsent: AtomicU64,
    not_reexported: AtomicU64,
    received: AtomicU64,
    imported: AtomicU64,
    own: AtomicU64,
    filtered: AtomicU64,
    duplicates: AtomicU64,
    forged: AtomicU64,
    malformed: AtomicU64,
    local_rejected: AtomicU64,
    reconnects: AtomicU64,
    outbound_connected: AtomicBool,
    inbound_connected: AtomicBool,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What the handle, the threads and the health check share.
struct Shared {
    node: Arc<str>,
    counts: Counters,
    stop: Stop,
    /// Shutdown's deadline for the writer's flush.
    deadline: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    done: AtomicBool,
}

impl Shared {
    fn failed(&self, what: &str, e: &::redis::RedisError) {
        *self.last_error.lock() = Some(format!("{what}: {e}"));
    }

    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock()
    }
}

/// The bridge's health: degraded while a connection is down.
struct Health(Arc<Shared>);

impl HealthCheck for Health {
    fn check(&self) -> Option<HealthIssue> {
        let s = &self.0;
        if s.done.load(Ordering::Acquire) {
            return None;
        }
        let down: Vec<&str> = [
            ("outbound", &s.counts.outbound_connected),
            ("inbound", &s.counts.inbound_connected),
        ]
        .into_iter()
        .filter(|(_, up)| !up.load(Ordering::Relaxed))
        .map(|(name, _)| name)
        .collect();
        if down.is_empty() {
            return None;
        }
        let why = s
            .last_error
            .lock()
            .clone()
            .unwrap_or_else(|| "connecting".into());
        Some(HealthIssue::new(
            HealthStatus::Degraded,
            format!("redis bridge {}", s.node),
            format!("{} disconnected ({why})", down.join(" and ")),
        ))
    }
}

/// Settings of a [`RedisBridge`]; from [`RedisBridge::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct BridgeBuilder {
    url: String,
    codec: Codec,
    node: Option<String>,
    export: Vec<String>,
    import: Vec<String>,
    prefix: String,
    outbox: usize,
    overflow: OverflowPolicy,
    batch: usize,
    dedup: usize,
    backoff: Backoff,
    io_timeout: Duration,
}

impl BridgeBuilder {
    /// This node's id, written into every envelope it sends (default: a
    /// random `node-<hex>`). Envelopes carrying it are not imported back.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node = Some(id.into());
        self
    }

    /// Sends local messages matching `pattern` to Redis.
    pub fn export(mut self, pattern: impl Into<String>) -> Self {
        self.export.push(pattern.into());
        self
    }

    /// Publishes messages from Redis matching `pattern` on the local bus.
    pub fn import(mut self, pattern: impl Into<String>) -> Self {
        self.import.push(pattern.into());
        self
    }

    /// The Redis channel of a topic is `prefix` + topic (default
    /// `topicbus:`); buses sharing a prefix share messages.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Messages each priority lane of the outbox holds while Redis is slow
    /// or down (default 10,000).
    pub fn outbox_capacity(mut self, capacity: usize) -> Self {
        self.outbox = capacity;
        self
    }

    /// What a full outbox does (default [`OverflowPolicy::DropOldest`]);
    /// its drops are counted in [`BridgeStats::outbox_dropped`] and in the
    /// bus's own counters. A blocking policy makes publishers wait on
    /// Redis: allowed, not advised.
    pub fn outbox_overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// Messages sent per pipeline (default 256).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// Message ids remembered to drop duplicates (default 65,536).
    pub fn dedup_window(mut self, ids: usize) -> Self {
        self.dedup = ids;
        self
    }

    /// Reconnect waits: full-jitter exponential backoff from `base`, capped
    /// at `cap` (default 50 ms to 5 s).
    pub fn reconnect_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff = Backoff { base, cap };
        self
    }

    /// Connect, read and write timeout of each Redis call (default 2 s).
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
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
    /// or timeout, [`AdapterError::Subscribe`] when the bus is shut down.
    pub fn start<T>(self, bus: &Bus<T>) -> Result<RedisBridge<T>, AdapterError>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        if self.outbox == 0 || self.batch == 0 || self.dedup == 0 {
            return Err(AdapterError::Invalid(
                "outbox capacity, batch and dedup window must be positive",
            ));
        }
        if self.io_timeout.is_zero() || self.backoff.cap.is_zero() {
            return Err(AdapterError::Invalid(
                "io timeout and backoff cap must be positive",
            ));
        }
        let client = Client::open(self.url.as_str())?;
        let exports = parse(&self.export)?;
        let imports = parse(&self.import)?;
        let node: Arc<str> = match self.node {
            Some(n) => Arc::from(n),
            None => Arc::from(format!("node-{:016x}", fastrand::u64(..))),
        };
        let shared = Arc::new(Shared {
            node: Arc::clone(&node),
            counts: Counters::default(),
            stop: Stop::default(),
            deadline: Mutex::new(None),
            last_error: Mutex::new(None),
            done: AtomicBool::new(false),
        });
        // No imports: nothing to read, the inbound side counts as up.
        if imports.is_empty() {
            shared
                .counts
                .inbound_connected
                .store(true, Ordering::Relaxed);
        }
        let outbox = if exports.is_empty() {
            shared
                .counts
                .outbound_connected
                .store(true, Ordering::Relaxed);
            None
        } else {
            let mut options = SubscribeOptions::new()
                .capacity(self.outbox)
                .overflow(self.overflow);
            for p in exports {
                options = options.pattern(p);
            }
            Some(Arc::new(bus.receiver_with(options)?))
        };
        let io = Io {
            client,
            timeout: self.io_timeout,
            backoff: self.backoff,
        };
        let writer = match &outbox {
            None => None,
            Some(rx) => {
                let writer = Writer {
                    rx: Arc::clone(rx),
                    io: io.clone(),
                    shared: Arc::clone(&shared),
                    codec: self.codec.clone(),
                    prefix: self.prefix.clone(),
                    batch: self.batch,
                };
                Some(
                    std::thread::Builder::new()
                        .name("topicbus-redis-out".into())
                        .spawn(move || writer.run())?,
                )
            }
        };
        let reader = if imports.is_empty() {
            None
        } else {
            let reader = Reader {
                bus: bus.downgrade(),
                io,
                shared: Arc::clone(&shared),
                codec: self.codec,
                globs: glob::globs(&self.prefix, &imports),
                imports,
                seen: Window::new(self.dedup),
            };
            let spawned = std::thread::Builder::new()
                .name("topicbus-redis-in".into())
                .spawn(move || reader.run());
            match spawned {
                Ok(h) => Some(h),
                Err(e) => {
                    shared.stop.stop();
                    if let Some(w) = writer {
                        let _ = w.join();
                    }
                    return Err(e.into());
                }
            }
        };
        bus.add_health_check(Arc::new(Health(Arc::clone(&shared))));
        Ok(RedisBridge {
            shared,
            outbox,
            writer,
            reader,
            report: None,
            _payload: PhantomData,
        })
    }
}

fn parse(patterns: &[String]) -> Result<Vec<Pattern>, AdapterError> {
    patterns
        .iter()
        .map(|p| Pattern::parse(p).map_err(AdapterError::from))
        .collect()
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
    shared: Arc<Shared>,
    outbox: Option<Arc<Receiver<T>>>,
    writer: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<()>>,
    report: Option<BridgeReport>,
    _payload: PhantomData<fn(T) -> T>,
}

impl<T: Send + Sync + 'static> fmt::Debug for RedisBridge<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBridge")
            .field("node", &self.shared.node)
            .field("stats", &self.stats())
            .finish()
    }
}

impl RedisBridge<()> {
    /// Settings for a bridge to the Redis server at `url` (`redis://host:port/db`,
    /// `redis+unix:///path/to/socket`, …), encoding with `codec` (use a
    /// signed codec wherever another party can write to the server).
    pub fn builder(url: impl Into<String>, codec: Codec) -> BridgeBuilder {
        BridgeBuilder {
            url: url.into(),
            codec,
            node: None,
            export: Vec::new(),
            import: Vec::new(),
            prefix: "topicbus:".into(),
            outbox: 10_000,
            overflow: OverflowPolicy::DropOldest,
            batch: 256,
            dedup: 65_536,
            backoff: Backoff {
                base: Duration::from_millis(50),
                cap: Duration::from_secs(5),
            },
            io_timeout: Duration::from_secs(2),
        }
    }
}

impl<T: Send + Sync + 'static> RedisBridge<T> {
    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.node
    }

    /// The counters now.
    pub fn stats(&self) -> BridgeStats {
        let c = &self.shared.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (outbox_dropped, outbox_depth) = self.outbox.as_ref().map_or((0, 0), |rx| {
            let s = rx.stats();
            (s.counts.dropped.total(), s.queued.iter().sum())
        });
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
    /// threads. Idempotent: later calls return the first report. Blocks.
    pub fn shutdown(mut self, timeout: Duration) -> BridgeReport {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> BridgeReport {
        if let Some(r) = &self.report {
            return r.clone();
        }
        *self.shared.deadline.lock() = Some(Instant::now() + timeout);
        self.shared.stop.stop();
        for h in [self.reader.take(), self.writer.take()]
            .into_iter()
            .flatten()
        {
            // An adapter thread that panicked has nothing more to report.
            let _ = h.join();
        }
        self.shared.done.store(true, Ordering::Release);
        let stats = self.stats();
        let report = BridgeReport {
            flushed: stats.unsent == 0,
            stats,
            last_error: self.shared.last_error.lock().clone(),
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

/// What both threads need to reach Redis.
#[derive(Clone)]
struct Io {
    client: Client,
    timeout: Duration,
    backoff: Backoff,
}

impl Io {
    fn connect(&self) -> ::redis::RedisResult<Connection> {
        let con = self.client.get_connection_with_timeout(self.timeout)?;
        con.set_read_timeout(Some(self.timeout))?;
        con.set_write_timeout(Some(self.timeout))?;
        Ok(con)
    }
}

/// The outbound side: outbox → envelopes → pipelined `PUBLISH`.
struct Writer<T: Send + Sync + 'static> {
    rx: Arc<Receiver<T>>,
    io: Io,
    shared: Arc<Shared>,
    codec: Codec,
    prefix: String,
    batch: usize,
}

impl<T: Serialize + Send + Sync + 'static> Writer<T> {
    fn run(self) {
        let c = &self.shared.counts;
        let mut con: Option<Connection> = None;
        let mut pending: Vec<(String, Vec<u8>)> = Vec::with_capacity(self.batch);
        let mut failures = 0u32;
        loop {
            let stopping = self.shared.stop.is_stopped();
            if stopping && self.shared.deadline().is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if pending.is_empty() {
                let first = if stopping {
                    self.rx.try_recv().ok()
                } else {
                    match self.rx.recv_timeout(POLL) {
                        Ok(m) => Some(m),
                        Err(RecvTimeoutError::Timeout) => continue,
                        // The bus shut down and the outbox is empty.
                        Err(RecvTimeoutError::Closed) => break,
                    }
                };
                let Some(first) = first else {
                    // Stopping, and the outbox is empty: flushed.
                    break;
                };
                self.take(&first, &mut pending);
                while pending.len() < self.batch {
                    match self.rx.try_recv() {
                        Ok(m) => self.take(&m, &mut pending),
                        Err(_) => break,
                    }
                }
                if pending.is_empty() {
                    continue;
                }
            }
            match self.send(&mut con, &pending) {
                Ok(counts) => {
                    add(&c.published, pending.len() as u64);
                    add(
                        &c.no_subscribers,
                        counts.iter().filter(|&&n| n == 0).count() as u64,
                    );
                    pending.clear();
                    failures = 0;
                }
                Err(e) => {
                    if con.take().is_some() {
                        add(&c.reconnects, 1);
                    }
                    c.outbound_connected.store(false, Ordering::Relaxed);
                    self.shared.failed("outbound", &e);
                    failures = failures.saturating_add(1);
                    self.pause(self.io.backoff.delay(failures));
                }
            }
        }
        // Left behind at the deadline: the unsent batch (already counted
        // as exported) and the outbox.
        let mut left = 0;
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        add(&c.exported, left);
        add(&c.unsent, left + pending.len() as u64);
    }

    /// Waits `d`, or until shutdown's deadline when stopping.
    fn pause(&self, d: Duration) {
        if !self.shared.stop.wait(d) {
            return;
        }
        let until = self.shared.deadline().unwrap_or_else(Instant::now);
        let left = until.saturating_duration_since(Instant::now());
        std::thread::sleep(d.min(left));
    }

    /// Encodes one outbox message into the batch.
    fn take(&self, m: &Message<T>, pending: &mut Vec<(String, Vec<u8>)>) {
        let c = &self.shared.counts;
        if m.headers().contains(ORIGIN_HEADER) {
            add(&c.not_reexported, 1);
            return;
        }
        add(&c.exported, 1);
        match self.codec.encode(m, &self.shared.node) {
            Ok(bytes) => pending.push((format!("{}{}", self.prefix, m.topic()), bytes)),
            Err(_) => add(&c.encode_failed, 1),
        }
    }

    fn send(
        &self,
        con: &mut Option<Connection>,
        pending: &[(String, Vec<u8>)],
    ) -> ::redis::RedisResult<Vec<i64>> {
        if con.is_none() {
            *con = Some(self.io.connect()?);
            self.shared
                .counts
                .outbound_connected
                .store(true, Ordering::Relaxed);
        }
        let Some(con) = con.as_mut() else {
            unreachable!("connected above")
        };
        let mut pipe = ::redis::pipe();
        for (channel, bytes) in pending {
            pipe.cmd("PUBLISH").arg(channel).arg(bytes.as_slice());
        }
        pipe.query(con)
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
        let mut failures = 0u32;
        while !self.shared.stop.is_stopped() {
            match self.session(&mut failures) {
                Ok(()) => break,
                Err(e) => {
                    let c = &self.shared.counts;
                    if c.inbound_connected.swap(false, Ordering::Relaxed) {
                        add(&c.reconnects, 1);
                    }
                    self.shared.failed("inbound", &e);
                    failures = failures.saturating_add(1);
                    if self.shared.stop.wait(self.io.backoff.delay(failures)) {
                        break;
                    }
                }
            }
        }
        self.shared
            .counts
            .inbound_connected
            .store(false, Ordering::Relaxed);
    }

    /// One connection's life: subscribe, then read until stopped (`Ok`) or
    /// the connection fails (`Err`).
    fn session(&mut self, failures: &mut u32) -> ::redis::RedisResult<()> {
        let mut con = self.io.connect()?;
        let mut sub = con.as_pubsub();
        sub.psubscribe(&self.globs)?;
        sub.set_read_timeout(Some(POLL))?;
        self.shared
            .counts
            .inbound_connected
            .store(true, Ordering::Relaxed);
        *failures = 0;
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

/// The last `cap` message ids seen.
struct Window {
    set: HashSet<MessageId>,
    order: VecDeque<MessageId>,
    cap: usize,
}

impl Window {
    fn new(cap: usize) -> Self {
        Self {
            set: HashSet::with_capacity(cap.min(1 << 16)),
            order: VecDeque::with_capacity(cap.min(1 << 16)),
            cap,
        }
    }

    /// False when `id` is in the window; else remembers it.
    fn insert(&mut self, id: MessageId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_the_oldest_first() {
        let ids: Vec<MessageId> = (0..4).map(|_| MessageId::new()).collect();
        let mut w = Window::new(2);
        assert!(w.insert(ids[0]) && w.insert(ids[1]));
        assert!(!w.insert(ids[0]) && !w.insert(ids[1]));
        assert!(w.insert(ids[2]));
        assert!(w.insert(ids[0]), "the oldest was forgotten");
        assert!(!w.insert(ids[2]));
    }
}
