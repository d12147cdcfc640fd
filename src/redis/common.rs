//! What both Redis adapters share: the settings, the counters, the
//! outbound writer (outbox → envelopes → pipelined commands), the
//! deduplication window, the health check.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::redis::{Client, Connection};
use serde::Serialize;

use super::wire::{bulk, Reply, WireConnection, WireError};
use super::{AdapterError, Backoff, Stop, ORIGIN_HEADER};
use crate::bus::{HealthCheck, HealthIssue};
use crate::envelope::Codec;
use crate::route::{Confirms, Link, Outlet};
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::Mutex;
use crate::{
    Bus, Message, MessageId, OverflowPolicy, Pattern, Receiver, RecvTimeoutError, SubscribeOptions,
    Topic, TryRecvError,
};

/// How often the adapter threads look at their stop flag while idle.
pub(super) const POLL: Duration = Duration::from_millis(50);

/// The field of a stream entry that holds the envelope.
pub(super) const FIELD: &str = "e";

#[derive(Default)]
pub(super) struct Counters {
    pub(super) exported: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) no_subscribers: AtomicU64,
    pub(super) encode_failed: AtomicU64,
    pub(super) unsent: AtomicU64,
    pub(super) not_reexported: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) imported: AtomicU64,
    pub(super) own: AtomicU64,
    pub(super) filtered: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) forged: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) local_rejected: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) outbound_connected: AtomicBool,
    /// The last outbound write failed and none has succeeded since (a
    /// failed batch stays pending and is retried, so this clears itself
    /// when Redis is back): what a router's outlet reads as down.
    pub(super) outbound_failing: AtomicBool,
    pub(super) inbound_connected: AtomicBool,
    /// Streams: entries acknowledged (XACK) after a terminal outcome.
    pub(super) acked: AtomicU64,
    /// Streams: entries moved to the dead-letter stream.
    pub(super) dead_lettered: AtomicU64,
    /// Streams: entries claimed from idle consumers.
    pub(super) claimed: AtomicU64,
    /// Streams: entries whose local outcome did not come in time (left
    /// pending, redelivered later).
    pub(super) unconfirmed: AtomicU64,
}

pub(super) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What the handle, the threads and the health check share.
pub(super) struct Shared {
    pub(super) node: Arc<str>,
    pub(super) counts: Counters,
    pub(super) stop: Stop,
    /// Shutdown's deadline for the writer's flush.
    pub(super) deadline: Mutex<Option<Instant>>,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) done: AtomicBool,
}

impl Shared {
    pub(super) fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        *self.last_error.lock() = Some(format!("{what}: {e}"));
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock()
    }
}

/// An adapter's health: degraded while one of its connections is down.
pub(super) struct Health {
    pub(super) shared: Arc<Shared>,
    /// "redis bridge", "redis streams".
    pub(super) component: &'static str,
    /// The names of the outbound and inbound connections.
    pub(super) links: [&'static str; 2],
}

impl HealthCheck for Health {
    fn check(&self) -> Option<HealthIssue> {
        let s = &self.shared;
        if s.done.load(Ordering::Acquire) {
            return None;
        }
        let flags = [&s.counts.outbound_connected, &s.counts.inbound_connected];
        let down: Vec<&str> = self
            .links
            .iter()
            .zip(flags)
            .filter(|(_, up)| !up.load(Ordering::Relaxed))
            .map(|(name, _)| *name)
            .collect();
        if down.is_empty() {
            return None;
        }
        Some(crate::adapter::disconnected(
            format!("{} {}", self.component, s.node),
            &format!("{} disconnected", down.join(" and ")),
            &s.last_error,
        ))
    }
}

/// Runs an adapter's inbound side until it stops: `session` makes a
/// connection and reads until stopped (`Ok`) or the connection fails
/// (`Err`); it marks `inbound_connected` once it is ready. After a failure
/// the side counts as down, and the next session starts after a full-jitter
/// backoff that grows with the failures since the last good connection.
pub(super) fn serve_inbound(
    shared: &Shared,
    backoff: Backoff,
    what: &str,
    mut session: impl FnMut() -> ::redis::RedisResult<()>,
) {
    let c = &shared.counts;
    let mut failures = 0u32;
    while !shared.stop.is_stopped() {
        let Err(e) = session() else {
            break;
        };
        if c.inbound_connected.swap(false, Ordering::Relaxed) {
            // It had connected: a reconnect, and the backoff starts over.
            add(&c.reconnects, 1);
            failures = 0;
        }
        shared.failed(what, &e);
        failures = failures.saturating_add(1);
        if shared.stop.wait(backoff.delay(failures)) {
            break;
        }
    }
    c.inbound_connected.store(false, Ordering::Relaxed);
}

/// The settings both adapters share.
#[derive(Debug, Clone)]
pub(super) struct Common {
    pub(super) url: String,
    pub(super) codec: Codec,
    pub(super) node: Option<String>,
    pub(super) export: Vec<String>,
    pub(super) outbox: usize,
    pub(super) overflow: OverflowPolicy,
    pub(super) batch: usize,
    pub(super) dedup: usize,
    pub(super) backoff: Backoff,
    pub(super) io_timeout: Duration,
    pub(super) routable: bool,
}

/// The setters of [`Common`], for both builders.
macro_rules! common_setters {
    ($new:literal) => {
        /// This node's id, written into every envelope it sends (default: a
        /// random `node-<hex>`).
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse topicbus::envelope::Codec;\nuse topicbus::redis::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet adapter = ",
            $new,
            "\n    .node_id(\"billing-1\")\n    .export(\"orders.#\")\n    .start(&bus)?;\nassert_eq!(adapter.node_id(), \"billing-1\");\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn node_id(mut self, id: impl Into<String>) -> Self {
            self.common.node = Some(id.into());
            self
        }

        /// Sends local messages matching `pattern` to Redis.
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse topicbus::envelope::Codec;\nuse topicbus::redis::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet _adapter = ",
            $new,
            "\n    .export(\"orders.#\")\n    .export(\"payments.*.settled\")\n    .start(&bus)?;\nbus.publish(\"orders.eu.created\", \"o-1\".to_string())?; // goes to Redis\nbus.publish(\"users.signup\", \"u-1\".to_string())?; // stays local\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn export(mut self, pattern: impl Into<String>) -> Self {
            self.common.export.push(pattern.into());
            self
        }

        /// Gives the adapter an outbox and a writer even without export
        /// patterns, for a [`Router`](crate::route::Router): see `outlet`.
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse topicbus::envelope::Codec;\nuse topicbus::redis::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet adapter = ",
            $new,
            "\n    .routable() // no exports: only what a router sends\n    .start(&bus)?;\nassert!(adapter.outlet().is_some());\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn routable(mut self) -> Self {
            self.common.routable = true;
            self
        }

        /// Messages each priority lane of the outbox holds while Redis is
        /// slow or down (default 10,000).
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse topicbus::envelope::Codec;\nuse topicbus::redis::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet adapter = ",
            $new,
            "\n    .export(\"metrics.#\")\n    .outbox_capacity(100_000) // ride out a longer outage\n    .start(&bus)?;\nprintln!(\"waiting for Redis: {}\", adapter.stats().outbox_depth);\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn outbox_capacity(mut self, capacity: usize) -> Self {
            self.common.outbox = capacity;
            self
        }

        /// What a full outbox does (default
        /// [`OverflowPolicy::DropOldest`](crate::OverflowPolicy::DropOldest));
        /// its drops are counted in the adapter's stats and in the bus's own
        /// counters. A blocking policy makes publishers wait on Redis:
        /// allowed, not advised.
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse topicbus::envelope::Codec;\nuse topicbus::redis::*;\nuse topicbus::{Bus, OverflowPolicy};\nlet bus = Bus::<String>::builder().build()?;\nlet adapter = ",
            $new,
            "\n    .export(\"metrics.#\")\n    .outbox_overflow(OverflowPolicy::DropNewest) // keep the oldest samples\n    .start(&bus)?;\nprintln!(\"dropped while Redis was down: {}\", adapter.stats().outbox_dropped);\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn outbox_overflow(mut self, policy: crate::OverflowPolicy) -> Self {
            self.common.overflow = policy;
            self
        }

        /// Messages sent per pipeline (default 256).
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse topicbus::envelope::Codec;\nuse topicbus::redis::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet _adapter = ",
            $new,
            "\n    .export(\"ticks.#\")\n    .batch(1_024) // bigger pipelines for a high-rate feed\n    .start(&bus)?;\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn batch(mut self, batch: usize) -> Self {
            self.common.batch = batch;
            self
        }

        /// Message ids remembered to drop duplicates (default 65,536).
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse topicbus::envelope::Codec;\nuse topicbus::redis::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet adapter = ",
            $new,
            "\n    .export(\"orders.#\")\n    .dedup_window(1 << 20) // remember a million ids\n    .start(&bus)?;\nprintln!(\"copies dropped: {}\", adapter.stats().duplicates);\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn dedup_window(mut self, ids: usize) -> Self {
            self.common.dedup = ids;
            self
        }

        /// Reconnect waits: full-jitter exponential backoff from `base`,
        /// capped at `cap` (default 50 ms to 5 s).
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse std::time::Duration;\nuse topicbus::envelope::Codec;\nuse topicbus::redis::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet adapter = ",
            $new,
            "\n    .export(\"orders.#\")\n    .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(30))\n    .start(&bus)?;\nprintln!(\"reconnects: {}\", adapter.stats().reconnects);\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn reconnect_backoff(
            mut self,
            base: std::time::Duration,
            cap: std::time::Duration,
        ) -> Self {
            self.common.backoff = super::Backoff { base, cap };
            self
        }

        /// Connect, read and write timeout of each Redis call (default 2 s).
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse std::time::Duration;\nuse topicbus::envelope::Codec;\nuse topicbus::redis::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet _adapter = ",
            $new,
            "\n    .export(\"orders.#\")\n    .io_timeout(Duration::from_millis(500)) // find a dead server sooner\n    .start(&bus)?;\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn io_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.common.io_timeout = timeout;
            self
        }
    };
}
pub(super) use common_setters;

impl Common {
    /// The defaults, for the server at `url`.
    pub(super) fn new(url: String, codec: Codec) -> Self {
        Self {
            url,
            codec,
            node: None,
            export: Vec::new(),
            outbox: 10_000,
            overflow: OverflowPolicy::DropOldest,
            batch: 256,
            dedup: 65_536,
            backoff: Backoff {
                base: Duration::from_millis(50),
                cap: Duration::from_secs(5),
            },
            io_timeout: Duration::from_secs(2),
            routable: false,
        }
    }

    /// Checks the settings, makes the outbox and starts the writer (when
    /// there are exports), and registers the health check. The caller
    /// starts its inbound thread and, if that fails, calls
    /// [`Running::abort`].
    pub(super) fn launch<T>(
        &self,
        bus: &Bus<T>,
        sink: Sink,
        component: &'static str,
        links: [&'static str; 2],
    ) -> Result<(Running<T>, Io), AdapterError>
    where
        T: Serialize + Send + Sync + 'static,
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
        let node: Arc<str> = match &self.node {
            Some(n) => Arc::from(n.as_str()),
            None => Arc::from(format!("node-{:016x}", fastrand::u64(..))),
        };
        let shared = Arc::new(Shared {
            node,
            counts: Counters::default(),
            stop: Stop::default(),
            deadline: Mutex::new(None),
            last_error: Mutex::new(None),
            done: AtomicBool::new(false),
        });
        let io = Io {
            client,
            timeout: self.io_timeout,
            backoff: self.backoff,
        };
        let mut running = Running {
            shared: Arc::clone(&shared),
            outbox: None,
            confirms: Confirms::new(),
            name: component.to_owned(),
            threads: Vec::new(),
        };
        if exports.is_empty() && !self.routable {
            // Nothing to send: the outbound side counts as up.
            shared
                .counts
                .outbound_connected
                .store(true, Ordering::Relaxed);
        } else {
            let mut options = SubscribeOptions::new()
                .capacity(self.outbox)
                .overflow(self.overflow)
                .direct();
            for p in exports {
                options = options.pattern(p);
            }
            let rx = Arc::new(bus.receiver_with(options)?);
            let writer = Writer {
                rx: Arc::clone(&rx),
                io: io.clone(),
                shared: Arc::clone(&shared),
                codec: self.codec.clone(),
                sink,
                batch: self.batch,
                confirms: Arc::clone(&running.confirms),
            };
            running.outbox = Some(rx);
            running.threads.push(
                std::thread::Builder::new()
                    .name("topicbus-redis-out".into())
                    .spawn(move || writer.run())?,
            );
        }
        bus.add_health_check(Arc::new(Health {
            shared,
            component,
            links,
        }));
        Ok((running, io))
    }
}

/// Parses patterns.
pub(super) fn parse(patterns: &[String]) -> Result<Vec<Pattern>, AdapterError> {
    patterns
        .iter()
        .map(|p| Pattern::parse(p).map_err(AdapterError::from))
        .collect()
}

/// A started adapter's threads and outbox.
pub(super) struct Running<T: Send + Sync + 'static> {
    pub(super) shared: Arc<Shared>,
    pub(super) outbox: Option<Arc<Receiver<T>>>,
    pub(super) confirms: Arc<Confirms>,
    /// The outlet's name.
    pub(super) name: String,
    pub(super) threads: Vec<JoinHandle<()>>,
}

impl<T: Send + Sync + 'static> Running<T> {
    /// Starts an adapter thread; on failure stops the others.
    pub(super) fn spawn(
        &mut self,
        name: &str,
        run: impl FnOnce() + Send + 'static,
    ) -> Result<(), AdapterError> {
        match std::thread::Builder::new().name(name.into()).spawn(run) {
            Ok(h) => {
                self.threads.push(h);
                Ok(())
            }
            Err(e) => {
                self.stop(Duration::ZERO);
                Err(e.into())
            }
        }
    }

    /// Stops the threads (the writer flushes until `timeout`) and joins
    /// them; the health check goes quiet.
    pub(super) fn stop(&mut self, timeout: Duration) {
        *self.shared.deadline.lock() = Some(Instant::now() + timeout);
        self.shared.stop.stop();
        for h in self.threads.drain(..) {
            // An adapter thread that panicked has nothing more to report.
            let _ = h.join();
        }
        self.shared.done.store(true, Ordering::Release);
    }

    /// The outbox as a router's outlet, when there is one. Down once a
    /// write failed and until one succeeds (a writer that never wrote yet
    /// counts as up; a failure of the inbound side does not count).
    pub(super) fn outlet(&self) -> Option<Outlet<T>> {
        let rx = self.outbox.as_ref()?;
        let shared = Arc::clone(&self.shared);
        Some(Outlet::new(
            self.name.clone(),
            Arc::clone(rx),
            Arc::clone(&self.confirms),
            move || {
                Link::of(
                    shared.stop.is_stopped() || shared.done.load(Ordering::Acquire),
                    shared.counts.outbound_failing.load(Ordering::Relaxed),
                )
            },
        ))
    }

    /// The outbox's drops and depth.
    pub(super) fn outbox_numbers(&self) -> (u64, usize) {
        self.outbox
            .as_ref()
            .map_or((0, 0), |rx| rx.drops_and_depth())
    }
}

/// What both threads need to reach Redis.
#[derive(Clone)]
pub(super) struct Io {
    pub(super) client: Client,
    pub(super) timeout: Duration,
    pub(super) backoff: Backoff,
}

impl Io {
    pub(super) fn connect(&self) -> ::redis::RedisResult<Connection> {
        let con = self.client.get_connection_with_timeout(self.timeout)?;
        con.set_read_timeout(Some(self.timeout))?;
        con.set_write_timeout(Some(self.timeout))?;
        Ok(con)
    }
}

/// Where a [`Writer`] sends.
#[derive(Debug, Clone)]
pub(super) enum Sink {
    /// `PUBLISH <prefix><topic>`.
    Publish { prefix: String },
    /// `XADD <key> MAXLEN ~ <maxlen> * e <envelope>`.
    Stream { key: String, maxlen: usize },
}

/// The outbound side: outbox → envelopes → pipelined `PUBLISH` or `XADD`.
pub(super) struct Writer<T: Send + Sync + 'static> {
    pub(super) rx: Arc<Receiver<T>>,
    pub(super) io: Io,
    pub(super) shared: Arc<Shared>,
    pub(super) codec: Codec,
    pub(super) sink: Sink,
    pub(super) batch: usize,
    pub(super) confirms: Arc<Confirms>,
}

/// Commands to send, packed in RESP: written as they are, kept for a
/// resend until their replies are read.
#[derive(Default)]
struct Batch {
    resp: Vec<u8>,
    commands: usize,
    /// The messages' ids, kept while a router waits for confirmations.
    ids: Vec<MessageId>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.commands == 0
    }

    fn clear(&mut self) {
        self.resp.clear();
        self.commands = 0;
        self.ids.clear();
    }

    /// Moves `other`'s commands after this batch's.
    fn append(&mut self, other: &mut Batch) {
        self.resp.extend_from_slice(&other.resp);
        self.commands += other.commands;
        self.ids.append(&mut other.ids);
        other.clear();
    }
}

impl Sink {
    /// A command's RESP up to its last argument, when that is the same for
    /// every message: the whole `XADD` but the envelope; for `PUBLISH`, the
    /// array header and the command name (the channel follows).
    fn head(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Sink::Publish { .. } => {
                out.extend_from_slice(b"*3\r\n");
                bulk(&mut out, &[b"PUBLISH"]);
            }
            Sink::Stream { key, maxlen } => {
                out.extend_from_slice(b"*8\r\n");
                let maxlen = itoa::Buffer::new().format(*maxlen).to_owned();
                for arg in ["XADD", key, "MAXLEN", "~", &maxlen, "*", FIELD] {
                    bulk(&mut out, &[arg.as_bytes()]);
                }
            }
        }
        out
    }

    /// Appends the command that sends `envelope` (of a message on `topic`)
    /// to `out`; `head` is [`head`](Self::head)'s.
    fn pack(&self, head: &[u8], topic: &Topic, envelope: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(head);
        if let Sink::Publish { prefix } = self {
            bulk(out, &[prefix.as_bytes(), topic.as_str().as_bytes()]);
        }
        bulk(out, &[envelope]);
    }
}

/// The writer's reusable buffers.
struct Pack<T> {
    /// The messages of the batch being filled, released together once it
    /// is written rather than one by one as they are encoded. A message is
    /// allocated by the publishing thread and freed here; glibc's malloc
    /// takes the allocating arena's lock for that, and freeing in step with
    /// the publisher's allocations made the two threads fight for it (futex
    /// waits inside `free` in the writer's profile): a burst after each
    /// write took the bridge from 1.20 µs to 0.86 µs per message
    /// (`perf-reports/redis.md`).
    taken: Vec<Arc<Message<T>>>,
    /// [`Sink::head`].
    head: Vec<u8>,
    /// One message's envelope, before it is packed.
    envelope: Vec<u8>,
}

/// What [`Writer::fill`] found.
enum Fill {
    /// The outbox is open: messages taken (maybe none, if nothing came in
    /// time).
    Open,
    /// The outbox is empty for good: the bus shut down, or the adapter is
    /// stopping.
    Closed,
}

impl<T: Serialize + Send + Sync + 'static> Writer<T> {
    /// Sends the outbox's messages in pipelines of up to `batch`, two in
    /// flight: while Redis works through one, the next is taken and
    /// encoded. A failed pipeline is sent again (with the one after it)
    /// once a new connection is up: its receivers may see a message twice
    /// and drop the copy by id.
    pub(super) fn run(self) {
        let c = &self.shared.counts;
        let mut con: Option<WireConnection> = None;
        let mut pack = Pack {
            head: self.sink.head(),
            envelope: Vec::new(),
            taken: Vec::new(),
        };
        let mut pending = Batch::default();
        let mut in_flight = Batch::default();
        let mut failures = 0u32;
        let mut closed = false;
        loop {
            let stopping = self.shared.stop.is_stopped();
            if stopping && self.shared.deadline().is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if pending.is_empty() && !closed {
                // Wait for messages only when nothing is in flight.
                let wait = in_flight.is_empty() && !stopping;
                if let Fill::Closed = self.fill(&mut pack, &mut pending, wait, stopping) {
                    closed = true;
                }
            }
            if !in_flight.is_empty() {
                match self.finish(&mut con, &in_flight) {
                    Ok(nobody) => {
                        c.outbound_failing.store(false, Ordering::Relaxed);
                        self.confirms.written(in_flight.ids.drain(..));
                        add(&c.published, in_flight.commands as u64);
                        add(&c.no_subscribers, nobody);
                        in_flight.clear();
                        failures = 0;
                    }
                    Err(e) => {
                        self.failed(&mut con, &e, &mut failures);
                        // Everything again, in order.
                        in_flight.append(&mut pending);
                        std::mem::swap(&mut in_flight, &mut pending);
                        continue;
                    }
                }
            }
            if pending.is_empty() {
                if closed {
                    break;
                }
                continue;
            }
            match self.start(&mut con, &pending) {
                Ok(()) => std::mem::swap(&mut in_flight, &mut pending),
                Err(e) => self.failed(&mut con, &e, &mut failures),
            }
            // The batch is encoded: its messages can go.
            pack.taken.clear();
        }
        // Left behind at the deadline: the batches (already counted as
        // exported; one in flight may have reached Redis) and the outbox.
        let mut left = 0;
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        add(&c.exported, left);
        add(
            &c.unsent,
            left + (pending.commands + in_flight.commands) as u64,
        );
    }

    /// Takes and encodes up to a batch from the outbox; waits for the
    /// first message when `wait`.
    fn fill(&self, pack: &mut Pack<T>, pending: &mut Batch, wait: bool, stopping: bool) -> Fill {
        let first = if wait {
            match self.rx.recv_timeout(POLL) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => return Fill::Open,
                Err(RecvTimeoutError::Closed) => return Fill::Closed,
            }
        } else {
            match self.rx.try_recv() {
                Ok(m) => m,
                // Stopping and empty: flushed.
                Err(TryRecvError::Empty) if !stopping => return Fill::Open,
                Err(_) => return Fill::Closed,
            }
        };
        self.take(first, pack, pending);
        while pending.commands < self.batch {
            match self.rx.try_recv() {
                Ok(m) => self.take(m, pack, pending),
                Err(_) => break,
            }
        }
        Fill::Open
    }

    /// A pipeline failed: drop the connection, note why, wait.
    fn failed(&self, con: &mut Option<WireConnection>, e: &WireError, failures: &mut u32) {
        let c = &self.shared.counts;
        if con.take().is_some() {
            add(&c.reconnects, 1);
        }
        c.outbound_connected.store(false, Ordering::Relaxed);
        c.outbound_failing.store(true, Ordering::Relaxed);
        self.shared.failed("outbound", e);
        *failures = failures.saturating_add(1);
        self.pause(self.io.backoff.delay(*failures));
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

    /// Encodes one outbox message and packs its command into the batch.
    fn take(&self, m: Arc<Message<T>>, pack: &mut Pack<T>, pending: &mut Batch) {
        let c = &self.shared.counts;
        if m.headers().contains(ORIGIN_HEADER) {
            add(&c.not_reexported, 1);
            return;
        }
        add(&c.exported, 1);
        pack.envelope.clear();
        if self
            .codec
            .encode_into(&m, &self.shared.node, &mut pack.envelope)
            .is_err()
        {
            add(&c.encode_failed, 1);
            return;
        }
        self.sink
            .pack(&pack.head, m.topic(), &pack.envelope, &mut pending.resp);
        pending.commands += 1;
        if self.confirms.watching() {
            pending.ids.push(m.id());
        }
        pack.taken.push(m);
    }

    /// Writes the pipeline for `batch` (connecting first if need be);
    /// its replies are read by [`finish`](Self::finish).
    fn start(&self, con: &mut Option<WireConnection>, batch: &Batch) -> Result<(), WireError> {
        let con = match con {
            Some(con) => con,
            None => {
                let fresh =
                    WireConnection::connect(self.io.client.get_connection_info(), self.io.timeout)?;
                self.shared
                    .counts
                    .outbound_connected
                    .store(true, Ordering::Relaxed);
                con.insert(fresh)
            }
        };
        con.send(&batch.resp)
    }

    /// Reads the replies to the pipeline [`start`](Self::start) wrote;
    /// returns how many `PUBLISH`es reached no subscriber.
    fn finish(&self, con: &mut Option<WireConnection>, batch: &Batch) -> Result<u64, WireError> {
        let Some(con) = con.as_mut() else {
            return Err(std::io::Error::from(std::io::ErrorKind::NotConnected).into());
        };
        let mut nobody = 0;
        for _ in 0..batch.commands {
            // An error reply (`LOADING` from a server still reading its
            // append-only file, say) fails the batch: the connection is
            // dropped and everything sent again.
            if let Reply::Int(0) = con.reply()? {
                nobody += 1;
            }
        }
        Ok(nobody)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-packed commands are byte for byte what the `redis` crate
    /// packs for the same arguments.
    #[test]
    fn commands_pack_as_the_client_packs_them() {
        let topic = Topic::parse("orders.eu.created").expect("topic");
        let envelopes: [&[u8]; 3] = [b"", b"\r\n$3\r\n", &[0xff; 300]];
        let publish = Sink::Publish {
            prefix: "tb:".into(),
        };
        let stream = Sink::Stream {
            key: "tb:stream:jobs".into(),
            maxlen: 100_000,
        };
        for envelope in envelopes {
            let mut out = Vec::new();
            publish.pack(&publish.head(), &topic, envelope, &mut out);
            let want = ::redis::cmd("PUBLISH")
                .arg("tb:orders.eu.created")
                .arg(envelope)
                .get_packed_command();
            assert_eq!(out, want);
            let mut out = Vec::new();
            stream.pack(&stream.head(), &topic, envelope, &mut out);
            let want = ::redis::cmd("XADD")
                .arg("tb:stream:jobs")
                .arg("MAXLEN")
                .arg("~")
                .arg(100_000)
                .arg("*")
                .arg(FIELD)
                .arg(envelope)
                .get_packed_command();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn a_batch_appended_keeps_both_in_order() {
        let mut a = Batch::default();
        let mut b = Batch::default();
        a.resp.extend_from_slice(b"first");
        a.commands = 1;
        b.resp.extend_from_slice(b"second");
        b.commands = 2;
        a.append(&mut b);
        assert_eq!((a.resp.as_slice(), a.commands), (&b"firstsecond"[..], 3));
        assert!(b.is_empty() && b.resp.is_empty());
    }
}
