//! The durable queue: a lease queue in one table, many named queues. Local
//! messages are enqueued in batches from a bounded outbox (or inside the
//! caller's transaction); consumers claim batches with `FOR UPDATE SKIP
//! LOCKED`, publish them on their bus, and settle each row by its local
//! outcomes: delete, retry later, or move to the dead letters.

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::outbound::{self, add, outbound_setters, Health, Outbound, POLL};
use super::schema::migrate;
use super::types::PgId;
use super::{connect, PgError};
use crate::adapter::{Backoff, Window};
use crate::bus::Tracked;
use crate::envelope::{Codec, ORIGIN_HEADER};
use crate::route::Confirms;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::{
    Bus, Confirmation, DeadLetterReason, Message, Outcome, OverflowPolicy, Receiver, WeakBus,
};

/// The longest queue name, in bytes.
///
/// # Examples
///
/// ```
/// use topicbus::envelope::Codec;
/// use topicbus::postgres::{PgError, PgQueue, MAX_QUEUE_NAME};
/// use topicbus::Bus;
/// let bus = Bus::<String>::builder().workers(1).build()?;
/// let name = "q".repeat(MAX_QUEUE_NAME + 1);
/// let refused = PgQueue::builder("host=/nonexistent", Codec::unsigned(), name).start(&bus);
/// assert!(matches!(refused, Err(PgError::Invalid(_)))); // checked before connecting
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const MAX_QUEUE_NAME: usize = 200;

/// Counters of one [`PgQueue`], read without stopping it.
///
/// On the producing side every message taken from the outbox ends in one
/// of `enqueued`, `duplicates`, `encode_failed` or `unsent`; on the
/// consuming side every claimed row in one of `acked`, `retried`,
/// `released`, `dead_lettered` or `unsettled`.
///
/// # Examples
///
/// ```
/// let s = topicbus::postgres::QueueStats::default();
/// assert_eq!(s.exported, s.enqueued + s.duplicates + s.encode_failed + s.unsent);
/// assert_eq!(s.claimed, s.acked + s.retried + s.released + s.dead_lettered + s.unsettled);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Local messages taken from the outbox to enqueue.
    pub exported: u64,
    /// Of those, committed as new rows.
    pub enqueued: u64,
    /// Already queued (same id in the same queue): not enqueued again.
    pub duplicates: u64,
    /// Not enqueued: the payload does not serialize or is over the limit.
    pub encode_failed: u64,
    /// Not enqueued: left in the outbox or the unwritten batch at
    /// shutdown's deadline.
    pub unsent: u64,
    /// Dropped by the outbox's overflow policy while the database was slow
    /// or down.
    pub outbox_dropped: u64,
    /// Waiting in the outbox now.
    pub outbox_depth: usize,
    /// Rows leased by this node's consumers.
    pub claimed: u64,
    /// Of those, published on the local bus.
    pub delivered: u64,
    /// Deleted: every local subscription settled the message (handled, or
    /// given up on by the bus's own policies), or this consumer had
    /// already handled it (`seen_again`).
    pub acked: u64,
    /// A local handler failed (or no subscription matched): visible again
    /// after the retry backoff.
    pub retried: u64,
    /// Refused locally without a handler failure (a full mailbox, a paused
    /// or closing bus): visible again, the attempt not counted.
    pub released: u64,
    /// Moved to the dead letters: out of attempts, expired, forged or
    /// malformed.
    pub dead_lettered: u64,
    /// Of the dead letters, expired before delivery.
    pub expired: u64,
    /// Of the dead letters, envelopes that failed the codec's signature
    /// check.
    pub forged: u64,
    /// Of the dead letters, rows that are not valid envelopes.
    pub malformed: u64,
    /// Handled before by this consumer (within its window): acknowledged
    /// without delivering again.
    pub seen_again: u64,
    /// Left to their lease: the local outcomes did not all come within
    /// the handler timeout, the lease was lost, or the settling write
    /// failed. Another delivery follows when the lease runs out.
    pub unsettled: u64,
    /// Times the leases of a batch still being handled were extended.
    pub lease_extensions: u64,
    /// Notifications that woke a consumer.
    pub wakeups: u64,
    /// Batch writes (enqueue) that failed; each is tried again.
    pub failed_writes: u64,
    /// Connections lost and made again.
    pub reconnects: u64,
    /// The producer connection is up (or there is nothing to export).
    pub producer_connected: bool,
    /// Every consumer connection is up (or this node does not consume).
    pub consumer_connected: bool,
}

#[derive(Default)]
struct Counters {
    exported: AtomicU64,
    enqueued: AtomicU64,
    duplicates: AtomicU64,
    encode_failed: AtomicU64,
    unsent: AtomicU64,
    claimed: AtomicU64,
    delivered: AtomicU64,
    acked: AtomicU64,
    retried: AtomicU64,
    released: AtomicU64,
    dead_lettered: AtomicU64,
    expired: AtomicU64,
    forged: AtomicU64,
    malformed: AtomicU64,
    seen_again: AtomicU64,
    unsettled: AtomicU64,
    lease_extensions: AtomicU64,
    wakeups: AtomicU64,
    failed_writes: AtomicU64,
    reconnects: AtomicU64,
    producer_down: AtomicBool,
    /// Consumer threads without a connection.
    consumers_down: AtomicU64,
}

type Shared = outbound::Shared<Counters>;

/// The link that is down, if one is.
fn down(c: &Counters) -> Option<&'static str> {
    if c.producer_down.load(Ordering::Relaxed) {
        Some("producer disconnected")
    } else if c.consumers_down.load(Ordering::Relaxed) > 0 {
        Some("consumer disconnected")
    } else {
        None
    }
}

/// The statements of one queue, its schema and name filled in.
#[derive(Clone)]
struct Sql {
    schema: String,
    queue: String,
    /// The `LISTEN`/`NOTIFY` channel of the queue.
    channel: String,
}

impl Sql {
    fn new(schema: &str, queue: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            queue: queue.to_owned(),
            channel: channel(schema, queue),
        }
    }

    fn enqueue(&self) -> String {
        enqueue_sql(&self.schema)
    }

    fn claim(&self) -> String {
        format!(
            "WITH c AS MATERIALIZED (
                 SELECT msg_id FROM {s}.queue
                 WHERE queue = $1 AND visible_at <= now()
                 ORDER BY priority, visible_at, msg_id
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             UPDATE {s}.queue q
             SET visible_at = now() + $3::int8 * interval '1 millisecond',
                 attempts = q.attempts + 1
             FROM c WHERE q.queue = $1 AND q.msg_id = c.msg_id
             RETURNING q.msg_id, q.attempts, q.priority,
                       coalesce(q.expires_at <= now(), false), q.envelope",
            s = self.schema
        )
    }

    /// When the next row of the queue becomes visible, in milliseconds
    /// from now (one index probe per priority).
    fn next_visible(&self) -> String {
        format!(
            "SELECT (extract(epoch FROM min(v) - now()) * 1000)::int8 FROM (
                 SELECT (SELECT visible_at FROM {s}.queue
                         WHERE queue = $1 AND priority = p
                         ORDER BY visible_at LIMIT 1) AS v
                 FROM unnest('{{0,1,2}}'::int2[]) AS p) AS n",
            s = self.schema
        )
    }

    fn ack(&self) -> String {
        format!(
            "DELETE FROM {}.queue WHERE queue = $1 AND msg_id = ANY($2)",
            self.schema
        )
    }

    fn extend(&self) -> String {
        format!(
            "UPDATE {}.queue q SET visible_at = now() + $4::int8 * interval '1 millisecond'
             FROM unnest($2::uuid[], $3::int4[]) AS u(id, n)
             WHERE q.queue = $1 AND q.msg_id = u.id AND q.attempts = u.n",
            self.schema
        )
    }

    fn retry(&self) -> String {
        format!(
            "UPDATE {}.queue q
             SET visible_at = now() + u.delay * interval '1 millisecond',
                 last_error = coalesce(u.error, q.last_error),
                 attempts = q.attempts - u.refund
             FROM unnest($2::uuid[], $3::int4[], $4::int8[], $5::text[], $6::int4[])
                  AS u(id, n, delay, error, refund)
             WHERE q.queue = $1 AND q.msg_id = u.id AND q.attempts = u.n",
            self.schema
        )
    }

    fn bury(&self) -> String {
        format!(
            "WITH m AS (
                 DELETE FROM {s}.queue q
                 USING unnest($2::uuid[], $3::int4[], $4::text[], $5::text[])
                       AS u(id, n, reason, error)
                 WHERE q.queue = $1 AND q.msg_id = u.id AND q.attempts = u.n
                 RETURNING q.msg_id, q.topic, q.attempts, q.last_error, q.envelope,
                           u.reason, u.error)
             INSERT INTO {s}.dead_letters
                 (queue, msg_id, topic, reason, error, attempts, first_failure, origin, envelope)
             SELECT $1, msg_id, topic, reason, coalesce(error, last_error), attempts, now(), $6,
                    envelope
             FROM m",
            s = self.schema
        )
    }

    fn heartbeat(&self) -> String {
        format!(
            "INSERT INTO {}.consumers (queue, consumer) VALUES ($1, $2)
             ON CONFLICT (queue, consumer) DO UPDATE SET last_seen = now()",
            self.schema
        )
    }
}

/// Inserts [`Rows`] into a queue of `schema`: `$1` the queue, the rest
/// the columns; a message already queued there is left alone.
pub(super) fn enqueue_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}.queue (queue, msg_id, topic, priority, visible_at, expires_at, envelope)
         SELECT $1, u.id, u.topic, u.priority, coalesce(u.visible_at, now()), u.expires_at,
                u.envelope
         FROM unnest($2::uuid[], $3::text[], $4::int2[], $5::timestamptz[],
                     $6::timestamptz[], $7::bytea[])
              AS u(id, topic, priority, visible_at, expires_at, envelope)
         ON CONFLICT DO NOTHING"
    )
}

/// The notification channel of `queue` in `schema`: a stable 64-bit FNV-1a
/// hash, so any queue name gives a short, plain identifier.
fn channel(schema: &str, queue: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes().chain([0]).chain(queue.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("tbq_{h:016x}")
}

fn check_queue(queue: &str) -> Result<(), PgError> {
    if queue.is_empty() || queue.len() > MAX_QUEUE_NAME || queue.chars().any(char::is_control) {
        return Err(PgError::Invalid(
            "queue names are 1 to 200 bytes without control characters",
        ));
    }
    Ok(())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The database priority of a message: 0 high, 1 normal, 2 low.
fn priority(m: &Message<impl Sized>) -> i16 {
    m.priority().lane() as i16
}

/// Configures and starts a [`PgQueue`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use topicbus::envelope::Codec;
/// use topicbus::postgres::PgQueue;
/// # let bus = topicbus::Bus::<String>::builder().build()?;
/// let queue = PgQueue::builder("host=/tmp user=postgres", Codec::unsigned(), "emails")
///     .export("mail.#")
///     .consume()
///     .lease(Duration::from_secs(60))
///     .max_attempts(8)
///     .retry_backoff(Duration::from_secs(1), Duration::from_secs(300))
///     .start(&bus)?;
/// println!("{:?}", queue.stats());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct QueueBuilder {
    out: Outbound,
    queue: String,
    consume: bool,
    consumer: Option<String>,
    consumers: usize,
    claim: usize,
    lease: Duration,
    max_attempts: u32,
    retry: Backoff,
    handler_timeout: Duration,
    poll: Duration,
    notify_every: Duration,
    heartbeat: Duration,
    dedup: usize,
}

impl fmt::Debug for QueueBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("queue", &self.queue)
            .field("schema", &self.out.schema)
            .field("export", &self.out.export)
            .field("consume", &self.consume)
            .finish_non_exhaustive()
    }
}

impl QueueBuilder {
    outbound_setters!(
        batch: "1,000 and 5 ms",
        outbox: "(default: drop the new message, counted in [`QueueStats::outbox_dropped`], so publishers never wait on the database; [`OverflowPolicy::Block`] makes them wait instead, and [`PgQueue::publish_in`] never drops).",
        new: "PgQueue::builder(\"host=/var/run/postgresql user=app\", Codec::unsigned(), \"jobs\")"
    );

    /// Consumes the queue: this node takes a share of its messages (the
    /// queue name is the consumer group) and publishes them on its bus.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<String>::builder().build()?;
    /// // Every worker process runs this: each job is handled by one of them.
    /// let _s = bus.subscribe("jobs.#", |m: &Message<String>| println!("run {}", m.payload()))?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs").consume().start(&bus)?;
    /// # drop(queue);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn consume(mut self) -> Self {
        self.consume = true;
        self
    }

    /// The consumer's name in the heartbeat table (default: the node id).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs")
    ///     .consume()
    ///     .consumer_name("worker-eu-1")
    ///     .start(&bus)?;
    /// assert!(queue.consumers(Duration::from_secs(30))?.iter().any(|c| c.name == "worker-eu-1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// Consumer threads, each with its own connection (default 1): more
    /// overlap the database round trips of one batch with the handlers of
    /// another.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().workers(8).build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs")
    ///     .consume()
    ///     .consumers(4) // four connections claiming in turn
    ///     .start(&bus)?;
    /// # drop(queue);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn consumers(mut self, n: usize) -> Self {
        self.consumers = n;
        self
    }

    /// Rows claimed per statement (default 500).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "renders")
    ///     .consume()
    ///     .claim(10) // slow handlers: claim few, leave the rest to other consumers
    ///     .start(&bus)?;
    /// # drop(queue);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim(mut self, rows: usize) -> Self {
        self.claim = rows;
        self
    }

    /// How long a claimed row stays invisible to other consumers (default
    /// 30 s). While its handlers run, the consumer extends the lease every
    /// third of it; a consumer that dies leaves the lease to run out, and
    /// the row is delivered again (attempts count up).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs")
    ///     .consume()
    ///     .lease(Duration::from_secs(10)) // a dead consumer's rows come back after 10 s
    ///     .start(&bus)?;
    /// # drop(queue);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// A message whose handlers failed on this many deliveries moves to
    /// the dead letters (default 5).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters, PgQueue};
    /// use topicbus::Bus;
    /// let db = "host=/var/run/postgresql user=app";
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder(db, Codec::unsigned(), "emails").consume().max_attempts(3).start(&bus)?;
    /// let mut letters = PgDeadLetters::connect(db, Codec::unsigned())?;
    /// println!("gave up on {}", letters.count(&LetterQuery::new().queue("emails").reason("max_attempts"))?);
    /// # drop(queue);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// After a failed delivery the row becomes visible again after a full
    /// jitter backoff from `base` doubling up to `cap` per attempt (default
    /// 1 s to 5 min).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "webhooks")
    ///     .consume()
    ///     .retry_backoff(Duration::from_secs(10), Duration::from_secs(3_600)) // a partner down for hours
    ///     .max_attempts(12)
    ///     .start(&bus)?;
    /// # drop(queue);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn retry_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.retry = Backoff { base, cap };
        self
    }

    /// How long a consumer waits for the local outcomes of a batch,
    /// extending its leases, before it leaves the rest to their leases
    /// (default 5 min).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs")
    ///     .consume()
    ///     .handler_timeout(Duration::from_secs(60)) // then the rest go back by their leases
    ///     .start(&bus)?;
    /// # drop(queue);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// An idle consumer looks for work at least this often even when no
    /// notification comes (default 1 s): the fallback when one is missed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs")
    ///     .consume()
    ///     .poll_interval(Duration::from_secs(5)) // fewer idle queries; NOTIFY still wakes it at once
    ///     .start(&bus)?;
    /// # drop(queue);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// The writer sends a payload-free `NOTIFY` after an enqueue at most
    /// this often (default 20 ms; one owed is sent when the time comes).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs")
    ///     .export("jobs.#")
    ///     .notify_every(Duration::from_millis(100)) // at most ten wake-ups a second
    ///     .start(&bus)?;
    /// # drop(queue);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn notify_every(mut self, every: Duration) -> Self {
        self.notify_every = every;
        self
    }

    /// How often a consumer records that it is alive (default 5 s).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs")
    ///     .consume()
    ///     .heartbeat(Duration::from_secs(1))
    ///     .start(&bus)?;
    /// println!("alive: {}", queue.consumers(Duration::from_secs(3))?.len());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// How many handled message ids a consumer remembers to acknowledge a
    /// redelivery without handling it again (default 65,536).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs")
    ///     .consume()
    ///     .dedup_window(1 << 20)
    ///     .start(&bus)?;
    /// println!("redeliveries acknowledged unhandled: {}", queue.stats().duplicates);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dedup_window(mut self, ids: usize) -> Self {
        self.dedup = ids;
        self
    }

    fn check(&self) -> Result<(), PgError> {
        self.out.check()?;
        check_queue(&self.queue)?;
        let positive = [self.lease, self.handler_timeout, self.poll, self.heartbeat];
        if self.claim == 0
            || self.consumers == 0
            || self.max_attempts == 0
            || positive.iter().any(Duration::is_zero)
        {
            return Err(PgError::Invalid(
                "claim, consumers, attempts and every interval must be positive",
            ));
        }
        if self.lease < Duration::from_millis(30) {
            return Err(PgError::Invalid("the lease must be at least 30 ms"));
        }
        Ok(())
    }

    /// Connects, migrates the schema, subscribes the outbox and starts the
    /// writer and consumer threads. Blocks until the schema is ready.
    ///
    /// # Errors
    ///
    /// [`PgError::Invalid`] for a setting out of range or a bad queue name;
    /// [`PgError::Pattern`] for a bad export pattern;
    /// [`PgError::Postgres`] when the database cannot be reached or
    /// migrated; [`PgError::SchemaTooNew`]; [`PgError::Subscribe`] when the
    /// bus is shut down; [`PgError::Spawn`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{PgError, PgQueue};
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs")
    ///     .export("jobs.#")
    ///     .consume()
    ///     .start(&bus)?; // the schema is migrated when this returns
    /// let zero = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs").claim(0).start(&bus);
    /// assert!(matches!(zero, Err(PgError::Invalid(_))));
    /// # drop(queue);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start<T>(self, bus: &Bus<T>) -> Result<PgQueue<T>, PgError>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.check()?;
        let patterns = self.out.patterns()?;
        let config: Config = self.out.conninfo.parse()?;
        let mut client = connect(&config)?;
        migrate(&mut client, &self.out.schema)?;
        let sql = Sql::new(&self.out.schema, &self.queue);
        let shared = Shared::new();
        // Messages imported from another process (this queue's own
        // deliveries among them) are not enqueued again: no loops.
        let outbox = self.out.outbox(
            bus,
            patterns,
            Some(|m: &Message<T>| !m.headers().contains(ORIGIN_HEADER)),
        )?;
        let mut threads = Vec::new();
        let confirms = Confirms::new();
        if let Some(rx) = &outbox {
            let producer = Producer {
                rx: Arc::clone(rx),
                confirms: Arc::clone(&confirms),
                shared: Arc::clone(&shared),
                config: config.clone(),
                sql: sql.clone(),
                enqueue: sql.enqueue(),
                codec: self.out.codec.clone(),
                node: self.out.node.clone(),
                batch: self.out.batch,
                linger: self.out.linger,
                notify_every: self.notify_every,
                backoff: self.out.backoff,
            };
            let client = Some(client);
            threads.push(
                std::thread::Builder::new()
                    .name("topicbus-pg-enqueue".into())
                    .spawn(move || producer.run(client))?,
            );
        }
        if self.consume {
            let name = self.consumer.unwrap_or_else(|| self.out.node.clone());
            for i in 0..self.consumers {
                let consumer = Consumer {
                    bus: bus.downgrade(),
                    shared: Arc::clone(&shared),
                    config: config.clone(),
                    claim_sql: sql.claim(),
                    sql: sql.clone(),
                    codec: self.out.codec.clone(),
                    node: self.out.node.clone(),
                    name: if self.consumers == 1 {
                        name.clone()
                    } else {
                        format!("{name}-{i}")
                    },
                    claim: i64::try_from(self.claim).unwrap_or(i64::MAX),
                    lease: self.lease,
                    max_attempts: self.max_attempts,
                    retry: self.retry,
                    handler_timeout: self.handler_timeout,
                    poll: self.poll,
                    heartbeat: self.heartbeat,
                    backoff: self.out.backoff,
                    seen: Window::new(self.dedup),
                    last_heartbeat: None,
                };
                shared.counts.consumers_down.fetch_add(1, Ordering::Relaxed);
                threads.push(
                    std::thread::Builder::new()
                        .name("topicbus-pg-consume".into())
                        .spawn(move || consumer.run())?,
                );
            }
        }
        bus.add_health_check(Arc::new(Health {
            shared: Arc::clone(&shared),
            component: format!("postgres queue {}.{}", self.out.schema, self.queue),
            down,
        }));
        Ok(PgQueue {
            shared,
            config,
            sql,
            codec: self.out.codec,
            node: self.out.node,
            outbox,
            confirms,
            threads,
            report: None,
        })
    }
}

/// A durable work queue in PostgreSQL (`<schema>.queue`), shared by every
/// process that names it: each message goes to one of its consumers,
/// **at least once**.
///
/// - **Enqueue**: local messages matching the export patterns pass a
///   bounded outbox to one writer thread that inserts them in batches
///   (`INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING`: a message id
///   is queued once), then sends a throttled, payload-free `NOTIFY`.
///   Messages imported from another process (they carry
///   [`ORIGIN_HEADER`](crate::envelope::ORIGIN_HEADER), as the queue's own
///   deliveries do) are not exported, so nothing loops.
///   [`publish_in`](Self::publish_in) enqueues inside the caller's own
///   transaction instead: the message is queued if and only if that
///   transaction commits (the transactional outbox). A message's priority
///   orders the claim; its delay (`deliver_at`) sets when it becomes
///   visible; its expiry is kept.
/// - **Claim**: each consumer thread `LISTEN`s, then claims batches in
///   priority order with `FOR UPDATE SKIP LOCKED`, leasing them for the
///   lease time and counting the attempt; it sleeps until a notification,
///   the next row's visibility time or the poll interval, whichever comes
///   first, so a missed notification costs at most one poll interval.
/// - **Deliver and settle**: each claimed message is published on the
///   local bus and settled by its outcomes. Handled (or given up on by the
///   bus's own retry and dead-letter policies): deleted, in one batched
///   statement. A handler failed or panicked, or no subscription matched:
///   visible again after the retry backoff, or moved to
///   `<schema>.dead_letters` in the same statement once out of attempts.
///   Refused locally without a failure (a full mailbox, a closing bus):
///   visible again at once, the attempt not counted. Expired, forged and
///   malformed rows go to the dead letters undelivered.
/// - **Leases**: while a batch's handlers run, the consumer extends its
///   leases every third of the lease time and records a heartbeat in
///   `<schema>.consumers`. Every settling statement is fenced by the
///   attempt number, so a consumer whose lease ran out cannot retry or
///   bury a row another consumer now holds. A row is delivered twice only
///   when a lease runs out before it was settled (a dead or stalled
///   consumer, a lost connection); a consumer acknowledges a message it
///   already handled without handling it again.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use topicbus::envelope::{Codec, KeyRing};
/// use topicbus::postgres::PgQueue;
/// use topicbus::{Bus, Message};
///
/// let bus = Bus::<String>::builder().build()?;
/// let codec = Codec::signed(KeyRing::new("2026-11", std::env::var("TOPICBUS_KEY")?)?);
/// // Every process runs this; each email is sent by one of them.
/// let queue = PgQueue::builder("host=/var/run/postgresql user=app", codec, "emails")
///     .export("mail.send")
///     .consume()
///     .start(&bus)?;
/// let _s = bus.subscribe("mail.send", |m: &Message<String>| -> Result<(), String> {
///     println!("sending {}", m.payload());
///     Ok(())
/// })?;
/// bus.publish("mail.send", "hello".to_string())?;
/// queue.shutdown(Duration::from_secs(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PgQueue<T: Send + Sync + 'static> {
    shared: Arc<Shared>,
    config: Config,
    sql: Sql,
    codec: Codec,
    node: String,
    outbox: Option<Arc<Receiver<T>>>,
    confirms: Arc<Confirms>,
    threads: Vec<JoinHandle<()>>,
    report: Option<QueueStats>,
}

impl<T: Send + Sync + 'static> fmt::Debug for PgQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgQueue")
            .field("queue", &self.sql.queue)
            .field("schema", &self.sql.schema)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PgQueue<()> {
    /// Settings for the queue `queue` in the database at `conninfo` (a
    /// libpq-style string or URL), encoding with `codec`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::{Codec, KeyRing};
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let codec = Codec::signed(KeyRing::new("2026-12", std::env::var("TOPICBUS_KEY")?)?);
    /// let queue = PgQueue::builder("postgresql://app@db.internal/app", codec, "invoices").export("invoices.#").start(&bus)?;
    /// # drop(queue);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(
        conninfo: impl Into<String>,
        codec: Codec,
        queue: impl Into<String>,
    ) -> QueueBuilder {
        QueueBuilder {
            out: Outbound::new(
                conninfo.into(),
                codec,
                Duration::from_millis(5),
                OverflowPolicy::DropNewest,
            ),
            queue: queue.into(),
            consume: false,
            consumer: None,
            consumers: 1,
            claim: 500,
            lease: Duration::from_secs(30),
            max_attempts: 5,
            retry: Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(300),
            },
            handler_timeout: Duration::from_secs(300),
            poll: Duration::from_secs(1),
            notify_every: Duration::from_millis(20),
            heartbeat: Duration::from_secs(5),
            dedup: 65_536,
        }
    }
}

/// How many messages a queue holds, from [`PgQueue::depth`].
///
/// # Examples
///
/// ```
/// let d = topicbus::postgres::QueueDepth::default();
/// assert!(d.ready <= d.total);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueDepth {
    /// Every row of the queue: ready, delayed, leased or waiting to retry.
    pub total: u64,
    /// Visible now: the next claim may take them.
    pub ready: u64,
}

/// A consumer of a queue as its heartbeats show it, from
/// [`PgQueue::consumers`].
///
/// # Examples
///
/// ```no_run
/// use std::time::{Duration, SystemTime};
/// use topicbus::envelope::Codec;
/// use topicbus::postgres::PgQueue;
/// use topicbus::Bus;
/// let bus = Bus::<String>::builder().build()?;
/// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs").start(&bus)?;
/// for c in queue.consumers(Duration::from_secs(60))? {
///     let silent = SystemTime::now().duration_since(c.last_seen).unwrap_or_default();
///     println!("{}: last heartbeat {silent:?} ago", c.name);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerInfo {
    /// Its name.
    pub name: String,
    /// When it first recorded a heartbeat.
    pub started_at: SystemTime,
    /// Its latest heartbeat.
    pub last_seen: SystemTime,
}

impl<T: Send + Sync + 'static> PgQueue<T> {
    /// The queue's name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs").start(&bus)?;
    /// assert_eq!(queue.name(), "jobs");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.sql.queue
    }

    /// The outbox as an [`Outlet`](crate::route::Outlet) for a
    /// [`Router`](crate::route::Router), when the queue has one (export
    /// patterns, or [`routable`](QueueBuilder::routable)). It is down from
    /// a failed enqueue until one succeeds; a confirmed message is
    /// committed in the queue. Unlike exported messages, routed ones are
    /// enqueued even when they came from another process.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::route::Router;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs").routable().start(&bus)?;
    /// let router = Router::builder(&bus).to(queue.outlet().ok_or("not routable")?).local(false).build()?;
    /// router.publish("jobs.render", "page 1".to_string())?; // enqueued, not handled locally
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn outlet(&self) -> Option<crate::route::Outlet<T>> {
        outbound::outlet(
            format!("postgres queue {}", self.sql.queue),
            self.outbox.as_ref(),
            &self.confirms,
            &self.shared,
            |c| c.producer_down.load(Ordering::Relaxed),
        )
    }

    /// The counters now.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs").export("jobs.#").consume().start(&bus)?;
    /// let s = queue.stats();
    /// println!("enqueued {} delivered {} acked {} retried {} dead {}", s.enqueued, s.delivered, s.acked, s.retried, s.dead_lettered);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> QueueStats {
        let c = &self.shared.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (outbox_dropped, outbox_depth) = self
            .outbox
            .as_ref()
            .map_or((0, 0), |rx| rx.drops_and_depth());
        QueueStats {
            exported: get(&c.exported),
            enqueued: get(&c.enqueued),
            duplicates: get(&c.duplicates),
            encode_failed: get(&c.encode_failed),
            unsent: get(&c.unsent),
            outbox_dropped,
            outbox_depth,
            claimed: get(&c.claimed),
            delivered: get(&c.delivered),
            acked: get(&c.acked),
            retried: get(&c.retried),
            released: get(&c.released),
            dead_lettered: get(&c.dead_lettered),
            expired: get(&c.expired),
            forged: get(&c.forged),
            malformed: get(&c.malformed),
            seen_again: get(&c.seen_again),
            unsettled: get(&c.unsettled),
            lease_extensions: get(&c.lease_extensions),
            wakeups: get(&c.wakeups),
            failed_writes: get(&c.failed_writes),
            reconnects: get(&c.reconnects),
            producer_connected: !c.producer_down.load(Ordering::Relaxed),
            consumer_connected: c.consumers_down.load(Ordering::Relaxed) == 0,
        }
    }

    /// The last database error a thread saw, if any.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs").consume().start(&bus)?;
    /// if let Some(e) = queue.last_error() {
    ///     eprintln!("queue: {e}");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn last_error(&self) -> Option<String> {
        self.shared.control.last_error()
    }

    /// Enqueues `message` inside the caller's transaction `tx`: it is
    /// queued if and only if `tx` commits (the transactional outbox), with
    /// its priority, its delay (`deliver_at`) and its expiry; consumers
    /// are notified at commit. Returns false when a message with this id is
    /// already queued. Blocks on database I/O.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::{Bus, Message, Topic};
    /// # let bus = Bus::<String>::builder().build()?;
    /// let db = "host=/tmp user=postgres";
    /// let queue = PgQueue::builder(db, Codec::unsigned(), "orders").start(&bus)?;
    /// let mut client = postgres::Client::connect(db, postgres::NoTls)?;
    /// let mut tx = client.transaction()?;
    /// tx.execute("INSERT INTO orders (id) VALUES (42)", &[])?;
    /// let m = Message::builder(Topic::parse("orders.created")?, "42".to_string()).build();
    /// queue.publish_in(&mut tx, &m)?;
    /// tx.commit()?; // the order and its message, or neither
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PgError::Encode`] when the message does not encode (nothing is
    /// written); [`PgError::Postgres`] when the statement fails (the
    /// transaction is then aborted, as any failed statement aborts it).
    pub fn publish_in(
        &self,
        tx: &mut postgres::Transaction<'_>,
        message: &Message<T>,
    ) -> Result<bool, PgError>
    where
        T: Serialize,
    {
        let mut rows = Rows::default();
        rows.push(message, self.codec.encode(message, &self.node)?, true);
        let n = rows.insert(tx, &self.sql.enqueue(), &self.sql.queue)?;
        tx.execute("SELECT pg_notify($1, '')", &[&self.sql.channel])?;
        Ok(n == 1)
    }

    /// How many messages the queue holds now, on a connection of its own.
    /// Blocks on database I/O.
    ///
    /// # Errors
    ///
    /// [`PgError::Postgres`] when the database fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs").start(&bus)?;
    /// let d = queue.depth()?;
    /// println!("{} ready of {} queued", d.ready, d.total);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn depth(&self) -> Result<QueueDepth, PgError> {
        let mut client = connect(&self.config)?;
        let row = client.query_one(
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE visible_at <= now())
                 FROM {}.queue WHERE queue = $1",
                self.sql.schema
            ),
            &[&self.sql.queue],
        )?;
        let n = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(QueueDepth {
            total: n(0),
            ready: n(1),
        })
    }

    /// The consumers whose heartbeat is more recent than `within`, on a
    /// connection of its own. Blocks on database I/O.
    ///
    /// # Errors
    ///
    /// [`PgError::Postgres`] when the database fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs").start(&bus)?;
    /// if queue.consumers(Duration::from_secs(30))?.is_empty() {
    ///     eprintln!("nobody consumes the jobs queue");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn consumers(&self, within: Duration) -> Result<Vec<ConsumerInfo>, PgError> {
        let mut client = connect(&self.config)?;
        let rows = client.query(
            &format!(
                "SELECT consumer, started_at, last_seen FROM {}.consumers
                 WHERE queue = $1 AND last_seen > now() - $2::int8 * interval '1 millisecond'
                 ORDER BY consumer",
                self.sql.schema
            ),
            &[&self.sql.queue, &millis(within)],
        )?;
        Ok(rows
            .iter()
            .map(|r| ConsumerInfo {
                name: r.get(0),
                started_at: r.get(1),
                last_seen: r.get(2),
            })
            .collect())
    }

    /// Stops claiming (a batch being handled is settled first, within the
    /// handler timeout), enqueues what the outbox holds until it is empty
    /// or `timeout` passes, joins the threads and returns the final
    /// counters (`unsent` is what was left). Blocks.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs").export("jobs.#").consume().start(&bus)?;
    /// bus.publish("jobs.render", "page 1".to_string())?;
    /// let last = queue.shutdown(Duration::from_secs(10));
    /// assert_eq!(last.unsent, 0, "the outbox was flushed into the table");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(mut self, timeout: Duration) -> QueueStats {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> QueueStats {
        if let Some(r) = self.report {
            return r;
        }
        self.shared.control.begin_stop(timeout);
        for t in self.threads.drain(..) {
            // A thread that panicked has nothing more to report.
            let _ = t.join();
        }
        self.shared.control.finished();
        let stats = self.stats();
        self.report = Some(stats);
        stats
    }
}

impl<T: Send + Sync + 'static> Drop for PgQueue<T> {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(1));
    }
}

/// Encoded messages, column by column, ready for one `unnest` insert.
#[derive(Default)]
pub(super) struct Rows {
    ids: Vec<PgId>,
    topics: Vec<String>,
    priorities: Vec<i16>,
    visible_at: Vec<Option<SystemTime>>,
    expires_at: Vec<Option<SystemTime>>,
    envelopes: Vec<Vec<u8>>,
}

impl Rows {
    /// Adds `m`; `delayed` keeps its `deliver_at` as the visibility time
    /// (messages from the outbox were delivered on time already).
    pub(super) fn push<T>(&mut self, m: &Message<T>, envelope: Vec<u8>, delayed: bool) {
        self.ids.push(PgId(m.id()));
        self.topics.push(m.topic().as_str().to_owned());
        self.priorities.push(priority(m));
        self.visible_at
            .push(if delayed { m.deliver_at() } else { None });
        self.expires_at.push(m.expires_at());
        self.envelopes.push(envelope);
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn clear(&mut self) {
        self.ids.clear();
        self.topics.clear();
        self.priorities.clear();
        self.visible_at.clear();
        self.expires_at.clear();
        self.envelopes.clear();
    }

    /// Inserts the rows into `queue`; returns how many were new.
    pub(super) fn insert(
        &self,
        client: &mut impl postgres::GenericClient,
        sql: &str,
        queue: &str,
    ) -> Result<u64, postgres::Error> {
        client.execute(
            sql,
            &[
                &queue,
                &self.ids,
                &self.topics,
                &self.priorities,
                &self.visible_at,
                &self.expires_at,
                &self.envelopes,
            ],
        )
    }
}

/// The enqueueing side: the outbox drained in batches by one thread.
struct Producer<T: Send + Sync + 'static> {
    rx: Arc<Receiver<T>>,
    confirms: Arc<Confirms>,
    shared: Arc<Shared>,
    config: Config,
    sql: Sql,
    enqueue: String,
    codec: Codec,
    node: String,
    batch: usize,
    linger: Duration,
    notify_every: Duration,
    backoff: Backoff,
}

impl<T: Serialize + Send + Sync + 'static> Producer<T> {
    fn run(self, client: Option<Client>) {
        let c = &self.shared.counts;
        let mut client = client;
        let mut rows = Rows::default();
        let mut failures = 0u32;
        let mut closed = false;
        // When the last notification went, and whether one is owed.
        let mut notified: Option<Instant> = None;
        let mut owed = false;
        loop {
            let stopping = self.shared.control.stop.is_stopped();
            if stopping && self.shared.control.past_deadline() {
                break;
            }
            if rows.len() == 0 && !closed {
                closed = self.fill(&mut rows, stopping);
            }
            if owed && notified.is_none_or(|t| t.elapsed() >= self.notify_every) {
                if let Some(cl) = client.as_mut() {
                    if cl
                        .execute("SELECT pg_notify($1, '')", &[&self.sql.channel])
                        .is_ok()
                    {
                        notified = Some(Instant::now());
                        owed = false;
                    }
                }
            }
            if rows.len() == 0 {
                if closed && !owed {
                    break;
                }
                if closed {
                    self.shared.control.stop.wait(POLL.min(self.notify_every));
                }
                continue;
            }
            if client.is_none() {
                match connect(&self.config) {
                    Ok(cl) => {
                        add(&c.reconnects, 1);
                        client = Some(cl);
                    }
                    Err(e) => {
                        c.producer_down.store(true, Ordering::Relaxed);
                        self.shared.control.failed(
                            "queue enqueue",
                            &e.into(),
                            &mut failures,
                            self.backoff,
                        );
                        continue;
                    }
                }
            }
            let Some(cl) = client.as_mut() else { continue };
            match rows.insert(cl, &self.enqueue, &self.sql.queue) {
                Ok(n) => {
                    self.confirms.written(rows.ids.iter().map(|id| id.0));
                    c.producer_down.store(false, Ordering::Relaxed);
                    add(&c.enqueued, n);
                    add(&c.duplicates, rows.len() as u64 - n);
                    rows.clear();
                    failures = 0;
                    owed = true;
                }
                Err(e) => {
                    // Down before counted: whoever sees the failure sees
                    // the queue degraded. The batch is kept and written
                    // again; rows that did land are duplicates then.
                    c.producer_down.store(true, Ordering::Relaxed);
                    add(&c.failed_writes, 1);
                    client = None;
                    self.shared.control.failed(
                        "queue enqueue",
                        &e.into(),
                        &mut failures,
                        self.backoff,
                    );
                }
            }
        }
        let mut left = rows.len() as u64;
        let drained = outbound::drain(&self.rx);
        add(&c.exported, drained);
        left += drained;
        add(&c.unsent, left);
    }

    /// Takes a batch from the outbox; true when it is closed for good.
    fn fill(&self, rows: &mut Rows, stopping: bool) -> bool {
        outbound::fill(&self.rx, self.batch, self.linger, stopping, |m| {
            self.take(&m, rows);
        })
    }

    fn take(&self, m: &Message<T>, rows: &mut Rows) {
        let c = &self.shared.counts;
        add(&c.exported, 1);
        match self.codec.encode(m, &self.node) {
            Ok(envelope) => rows.push(m, envelope, false),
            Err(_) => add(&c.encode_failed, 1),
        }
    }
}

/// One claimed row.
struct Claimed {
    id: PgId,
    attempts: i32,
    expired: bool,
    envelope: Vec<u8>,
}

/// What becomes of a claimed row.
enum Fate {
    /// Delete it.
    Ack,
    /// Visible again after `delay`; `refund` gives the attempt back.
    Retry {
        delay: Duration,
        error: Option<String>,
        refund: bool,
    },
    /// To the dead letters.
    Bury {
        reason: &'static str,
        error: Option<String>,
    },
    /// Leave it to its lease.
    Leave,
}

/// Rows by id, fenced by the attempt that leased them.
#[derive(Default)]
struct Fenced {
    ids: Vec<PgId>,
    attempts: Vec<i32>,
}

impl Fenced {
    fn push(&mut self, row: &Claimed) {
        self.ids.push(row.id);
        self.attempts.push(row.attempts);
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Rows to make visible again, column by column.
#[derive(Default)]
struct Retries {
    rows: Fenced,
    delays: Vec<i64>,
    errors: Vec<Option<String>>,
    refunds: Vec<i32>,
}

/// Rows to move to the dead letters, column by column.
#[derive(Default)]
struct Burials {
    rows: Fenced,
    reasons: Vec<&'static str>,
    errors: Vec<Option<String>>,
}

/// The settling statements of one batch, column by column.
#[derive(Default)]
struct Settle {
    ack: Vec<PgId>,
    retry: Retries,
    bury: Burials,
    expired: u64,
    refunds: u64,
    left: u64,
}

impl Settle {
    /// Rows with a fate.
    fn len(&self) -> usize {
        self.ack.len() + self.retry.rows.len() + self.bury.rows.len() + self.left as usize
    }

    fn add(&mut self, row: &Claimed, fate: Fate) {
        match fate {
            Fate::Ack => self.ack.push(row.id),
            Fate::Retry {
                delay,
                error,
                refund,
            } => {
                let r = &mut self.retry;
                r.rows.push(row);
                r.delays.push(millis(delay));
                r.errors.push(error);
                r.refunds.push(i32::from(refund));
                self.refunds += u64::from(refund);
            }
            Fate::Bury { reason, error } => {
                let b = &mut self.bury;
                b.rows.push(row);
                b.reasons.push(reason);
                b.errors.push(error);
                self.expired += u64::from(reason == "expired");
            }
            Fate::Leave => self.left += 1,
        }
    }
}

/// A delivered row waiting for its local outcomes.
struct Waiting {
    row: Claimed,
    tracked: Tracked,
}

/// The consuming side: one thread, one connection.
struct Consumer<T: Send + Sync + 'static> {
    bus: WeakBus<T>,
    shared: Arc<Shared>,
    config: Config,
    sql: Sql,
    claim_sql: String,
    codec: Codec,
    node: String,
    name: String,
    claim: i64,
    lease: Duration,
    max_attempts: u32,
    retry: Backoff,
    handler_timeout: Duration,
    poll: Duration,
    heartbeat: Duration,
    backoff: Backoff,
    seen: Window,
    last_heartbeat: Option<Instant>,
}

impl<T: DeserializeOwned + Send + Sync + 'static> Consumer<T> {
    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let c = &shared.counts;
        let mut failures = 0u32;
        let mut first = true;
        while !shared.control.stop.is_stopped() {
            let result = connect(&self.config)
                .map_err(PgError::from)
                .and_then(|client| {
                    if !first {
                        add(&c.reconnects, 1);
                    }
                    first = false;
                    c.consumers_down.fetch_sub(1, Ordering::Relaxed);
                    failures = 0;
                    let r = self.session(client);
                    c.consumers_down.fetch_add(1, Ordering::Relaxed);
                    r
                });
            match result {
                Ok(()) => break,
                Err(e) => shared
                    .control
                    .failed("queue consume", &e, &mut failures, self.backoff),
            }
        }
    }

    /// One connection: `LISTEN` first, then claim until stopped, sleeping
    /// when there is nothing to claim.
    fn session(&mut self, mut client: Client) -> Result<(), PgError> {
        client.batch_execute(&format!("LISTEN {}", self.sql.channel))?;
        self.last_heartbeat = None;
        let next_visible = self.sql.next_visible();
        while !self.shared.control.stop.is_stopped() {
            self.beat(&mut client)?;
            let rows = client.query(
                &self.claim_sql,
                &[&self.sql.queue, &self.claim, &millis(self.lease)],
            )?;
            if !rows.is_empty() {
                let mut claimed: Vec<(i16, Claimed)> = rows
                    .iter()
                    .map(|r| {
                        (
                            r.get::<_, i16>(2),
                            Claimed {
                                id: r.get(0),
                                attempts: r.get(1),
                                expired: r.get(3),
                                envelope: r.get(4),
                            },
                        )
                    })
                    .collect();
                // Priority first, then id (time) order within a priority.
                claimed.sort_by_key(|(p, r)| (*p, r.id.0));
                self.process(&mut client, claimed.into_iter().map(|(_, r)| r).collect())?;
                continue;
            }
            // Nothing visible: sleep until a notification, the next row's
            // time, or the poll interval.
            let next: Option<i64> = client.query_one(&next_visible, &[&self.sql.queue])?.get(0);
            let mut wait = self.poll;
            if let Some(ms) = next {
                wait = wait.min(Duration::from_millis(u64::try_from(ms.max(1)).unwrap_or(1)));
            }
            self.sleep(&mut client, wait)?;
        }
        Ok(())
    }

    /// Waits up to `wait` for a notification, in slices so a stop is seen.
    fn sleep(&mut self, client: &mut Client, wait: Duration) -> Result<(), PgError> {
        let until = Instant::now() + wait;
        let mut n = client.notifications();
        // Any that came in while the last statements ran.
        let mut woke = n.iter().count()?;
        while woke == 0 && !self.shared.control.stop.is_stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if n.timeout_iter(left.min(POLL * 2)).next()?.is_some() {
                woke += 1 + n.iter().count()?;
            }
        }
        add(&self.shared.counts.wakeups, woke as u64);
        Ok(())
    }

    fn beat(&mut self, client: &mut Client) -> Result<(), PgError> {
        if self
            .last_heartbeat
            .is_none_or(|t| t.elapsed() >= self.heartbeat)
        {
            client.execute(&self.sql.heartbeat(), &[&self.sql.queue, &self.name])?;
            self.last_heartbeat = Some(Instant::now());
        }
        Ok(())
    }

    /// Delivers a claimed batch, waits for the outcomes (extending the
    /// leases), and settles every row.
    fn process(&mut self, client: &mut Client, rows: Vec<Claimed>) -> Result<(), PgError> {
        let shared = Arc::clone(&self.shared);
        let c = &shared.counts;
        add(&c.claimed, rows.len() as u64);
        let mut settle = Settle::default();
        let mut waiting = Vec::with_capacity(rows.len());
        for row in rows {
            match self.deliver(&row) {
                Ok(tracked) => waiting.push(Waiting { row, tracked }),
                Err(fate) => settle.add(&row, fate),
            }
        }
        let deadline = Instant::now() + self.handler_timeout;
        let mut extend_at = Instant::now() + self.lease / 3;
        let mut done = 0;
        while done < waiting.len() {
            let w = &waiting[done];
            let confirmation = w.tracked.wait(deadline.min(extend_at));
            if confirmation.complete {
                let fate = self.judge(&w.row, &confirmation);
                settle.add(&w.row, fate);
                done += 1;
                continue;
            }
            if Instant::now() >= deadline {
                break;
            }
            if let Err(e) = self.extend(client, &waiting[done..]) {
                // The connection is gone: nothing of the batch is settled.
                add(&c.unsettled, (settle.len() + waiting.len() - done) as u64);
                return Err(e);
            }
            extend_at = Instant::now() + self.lease / 3;
        }
        for w in &waiting[done..] {
            settle.add(&w.row, Fate::Leave);
        }
        self.settle(client, settle)
    }

    /// Publishes a claimed row on the bus, or says what to do instead.
    fn deliver(&mut self, row: &Claimed) -> Result<Tracked, Fate> {
        let c = &self.shared.counts;
        if row.expired {
            return Err(Fate::Bury {
                reason: "expired",
                error: None,
            });
        }
        let decoded = match self.codec.decode::<T>(&row.envelope) {
            Ok(d) => d,
            Err(e) => {
                let reason = if e.is_forgery() {
                    add(&c.forged, 1);
                    "forged"
                } else {
                    add(&c.malformed, 1);
                    "malformed"
                };
                return Err(Fate::Bury {
                    reason,
                    error: Some(e.to_string()),
                });
            }
        };
        if self.seen.contains(decoded.message.id()) {
            add(&c.seen_again, 1);
            return Err(Fate::Ack);
        }
        let refused = Fate::Retry {
            delay: Duration::ZERO,
            error: None,
            refund: true,
        };
        let Some(bus) = self.bus.upgrade() else {
            return Err(refused);
        };
        let mut message = decoded.message;
        message.set_header(ORIGIN_HEADER, decoded.origin);
        match bus.publish_tracked(message) {
            Ok(t) => {
                add(&c.delivered, 1);
                Ok(t)
            }
            Err(_) => Err(refused),
        }
    }

    /// The fate of a delivered row by its local outcomes.
    fn judge(&mut self, row: &Claimed, confirmation: &Confirmation) -> Fate {
        let failed = confirmation
            .deliveries
            .iter()
            .find(|d| matches!(d.outcome, Outcome::Failed | Outcome::Panicked));
        let error = match (failed, confirmation.deliveries.is_empty()) {
            (Some(d), _) => Some(d.detail.clone().unwrap_or_else(|| "handler failed".into())),
            (None, true) => Some("no subscription matched".to_owned()),
            (None, false) => None,
        };
        if let Some(error) = error {
            let attempts = u32::try_from(row.attempts).unwrap_or(u32::MAX);
            if attempts >= self.max_attempts {
                return Fate::Bury {
                    reason: "max_attempts",
                    error: Some(error),
                };
            }
            return Fate::Retry {
                delay: self.retry.delay(attempts.saturating_sub(1)),
                error: Some(error),
                refund: false,
            };
        }
        let refused = confirmation.deliveries.iter().any(|d| {
            matches!(
                d.outcome,
                Outcome::Dropped(_) | Outcome::DeadLettered(DeadLetterReason::Shutdown)
            )
        });
        if refused {
            return Fate::Retry {
                delay: Duration::ZERO,
                error: None,
                refund: true,
            };
        }
        self.seen.insert(confirmation.id);
        Fate::Ack
    }

    /// Extends the leases of rows still being handled; records a heartbeat.
    fn extend(&mut self, client: &mut Client, rows: &[Waiting]) -> Result<(), PgError> {
        let mut fenced = Fenced::default();
        for w in rows {
            fenced.push(&w.row);
        }
        client.execute(
            &self.sql.extend(),
            &[
                &self.sql.queue,
                &fenced.ids,
                &fenced.attempts,
                &millis(self.lease),
            ],
        )?;
        add(&self.shared.counts.lease_extensions, 1);
        self.beat(client)
    }

    /// Writes a batch's fates: at most three statements, each atomic.
    fn settle(&mut self, client: &mut Client, s: Settle) -> Result<(), PgError> {
        let c = &self.shared.counts;
        let q = &self.sql.queue;
        let total = (s.ack.len() + s.retry.rows.len() + s.bury.rows.len()) as u64;
        add(&c.unsettled, s.left);
        let mut written = 0u64;
        let result = (|| -> Result<(), PgError> {
            if !s.ack.is_empty() {
                let n = client.execute(&self.sql.ack(), &[q, &s.ack])?;
                add(&c.acked, n);
                add(&c.unsettled, s.ack.len() as u64 - n);
                written += s.ack.len() as u64;
            }
            if s.retry.rows.len() > 0 {
                let r = &s.retry;
                let (ids, attempts) = (&r.rows.ids, &r.rows.attempts);
                let n = client.execute(
                    &self.sql.retry(),
                    &[q, ids, attempts, &r.delays, &r.errors, &r.refunds],
                )?;
                // Refunded attempts are releases, the rest retries.
                let released = s.refunds.min(n);
                add(&c.released, released);
                add(&c.retried, n - released);
                add(&c.unsettled, r.rows.len() as u64 - n);
                written += r.rows.len() as u64;
            }
            if s.bury.rows.len() > 0 {
                let b = &s.bury;
                let (ids, attempts) = (&b.rows.ids, &b.rows.attempts);
                let n = client.execute(
                    &self.sql.bury(),
                    &[q, ids, attempts, &b.reasons, &b.errors, &self.node],
                )?;
                add(&c.dead_lettered, n);
                add(&c.expired, s.expired.min(n));
                add(&c.unsettled, b.rows.len() as u64 - n);
                written += b.rows.len() as u64;
            }
            Ok(())
        })();
        if result.is_err() {
            // Not written: left to their leases.
            add(&c.unsettled, total - written);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_stable_short_and_distinct() {
        let a = channel("topicbus", "emails");
        assert_eq!(a, channel("topicbus", "emails"));
        assert_eq!(a.len(), 20);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        assert_ne!(a, channel("topicbus", "emails2"));
        assert_ne!(a, channel("topicbu", "semails"), "the separator counts");
        // FNV-1a of the empty input is its offset basis.
        assert_eq!(channel("", "").len(), 20);
    }

    #[test]
    fn queue_names_are_checked() {
        assert!(check_queue("emails").is_ok());
        assert!(check_queue("orders.eu / high").is_ok());
        assert!(check_queue(&"q".repeat(MAX_QUEUE_NAME)).is_ok());
        assert!(check_queue("").is_err());
        assert!(check_queue(&"q".repeat(MAX_QUEUE_NAME + 1)).is_err());
        assert!(check_queue("a\nb").is_err());
    }
}
