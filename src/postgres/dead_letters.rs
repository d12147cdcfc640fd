//! Dead letters in PostgreSQL (`<schema>.dead_letters`): those the durable
//! queue moves there, and the bus's own through [`PgDeadLetterSink`];
//! queried, requeued, republished and purged with [`PgDeadLetters`].

use std::fmt;
use std::sync::mpsc::{self, Receiver as Inbox, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use postgres::{Client, Config, GenericClient};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::outbound::{add, POLL};
use super::queue::Rows;
use super::types::PgId;
use super::{check_schema, connect, PgError};
use crate::adapter::Backoff;
use crate::envelope::{Codec, ORIGIN_HEADER};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::{BoxError, Bus, DeadLetter, DeadLetterSink, Message, Pattern};

/// Which dead letters a [`LetterQuery`] takes by origin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Source {
    #[default]
    Any,
    /// The bus's own (through the sink).
    Bus,
    /// Those the durable queue of this name gave up on.
    Queue(String),
}

/// Selects dead letters in the table; every condition set must hold.
/// Letters come oldest first (by id), at most `limit` (default 1,000).
///
/// # Examples
///
/// ```
/// use topicbus::postgres::LetterQuery;
/// use topicbus::Pattern;
/// let q = LetterQuery::new()
///     .queue("emails")
///     .reason("max_attempts")
///     .topic(Pattern::parse("mail.#")?)
///     .limit(100);
/// # let _ = q;
/// # Ok::<(), topicbus::TopicError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct LetterQuery {
    from: Source,
    reason: Option<String>,
    topic: Option<Pattern>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    after: i64,
    limit: i64,
}

impl Default for LetterQuery {
    fn default() -> Self {
        Self::new()
    }
}

impl LetterQuery {
    /// Every letter (up to the limit).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// println!("{} dead letters in all", letters.count(&LetterQuery::new())?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Self {
        Self {
            from: Source::Any,
            reason: None,
            topic: None,
            since: None,
            until: None,
            after: 0,
            limit: 1_000,
        }
    }

    /// Only those the durable queue `name` gave up on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let page = letters.query::<String>(&LetterQuery::new().queue("emails").limit(20))?;
    /// for l in &page.letters {
    ///     println!("{} after {} attempts: {:?}", l.message.topic(), l.attempts, l.error);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.from = Source::Queue(name.into());
        self
    }

    /// Only the bus's own letters (stored by a [`PgDeadLetterSink`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let from_bus = letters.count(&LetterQuery::new().bus_only())?; // stored by a PgDeadLetterSink
    /// println!("{from_bus} letters from in-process subscribers");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bus_only(mut self) -> Self {
        self.from = Source::Bus;
        self
    }

    /// Only those given up for `reason` (the queue's `max_attempts`,
    /// `expired`, `forged`, `malformed`, or a bus
    /// [`DeadLetterReason`](crate::DeadLetterReason)'s name).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// use topicbus::DeadLetterReason;
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let forged = letters.count(&LetterQuery::new().reason("forged"))?;
    /// let panicked = letters.count(&LetterQuery::new().reason(DeadLetterReason::Panicked.as_str()))?;
    /// println!("forged: {forged}, handler panics: {panicked}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Only those whose topic `pattern` matches (evaluated in the
    /// database).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// use topicbus::Pattern;
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let eu = letters.count(&LetterQuery::new().topic(Pattern::parse("orders.eu.#")?))?;
    /// println!("{eu} EU orders dead-lettered");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn topic(mut self, pattern: Pattern) -> Self {
        self.topic = Some(pattern);
        self
    }

    /// Only those given up at or after `at`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, SystemTime};
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let last_hour = LetterQuery::new().since(SystemTime::now() - Duration::from_secs(3_600));
    /// println!("{} in the last hour", letters.count(&last_hour)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn since(mut self, at: SystemTime) -> Self {
        self.since = Some(at);
        self
    }

    /// Only those given up before `at`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, SystemTime};
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let month_old = LetterQuery::new().until(SystemTime::now() - Duration::from_secs(30 * 86_400)).limit(10_000);
    /// println!("purged {} letters older than 30 days", letters.purge(&month_old)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn until(mut self, at: SystemTime) -> Self {
        self.until = Some(at);
        self
    }

    /// Only those after letter `id` (the next page).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let mut q = LetterQuery::new().queue("emails").limit(100);
    /// loop {
    ///     let page = letters.query::<String>(&q)?;
    ///     for l in &page.letters {
    ///         println!("#{} {}", l.id, l.message.topic());
    ///     }
    ///     match page.last {
    ///         Some(last) => q = q.after(last),
    ///         None => break,
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn after(mut self, id: i64) -> Self {
        self.after = id;
        self
    }

    /// At most `n` letters.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let first_ten = letters.query::<String>(&LetterQuery::new().limit(10))?;
    /// assert!(first_ten.letters.len() <= 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = i64::try_from(n).unwrap_or(i64::MAX);
        self
    }

    /// The `WHERE` clause over `$1 …$7` and its parameters.
    fn clause(&self) -> (&'static str, Params) {
        let (any, queue) = match &self.from {
            Source::Any => (true, None),
            Source::Bus => (false, None),
            Source::Queue(q) => (false, Some(q.clone())),
        };
        let sql = "($1 OR queue IS NOT DISTINCT FROM $2)
                   AND ($3::text IS NULL OR reason = $3)
                   AND ($4::text IS NULL OR '.' || topic ~ $4)
                   AND ($5::timestamptz IS NULL OR failed_at >= $5)
                   AND ($6::timestamptz IS NULL OR failed_at < $6)
                   AND id > $7";
        (
            sql,
            Params {
                any,
                queue,
                reason: self.reason.clone(),
                topic: self.topic.as_ref().map(topic_regex),
                since: self.since,
                until: self.until,
                after: self.after,
            },
        )
    }
}

struct Params {
    any: bool,
    queue: Option<String>,
    reason: Option<String>,
    topic: Option<String>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    after: i64,
}

impl Params {
    fn refs(&self) -> [&(dyn postgres::types::ToSql + Sync); 7] {
        [
            &self.any,
            &self.queue,
            &self.reason,
            &self.topic,
            &self.since,
            &self.until,
            &self.after,
        ]
    }
}

/// A pattern as a PostgreSQL regular expression over `'.' || topic`:
/// each literal level `\.level` (escaped), `*` one level `\.[^.]+`, `#`
/// any number of levels `(\.[^.]+)*`, anchored.
fn topic_regex(p: &Pattern) -> String {
    let mut re = String::from("^");
    for level in p.as_str().split('.') {
        match level {
            "*" => re.push_str(r"\.[^.]+"),
            "#" => re.push_str(r"(\.[^.]+)*"),
            literal => {
                re.push_str(r"\.");
                for ch in literal.chars() {
                    if !ch.is_ascii_alphanumeric() && ch.is_ascii() {
                        re.push('\\');
                    }
                    re.push(ch);
                }
            }
        }
    }
    re.push('$');
    re
}

/// One stored dead letter.
///
/// # Examples
///
/// ```
/// use topicbus::postgres::StoredLetter;
/// let show = |l: &StoredLetter<String>| {
///     format!("{} {} {:?}: {}", l.id, l.reason, l.error, l.message.payload())
/// };
/// # let _ = show;
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct StoredLetter<T> {
    /// Its row id (increasing in arrival order).
    pub id: i64,
    /// The queue that gave up on it, or `None` for the bus's own.
    pub queue: Option<String>,
    /// The message, as it was published (id, headers, payload …).
    pub message: Message<T>,
    /// Why (`max_attempts`, `expired`, … or a bus reason's name).
    pub reason: String,
    /// The last handler error, when one failed.
    pub error: Option<String>,
    /// The bus error's kind (`transient`, `permanent`, `panic`), for the
    /// bus's own letters.
    pub error_kind: Option<String>,
    /// The bus subscription that gave up (its number), for the bus's own.
    pub subscription: Option<u64>,
    /// Deliveries or handler attempts made.
    pub attempts: u32,
    /// When the first attempt failed.
    pub first_failure: SystemTime,
    /// When it was given up.
    pub failed_at: SystemTime,
    /// The node that gave up on it.
    pub origin: String,
}

/// A page of dead letters, from [`PgDeadLetters::query`].
///
/// # Examples
///
/// ```no_run
/// use topicbus::envelope::Codec;
/// use topicbus::postgres::{LetterQuery, PgDeadLetters};
/// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
/// let page = letters.query::<String>(&LetterQuery::new().limit(50))?;
/// println!("{} letters, {} rows that did not verify", page.letters.len(), page.rejected.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct LetterPage<T> {
    /// The letters that verified, oldest first.
    pub letters: Vec<StoredLetter<T>>,
    /// Ids of rows in the page whose envelope did not verify or decode
    /// (never returned as messages; [`PgDeadLetters::purge`] removes them).
    pub rejected: Vec<i64>,
    /// The last id of the page: pass it to [`LetterQuery::after`] for the
    /// next.
    pub last: Option<i64>,
}

/// Queries and replays the dead letters of a schema, on a connection of
/// its own. Every method does database I/O and blocks.
///
/// # Examples
///
/// ```no_run
/// use topicbus::envelope::Codec;
/// use topicbus::postgres::{LetterQuery, PgDeadLetters};
/// let mut letters = PgDeadLetters::connect("host=/tmp user=postgres", Codec::unsigned())?;
/// let page = letters.query::<String>(&LetterQuery::new().queue("emails"))?;
/// for l in &page.letters {
///     println!("{}: {} ({:?})", l.message.topic(), l.reason, l.error);
/// }
/// // Fixed the mail server: back into the queue, every one of them.
/// let moved = letters.requeue::<String>(&LetterQuery::new().queue("emails").limit(usize::MAX))?;
/// println!("{moved} requeued");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PgDeadLetters {
    db: super::Reading,
}

impl PgDeadLetters {
    /// Connects (`conninfo` as for [`postgres::Config`]) to the letters of
    /// schema `topicbus`, verifying envelopes with `codec`.
    ///
    /// # Errors
    ///
    /// [`PgError::Postgres`] when the connection fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::{Codec, KeyRing};
    /// use topicbus::postgres::PgDeadLetters;
    /// let codec = Codec::signed(KeyRing::new("2026-12", std::env::var("TOPICBUS_KEY")?)?);
    /// let letters = PgDeadLetters::connect("postgresql://ops@db.internal/app", codec)?;
    /// # drop(letters);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(conninfo: &str, codec: Codec) -> Result<Self, PgError> {
        Ok(Self {
            db: super::Reading::connect(conninfo, codec)?,
        })
    }

    /// Uses schema `schema` instead.
    ///
    /// # Errors
    ///
    /// [`PgError::Invalid`] for a name that is not plain lower-case.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// let mut billing = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?.schema("billing")?;
    /// println!("{} in schema billing", billing.count(&LetterQuery::new())?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn schema(mut self, schema: &str) -> Result<Self, PgError> {
        self.db.schema(schema)?;
        Ok(self)
    }

    /// How many letters `query` selects (its limit does not apply).
    ///
    /// # Errors
    ///
    /// [`PgError::Postgres`] when the query fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let n = letters.count(&LetterQuery::new().queue("emails").limit(1))?; // the limit does not apply
    /// println!("{n} email letters");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn count(&mut self, query: &LetterQuery) -> Result<u64, PgError> {
        let (clause, params) = query.clause();
        let n: i64 = self
            .db
            .client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.dead_letters WHERE {clause}",
                    self.db.schema
                ),
                &params.refs(),
            )?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The letters `query` selects, oldest first.
    ///
    /// # Errors
    ///
    /// [`PgError::Postgres`] when the query fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// for l in letters.query::<String>(&LetterQuery::new().reason("max_attempts").limit(20))?.letters {
    ///     println!("{} {:?}: {}", l.id, l.queue, l.message.payload());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn query<T: DeserializeOwned>(
        &mut self,
        query: &LetterQuery,
    ) -> Result<LetterPage<T>, PgError> {
        let rows = select(&mut self.db.client, &self.db.schema, query, false)?;
        let mut page = LetterPage {
            letters: Vec::with_capacity(rows.len()),
            rejected: Vec::new(),
            last: rows.last().map(|r| r.get(0)),
        };
        for row in rows {
            match self.db.codec.decode::<T>(row.get(10)) {
                Ok(d) => page.letters.push(StoredLetter {
                    id: row.get(0),
                    queue: row.get(1),
                    message: d.message,
                    reason: row.get(2),
                    error: row.get(3),
                    error_kind: row.get(4),
                    subscription: row
                        .get::<_, Option<i64>>(5)
                        .and_then(|s| u64::try_from(s).ok()),
                    attempts: u32::try_from(row.get::<_, i32>(6)).unwrap_or(0),
                    first_failure: row.get(7),
                    failed_at: row.get(8),
                    origin: row.get(9),
                }),
                Err(_) => page.rejected.push(row.get(0)),
            }
        }
        Ok(page)
    }

    /// Moves the queue letters `query` selects back into their queues, in
    /// one transaction: visible at once, attempts from zero, with the
    /// priority and expiry their envelopes carry. Letters whose envelope
    /// does not verify or decode as `T`, and the bus's own letters, stay. Returns how many
    /// moved (a message already queued again counts as moved).
    ///
    /// # Errors
    ///
    /// [`PgError::Postgres`] when the database fails (nothing moved).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// // The SMTP server is back: give every email another round of attempts.
    /// let moved = letters.requeue::<String>(&LetterQuery::new().queue("emails").limit(10_000))?;
    /// println!("{moved} back in the queue");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn requeue<T: DeserializeOwned>(&mut self, query: &LetterQuery) -> Result<u64, PgError> {
        let mut tx = self.db.client.transaction()?;
        let rows = select(&mut tx, &self.db.schema, query, true)?;
        let insert = super::queue::enqueue_sql(&self.db.schema);
        let mut moved = Vec::new();
        // Grouped by queue: one insert per queue.
        let mut by_queue: Vec<(String, Rows)> = Vec::new();
        for row in &rows {
            let Some(queue) = row.get::<_, Option<String>>(1) else {
                continue;
            };
            let envelope: Vec<u8> = row.get(10);
            let Ok(d) = self.db.codec.decode::<T>(&envelope) else {
                continue;
            };
            let slot = match by_queue.iter().position(|(q, _)| *q == queue) {
                Some(i) => i,
                None => {
                    by_queue.push((queue, Rows::default()));
                    by_queue.len() - 1
                }
            };
            by_queue[slot].1.push(&d.message, envelope, false);
            moved.push(row.get::<_, i64>(0));
        }
        for (queue, rows) in &by_queue {
            rows.insert(&mut tx, &insert, queue)?;
        }
        let n = tx.execute(
            &format!(
                "DELETE FROM {}.dead_letters WHERE id = ANY($1)",
                self.db.schema
            ),
            &[&moved],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Publishes the letters `query` selects on `bus` (each as the message
    /// it was: same id, headers and payload, marked with
    /// [`ORIGIN_HEADER`] like every message read from another process, so
    /// an adapter exporting from `bus` does not send it out again) and
    /// deletes them, in one transaction; a letter the bus refuses, or
    /// whose envelope does not verify, stays. Returns how many were
    /// published.
    ///
    /// # Errors
    ///
    /// [`PgError::Postgres`] when the database fails: the letters stay,
    /// though some may have been published (at least once).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<String>::builder().build()?;
    /// let _fixed = bus.subscribe("orders.#", |m: &Message<String>| println!("handled {}", m.payload()))?;
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let n = letters.republish(&bus, &LetterQuery::new().bus_only().limit(1_000))?;
    /// println!("{n} letters published again");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn republish<T>(&mut self, bus: &Bus<T>, query: &LetterQuery) -> Result<u64, PgError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let mut tx = self.db.client.transaction()?;
        let rows = select(&mut tx, &self.db.schema, query, true)?;
        let mut done = Vec::new();
        for row in &rows {
            let Ok(d) = self.db.codec.decode::<T>(row.get(10)) else {
                continue;
            };
            // Read from storage, as the adapters' deliveries are: marked,
            // so an exporting adapter on `bus` does not send it out again.
            let mut message = d.message;
            message.set_header(ORIGIN_HEADER, d.origin);
            if bus.publish_message(message).is_ok() {
                done.push(row.get::<_, i64>(0));
            }
        }
        tx.execute(
            &format!(
                "DELETE FROM {}.dead_letters WHERE id = ANY($1)",
                self.db.schema
            ),
            &[&done],
        )?;
        tx.commit()?;
        Ok(done.len() as u64)
    }

    /// Deletes the letters `query` selects (up to its limit); returns how
    /// many.
    ///
    /// # Errors
    ///
    /// [`PgError::Postgres`] when the query fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{LetterQuery, PgDeadLetters};
    /// let mut letters = PgDeadLetters::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let gone = letters.purge(&LetterQuery::new().reason("forged").limit(100_000))?;
    /// println!("{gone} forged rows removed");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn purge(&mut self, query: &LetterQuery) -> Result<u64, PgError> {
        let (clause, params) = query.clause();
        let s = &self.db.schema;
        let mut refs = params.refs().to_vec();
        refs.push(&query.limit);
        Ok(self.db.client.execute(
            &format!(
                "DELETE FROM {s}.dead_letters WHERE id IN (
                     SELECT id FROM {s}.dead_letters WHERE {clause} ORDER BY id LIMIT $8)"
            ),
            &refs,
        )?)
    }
}

/// The letters `query` selects, oldest first; locked for this transaction
/// (skipping those another holds) when `lock`.
fn select(
    client: &mut impl GenericClient,
    schema: &str,
    query: &LetterQuery,
    lock: bool,
) -> Result<Vec<postgres::Row>, PgError> {
    let (clause, params) = query.clause();
    let mut refs = params.refs().to_vec();
    refs.push(&query.limit);
    let lock = if lock { "FOR UPDATE SKIP LOCKED" } else { "" };
    Ok(client.query(
        &format!(
            "SELECT id, queue, reason, error, error_kind, subscription, attempts,
                    first_failure, failed_at, origin, envelope
             FROM {schema}.dead_letters WHERE {clause} ORDER BY id LIMIT $8 {lock}"
        ),
        &refs,
    )?)
}

/// Counters of a [`PgDeadLetterSink`].
///
/// # Examples
///
/// ```
/// let s = topicbus::postgres::SinkStats::default();
/// assert_eq!(s.offered, s.stored + s.refused + s.encode_failed + s.unsent + s.pending);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SinkStats {
    /// Letters the bus handed over.
    pub offered: u64,
    /// Of those, written.
    pub stored: u64,
    /// Refused: the sink's queue was full (the database slow or down); the
    /// bus counts it as a sink error and keeps the letter in memory.
    pub refused: u64,
    /// Not written: the message does not encode.
    pub encode_failed: u64,
    /// Not written: still queued at shutdown's deadline.
    pub unsent: u64,
    /// Waiting to be written now.
    pub pending: u64,
    /// Batch writes that failed (each is tried again).
    pub failed_writes: u64,
}

#[derive(Default)]
struct SinkCounters {
    offered: AtomicU64,
    stored: AtomicU64,
    refused: AtomicU64,
    encode_failed: AtomicU64,
    unsent: AtomicU64,
    failed_writes: AtomicU64,
}

/// One letter ready to write.
struct Letter {
    id: PgId,
    topic: String,
    reason: &'static str,
    error_kind: Option<&'static str>,
    error: Option<String>,
    subscription: Option<i64>,
    attempts: i32,
    first_failure: SystemTime,
    failed_at: SystemTime,
    envelope: Vec<u8>,
}

/// Persists the bus's dead letters in `<schema>.dead_letters` (with a
/// `NULL` queue): a [`DeadLetterSink`] for
/// [`BusBuilder::dead_letter_sink`](crate::BusBuilder::dead_letter_sink).
/// [`store`](DeadLetterSink::store) only encodes the letter and hands it to
/// a bounded queue, so the worker that dead-letters never waits on the
/// database; one writer thread inserts them in batches. While the database
/// is slow or down and the queue is full, letters are refused (the bus
/// counts a sink error and keeps them in memory).
///
/// # Examples
///
/// ```no_run
/// use topicbus::envelope::Codec;
/// use topicbus::postgres::PgDeadLetterSink;
/// use topicbus::Bus;
/// let sink = PgDeadLetterSink::<String>::start("host=/tmp user=postgres", Codec::unsigned(), "topicbus")?;
/// let bus = Bus::<String>::builder().dead_letters(1_000).dead_letter_sink(sink.clone()).build()?;
/// // … later:
/// bus.shutdown(std::time::Duration::from_secs(5))?;
/// println!("{:?}", sink.shutdown(std::time::Duration::from_secs(5)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PgDeadLetterSink<T> {
    tx: crate::sync::Mutex<Option<SyncSender<Letter>>>,
    shared: Arc<super::outbound::Shared<SinkCounters>>,
    codec: Codec,
    node: String,
    thread: crate::sync::Mutex<Option<JoinHandle<()>>>,
    _payload: std::marker::PhantomData<fn(T)>,
}

impl<T> fmt::Debug for PgDeadLetterSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgDeadLetterSink")
            .field("node", &self.node)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Letters the sink holds while the database is slow or down.
const SINK_CAPACITY: usize = 10_000;
/// Letters per insert.
const SINK_BATCH: usize = 500;

impl<T: Serialize + Send + Sync + 'static> PgDeadLetterSink<T> {
    /// Connects, migrates `schema` and starts the writer thread. Blocks
    /// until the schema is ready.
    ///
    /// # Errors
    ///
    /// [`PgError::Invalid`] for a bad schema name; [`PgError::Postgres`]
    /// when the database cannot be reached or migrated;
    /// [`PgError::SchemaTooNew`]; [`PgError::Spawn`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgDeadLetterSink;
    /// use topicbus::Bus;
    /// let sink = PgDeadLetterSink::<String>::start("host=/var/run/postgresql user=app", Codec::unsigned(), "topicbus")?;
    /// let bus = Bus::<String>::builder().dead_letters(10_000).dead_letter_sink(sink).build()?;
    /// # drop(bus);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start(conninfo: &str, codec: Codec, schema: &str) -> Result<Arc<Self>, PgError> {
        check_schema(schema)?;
        let config: Config = conninfo.parse()?;
        let mut client = connect(&config)?;
        super::schema::migrate(&mut client, schema)?;
        let (tx, rx) = mpsc::sync_channel(SINK_CAPACITY);
        let shared = super::outbound::Shared::<SinkCounters>::new();
        let node = format!("node-{:016x}", fastrand::u64(..));
        let writer = SinkWriter {
            rx,
            shared: Arc::clone(&shared),
            config,
            sql: format!(
                "INSERT INTO {schema}.dead_letters
                     (queue, msg_id, topic, reason, error_kind, error, subscription, attempts,
                      first_failure, failed_at, origin, envelope)
                 SELECT NULL, u.msg_id, u.topic, u.reason, u.error_kind, u.error,
                        u.subscription, u.attempts, u.first_failure, u.failed_at, $11,
                        u.envelope
                 FROM unnest($1::uuid[], $2::text[], $3::text[],
                     $4::text[], $5::text[], $6::int8[], $7::int4[], $8::timestamptz[],
                     $9::timestamptz[], $10::bytea[])
                     AS u(msg_id, topic, reason, error_kind, error, subscription, attempts,
                          first_failure, failed_at, envelope)"
            ),
            node: node.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("topicbus-pg-dead-letters".into())
            .spawn(move || writer.run(Some(client)))?;
        Ok(Arc::new(Self {
            tx: crate::sync::Mutex::new(Some(tx)),
            shared,
            codec,
            node,
            thread: crate::sync::Mutex::new(Some(thread)),
            _payload: std::marker::PhantomData,
        }))
    }
}

impl<T> PgDeadLetterSink<T> {
    /// The counters now.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgDeadLetterSink;
    /// let sink = PgDeadLetterSink::<String>::start("host=/var/run/postgresql user=app", Codec::unsigned(), "topicbus")?;
    /// let s = sink.stats();
    /// println!("stored {} of {} (pending {}, refused {})", s.stored, s.offered, s.pending, s.refused);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> SinkStats {
        let c = &self.shared.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let offered = get(&c.offered);
        let (stored, refused, encode_failed, unsent) = (
            get(&c.stored),
            get(&c.refused),
            get(&c.encode_failed),
            get(&c.unsent),
        );
        SinkStats {
            offered,
            stored,
            refused,
            encode_failed,
            unsent,
            pending: offered.saturating_sub(stored + refused + encode_failed + unsent),
            failed_writes: get(&c.failed_writes),
        }
    }

    /// The last database error the writer saw, if any.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgDeadLetterSink;
    /// let sink = PgDeadLetterSink::<String>::start("host=/var/run/postgresql user=app", Codec::unsigned(), "topicbus")?;
    /// if let Some(e) = sink.last_error() {
    ///     eprintln!("dead-letter sink: {e}");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn last_error(&self) -> Option<String> {
        self.shared.control.last_error()
    }

    /// Stops taking letters, writes those queued until `timeout`, joins
    /// the writer and returns the final counters. Blocks.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgDeadLetterSink;
    /// use topicbus::Bus;
    /// let sink = PgDeadLetterSink::<String>::start("host=/var/run/postgresql user=app", Codec::unsigned(), "topicbus")?;
    /// let bus = Bus::<String>::builder().dead_letters(1_000).dead_letter_sink(sink.clone()).build()?;
    /// bus.shutdown(Duration::from_secs(5))?; // first the bus: no more letters
    /// let last = sink.shutdown(Duration::from_secs(5));
    /// assert_eq!(last.unsent, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(&self, timeout: Duration) -> SinkStats {
        self.tx.lock().take();
        self.shared.control.begin_stop(timeout);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        self.shared.control.finished();
        self.stats()
    }
}

impl<T> Drop for PgDeadLetterSink<T> {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(1));
    }
}

impl<T: Serialize + Send + Sync + 'static> DeadLetterSink<T> for PgDeadLetterSink<T> {
    fn store(&self, letter: &DeadLetter<T>) -> Result<(), BoxError> {
        let c = &self.shared.counts;
        add(&c.offered, 1);
        let envelope = match self.codec.encode(&letter.message, &self.node) {
            Ok(e) => e,
            Err(e) => {
                add(&c.encode_failed, 1);
                return Err(Box::new(e));
            }
        };
        let row = Letter {
            id: PgId(letter.message.id()),
            topic: letter.message.topic().as_str().to_owned(),
            reason: letter.reason.as_str(),
            error_kind: letter.error.as_ref().map(|e| e.kind.as_str()),
            error: letter.error.as_ref().map(|e| e.message.clone()),
            subscription: letter
                .subscription
                .and_then(|s| i64::try_from(s.get()).ok()),
            attempts: i32::try_from(letter.attempts).unwrap_or(i32::MAX),
            first_failure: letter.first_failure,
            failed_at: letter.last_failure,
            envelope,
        };
        let sent = match self.tx.lock().as_ref() {
            Some(tx) => tx.try_send(row),
            None => Err(TrySendError::Disconnected(row)),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                add(&c.refused, 1);
                Err("the dead-letter sink is full: the database is slow or down".into())
            }
            Err(TrySendError::Disconnected(_)) => {
                add(&c.refused, 1);
                Err("the dead-letter sink is shut down".into())
            }
        }
    }
}

/// The sink's writer thread.
struct SinkWriter {
    rx: Inbox<Letter>,
    shared: Arc<super::outbound::Shared<SinkCounters>>,
    config: Config,
    sql: String,
    node: String,
}

impl SinkWriter {
    fn run(self, client: Option<Client>) {
        let c = &self.shared.counts;
        let backoff = Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(5),
        };
        let mut client = client;
        let mut batch: Vec<Letter> = Vec::with_capacity(SINK_BATCH);
        let mut failures = 0u32;
        let mut closed = false;
        loop {
            let control = &self.shared.control;
            if control.stop.is_stopped() && control.past_deadline() {
                break;
            }
            if batch.is_empty() {
                if closed {
                    break;
                }
                match self.rx.recv_timeout(POLL) {
                    Ok(l) => batch.push(l),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => {
                        closed = true;
                        continue;
                    }
                }
                while batch.len() < SINK_BATCH {
                    match self.rx.try_recv() {
                        Ok(l) => batch.push(l),
                        Err(_) => break,
                    }
                }
            }
            let result = match client.as_mut() {
                Some(cl) => self.write(cl, &batch),
                None => connect(&self.config)
                    .map_err(PgError::from)
                    .and_then(|mut cl| {
                        let r = self.write(&mut cl, &batch);
                        client = Some(cl);
                        r
                    }),
            };
            match result {
                Ok(()) => {
                    add(&c.stored, batch.len() as u64);
                    batch.clear();
                    failures = 0;
                }
                Err(e) => {
                    add(&c.failed_writes, 1);
                    client = None;
                    control.failed("dead letters", &e, &mut failures, backoff);
                }
            }
        }
        let mut left = batch.len() as u64;
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        add(&c.unsent, left);
    }

    fn write(&self, client: &mut Client, batch: &[Letter]) -> Result<(), PgError> {
        let ids: Vec<PgId> = batch.iter().map(|l| l.id).collect();
        let topics: Vec<&str> = batch.iter().map(|l| l.topic.as_str()).collect();
        let reasons: Vec<&str> = batch.iter().map(|l| l.reason).collect();
        let kinds: Vec<Option<&str>> = batch.iter().map(|l| l.error_kind).collect();
        let errors: Vec<Option<&str>> = batch.iter().map(|l| l.error.as_deref()).collect();
        let subs: Vec<Option<i64>> = batch.iter().map(|l| l.subscription).collect();
        let attempts: Vec<i32> = batch.iter().map(|l| l.attempts).collect();
        let first: Vec<SystemTime> = batch.iter().map(|l| l.first_failure).collect();
        let last: Vec<SystemTime> = batch.iter().map(|l| l.failed_at).collect();
        let envelopes: Vec<&[u8]> = batch.iter().map(|l| l.envelope.as_slice()).collect();
        client.execute(
            &self.sql,
            &[
                &ids, &topics, &reasons, &kinds, &errors, &subs, &attempts, &first, &last,
                &envelopes, &self.node,
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_become_anchored_level_regexes() {
        let re = |p: &str| topic_regex(&Pattern::parse(p).unwrap());
        assert_eq!(re("a.b"), r"^\.a\.b$");
        assert_eq!(re("a.*"), r"^\.a\.[^.]+$");
        assert_eq!(re("#"), r"^(\.[^.]+)*$");
        assert_eq!(re("a.#.z"), r"^\.a(\.[^.]+)*\.z$");
        assert_eq!(re("a-b.c_d"), r"^\.a\-b\.c\_d$");
    }
}
