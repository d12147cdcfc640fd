//! The archive: chosen topics written to a time-partitioned table by one
//! writer thread with binary `COPY`, deduplicated by message id, dropped by
//! partition past their retention, read back in commit order.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::error::SqlState;
use postgres::types::Type;
use postgres::{Client, Config};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::outbound::{self, add, outbound_setters, Health, Outbound, POLL};
use super::schema::migrate;
use super::types::PgId;
use super::PgError;
use crate::adapter::Backoff;
use crate::envelope::{Codec, Decoded};
use crate::route::Confirms;
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::{Bus, Message, OverflowPolicy, Receiver};

/// How the archive table is split by `published_at` (UTC). Retention drops
/// whole partitions, so it is as fine as the partitions are.
///
/// # Examples
///
/// ```
/// use topicbus::postgres::Partitioning;
/// assert_eq!(Partitioning::default(), Partitioning::Daily);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Partitioning {
    /// One partition per hour: for millions of rows an hour.
    Hourly,
    /// One partition per day.
    #[default]
    Daily,
}

impl Partitioning {
    fn span(self) -> u64 {
        match self {
            Partitioning::Hourly => 3_600,
            Partitioning::Daily => 86_400,
        }
    }

    /// The start (Unix seconds) of the partition holding `t`.
    fn start_of(self, t: SystemTime) -> u64 {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        secs - secs % self.span()
    }

    /// The partition's table name: `archive_pYYYYMMDD[HH]`.
    fn name(self, start: u64) -> String {
        let (y, m, d) = civil_from_days(start / 86_400);
        match self {
            Partitioning::Hourly => {
                format!("archive_p{y:04}{m:02}{d:02}{:02}", start % 86_400 / 3_600)
            }
            Partitioning::Daily => format!("archive_p{y:04}{m:02}{d:02}"),
        }
    }

    /// The partition start a table name stands for (the inverse of
    /// [`name`](Self::name)); `None` for any other table.
    fn parse(self, name: &str) -> Option<u64> {
        let digits = name.strip_prefix("archive_p")?;
        let want = match self {
            Partitioning::Hourly => 10,
            Partitioning::Daily => 8,
        };
        if digits.len() != want || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let num = |r: std::ops::Range<usize>| digits[r].parse::<u64>().ok();
        let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return None;
        }
        let hour = if want == 10 { num(8..10)? } else { 0 };
        let start = days_from_civil(y, m, d) * 86_400 + hour * 3_600;
        (self.name(start) == name).then_some(start)
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The inverse of [`civil_from_days`] (for dates from 1970 on).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// `YYYY-MM-DD HH:00:00+00` for a partition bound.
fn bound(secs: u64) -> String {
    let (y, m, d) = civil_from_days(secs / 86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:00:00+00", secs % 86_400 / 3_600)
}

/// Where a reader is in the archive: after the row `(xid, seq)`, in
/// commit order. Store it to resume later ([`Display`](fmt::Display) and
/// [`FromStr`] round-trip it).
///
/// # Examples
///
/// ```
/// use topicbus::postgres::Cursor;
/// let c: Cursor = "731:42".parse()?;
/// assert_eq!((c.xid(), c.seq()), (731, 42));
/// assert_eq!(c.to_string(), "731:42");
/// assert!(Cursor::START < c);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    xid: u64,
    seq: i64,
}

impl Cursor {
    /// Before every row.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::postgres::Cursor;
    /// assert_eq!(Cursor::START, Cursor::new(0, 0));
    /// assert!(Cursor::START < "1:0".parse()?); // before every row
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub const START: Cursor = Cursor { xid: 0, seq: 0 };

    /// A cursor after the row written by transaction `xid` with sequence
    /// number `seq`.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::postgres::Cursor;
    /// let c = Cursor::new(731, 42);
    /// assert_eq!(c.to_string(), "731:42");
    /// assert!(Cursor::START < c && c < Cursor::new(731, 43));
    /// ```
    pub const fn new(xid: u64, seq: i64) -> Self {
        Self { xid, seq }
    }

    /// The writing transaction's id (`xid8`) of the last row read.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::postgres::Cursor;
    /// assert_eq!(Cursor::new(900, 1).xid(), 900);
    /// ```
    pub const fn xid(&self) -> u64 {
        self.xid
    }

    /// The sequence number of the last row read.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::postgres::Cursor;
    /// assert_eq!(Cursor::new(900, 7).seq(), 7);
    /// ```
    pub const fn seq(&self) -> i64 {
        self.seq
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.xid, self.seq)
    }
}

impl FromStr for Cursor {
    type Err = PgError;

    fn from_str(s: &str) -> Result<Self, PgError> {
        let bad = || PgError::Invalid("a cursor is `<xid>:<seq>`, two numbers");
        let (xid, seq) = s.split_once(':').ok_or_else(bad)?;
        Ok(Self {
            xid: xid.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// One page read from the archive.
///
/// # Examples
///
/// ```no_run
/// # use topicbus::postgres::{ArchiveReader, Cursor};
/// # let mut reader = ArchiveReader::connect("host=/tmp", topicbus::envelope::Codec::unsigned())?;
/// let mut at = Cursor::START;
/// loop {
///     let page = reader.read::<String>(&at, 500)?;
///     if page.is_empty() { break; }
///     for m in page.messages { /* ... */ let _ = m; }
///     at = page.next;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct ArchivedPage<T> {
    /// The messages, in commit order.
    pub messages: Vec<Decoded<T>>,
    /// Rows skipped because their envelope did not verify or decode
    /// (written by someone without the key, or corrupted). Never returned.
    pub rejected: u64,
    /// Where the next page starts.
    pub next: Cursor,
}

impl<T> ArchivedPage<T> {
    /// No rows were read: the reader is at the commit horizon.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{ArchiveReader, Cursor};
    /// let mut reader = ArchiveReader::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let page = reader.read::<String>(&Cursor::START, 100)?;
    /// if page.is_empty() {
    ///     println!("caught up with the commit horizon; poll again later");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.rejected == 0
    }
}

/// Reads the archive in commit order, from a [`Cursor`].
///
/// Only rows of transactions that finished before every transaction still
/// running began are returned (the `xid8` horizon): a row with a smaller
/// cursor can never commit after the reader passed it, whatever the number
/// of writers.
///
/// Every method blocks on database I/O.
///
/// # Examples
///
/// ```no_run
/// use topicbus::envelope::Codec;
/// use topicbus::postgres::{ArchiveReader, Cursor};
/// let mut reader = ArchiveReader::connect("host=/tmp user=postgres", Codec::unsigned())?
///     .schema("audit")?;
/// let page = reader.read::<String>(&Cursor::START, 100)?;
/// println!("{} messages, next from {}", page.messages.len(), page.next);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ArchiveReader {
    db: super::Reading,
}

impl ArchiveReader {
    /// Connects (`conninfo` as for [`postgres::Config`]) to read schema
    /// `topicbus`, verifying envelopes with `codec`.
    ///
    /// # Errors
    ///
    /// [`PgError::Postgres`] when the connection fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::{Codec, KeyRing};
    /// use topicbus::postgres::ArchiveReader;
    /// // The codec must hold the key the archive's writers sign with.
    /// let codec = Codec::signed(KeyRing::new("2026-12", std::env::var("TOPICBUS_KEY")?)?);
    /// let reader = ArchiveReader::connect("postgresql://app@db.internal/app", codec)?;
    /// # drop(reader);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(conninfo: &str, codec: Codec) -> Result<Self, PgError> {
        Ok(Self {
            db: super::Reading::connect(conninfo, codec)?,
        })
    }

    /// Reads schema `schema` instead.
    ///
    /// # Errors
    ///
    /// [`PgError::Invalid`] for a name that is not plain lower-case.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{ArchiveReader, PgError};
    /// let reader = ArchiveReader::connect("host=/var/run/postgresql user=app", Codec::unsigned())?.schema("audit")?;
    /// # drop(reader);
    /// let bad = ArchiveReader::connect("host=/var/run/postgresql user=app", Codec::unsigned())?.schema("Audit; DROP");
    /// assert!(matches!(bad, Err(PgError::Invalid(_))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn schema(mut self, schema: &str) -> Result<Self, PgError> {
        self.db.schema(schema)?;
        Ok(self)
    }

    /// Up to `limit` messages after `after`.
    ///
    /// # Errors
    ///
    /// [`PgError::Postgres`] when the query fails (the archive missing, the
    /// connection lost).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{ArchiveReader, Cursor};
    /// let mut reader = ArchiveReader::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// // Resume where the last run stopped (the cursor was stored as text).
    /// let mut at: Cursor = std::fs::read_to_string("archive.cursor").map_or(Ok(Cursor::START), |s| s.trim().parse())?;
    /// loop {
    ///     let page = reader.read::<String>(&at, 1_000)?;
    ///     if page.is_empty() {
    ///         break;
    ///     }
    ///     for d in &page.messages {
    ///         println!("{} {}", d.message.topic(), d.message.payload());
    ///     }
    ///     at = page.next;
    /// }
    /// std::fs::write("archive.cursor", at.to_string())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read<T: DeserializeOwned>(
        &mut self,
        after: &Cursor,
        limit: usize,
    ) -> Result<ArchivedPage<T>, PgError> {
        self.page(after, None, limit)
    }

    /// As [`read`](Self::read), keeping only messages published at or after
    /// `since` (replay from a time: start at [`Cursor::START`]). Times are
    /// kept to the microsecond, as PostgreSQL does: a message published in
    /// the same microsecond just before `since` counts as at `since`.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, SystemTime};
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{ArchiveReader, Cursor};
    /// let mut reader = ArchiveReader::connect("host=/var/run/postgresql user=app", Codec::unsigned())?;
    /// let an_hour_ago = SystemTime::now() - Duration::from_secs(3_600);
    /// let page = reader.read_since::<String>(an_hour_ago, &Cursor::START, 500)?;
    /// println!("{} messages from the last hour (first page)", page.messages.len());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_since<T: DeserializeOwned>(
        &mut self,
        since: SystemTime,
        after: &Cursor,
        limit: usize,
    ) -> Result<ArchivedPage<T>, PgError> {
        self.page(after, Some(since), limit)
    }

    fn page<T: DeserializeOwned>(
        &mut self,
        after: &Cursor,
        since: Option<SystemTime>,
        limit: usize,
    ) -> Result<ArchivedPage<T>, PgError> {
        let s = &self.db.schema;
        let sql = format!(
            "SELECT xid::text, seq, envelope FROM {s}.archive
             WHERE (xid, seq) > ($1::text::xid8, $2)
               AND xid < pg_snapshot_xmin(pg_current_snapshot())
               AND ($3::timestamptz IS NULL OR published_at >= $3)
             ORDER BY xid, seq LIMIT $4"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db
            .client
            .query(&sql, &[&after.xid.to_string(), &after.seq, &since, &limit])?;
        let mut page = ArchivedPage {
            messages: Vec::with_capacity(rows.len()),
            rejected: 0,
            next: *after,
        };
        for row in rows {
            let xid: &str = row.get(0);
            page.next = Cursor {
                // xid8's text form is a decimal u64.
                xid: xid.parse().unwrap_or(u64::MAX),
                seq: row.get(1),
            };
            match self.db.codec.decode::<T>(row.get(2)) {
                Ok(d) => page.messages.push(d),
                Err(_) => page.rejected += 1,
            }
        }
        Ok(page)
    }
}

/// Counters of one archive, read without stopping it.
///
/// Once the archive is shut down: `exported == archived + duplicates +
/// encode_failed + unsent`.
///
/// # Examples
///
/// ```
/// let s = topicbus::postgres::ArchiveStats::default();
/// assert_eq!(s.exported, s.archived + s.duplicates + s.encode_failed + s.unsent);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveStats {
    /// Messages the writer took from its outbox.
    pub exported: u64,
    /// Of those, committed as new rows.
    pub archived: u64,
    /// Already in the archive (same id and time): not written again.
    pub duplicates: u64,
    /// Not written: the payload does not serialize or the envelope is over
    /// the codec's limit.
    pub encode_failed: u64,
    /// Not written: still in the outbox or the unwritten batch when
    /// shutdown's deadline passed.
    pub unsent: u64,
    /// Dropped by the outbox's overflow policy while the database was slow
    /// or down.
    pub outbox_dropped: u64,
    /// Messages waiting in the outbox now.
    pub outbox_depth: usize,
    /// Batches committed.
    pub batches: u64,
    /// Of those, written through the staging table because a duplicate
    /// was found or expected (the rest were copied straight in).
    pub staged_batches: u64,
    /// Batch writes that failed (each is tried again on a new connection).
    pub failed_writes: u64,
    /// Connections lost and made again.
    pub reconnects: u64,
    /// Partitions created.
    pub partitions_created: u64,
    /// Partitions dropped by retention.
    pub partitions_dropped: u64,
    /// Every writer's connection is up (see [`ArchiveBuilder::writers`]).
    pub connected: bool,
}

#[derive(Default)]
struct Counters {
    exported: AtomicU64,
    archived: AtomicU64,
    duplicates: AtomicU64,
    encode_failed: AtomicU64,
    unsent: AtomicU64,
    batches: AtomicU64,
    staged_batches: AtomicU64,
    failed_writes: AtomicU64,
    reconnects: AtomicU64,
    partitions_created: AtomicU64,
    partitions_dropped: AtomicU64,
    /// Writers without a connection (a [`Session`] counts itself out).
    down: AtomicUsize,
    /// Bumped by each retention run that dropped partitions: the other
    /// writers forget the partitions they knew.
    retention_runs: AtomicU64,
}

impl Counters {
    fn connected(&self) -> bool {
        self.down.load(Ordering::Relaxed) == 0
    }
}

type Shared = outbound::Shared<Counters>;

/// The most writers an archive takes ([`ArchiveBuilder::writers`]).
const MAX_WRITERS: usize = 64;

/// The settings both the writer and [`PgArchive::enforce_retention`] use.
#[derive(Clone)]
struct Settings {
    config: Config,
    schema: String,
    partitioning: Partitioning,
    retention: Option<Duration>,
}

impl Settings {
    fn connect(&self) -> Result<Client, postgres::Error> {
        super::connect(&self.config)
    }

    /// A connection named `name` in `pg_stat_activity`, unless the
    /// connection string names it already.
    fn connect_as(&self, name: &str) -> Result<Client, postgres::Error> {
        if self.config.get_application_name().is_some() {
            return self.connect();
        }
        let mut config = self.config.clone();
        config.application_name(name);
        super::connect(&config)
    }
}

/// Writer `i`'s connection name.
fn writer_name(i: usize) -> String {
    format!("topicbus archive writer {i}")
}

/// Configures and starts a [`PgArchive`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use topicbus::envelope::Codec;
/// use topicbus::postgres::{Partitioning, PgArchive};
/// # let bus = topicbus::Bus::<String>::builder().build()?;
/// let archive = PgArchive::builder("host=/tmp user=postgres", Codec::unsigned())
///     .schema("audit")
///     .export("orders.#")
///     .export("payments.#")
///     .batch(1_000, Duration::from_millis(50))
///     .partitioning(Partitioning::Hourly)
///     .retention(Duration::from_secs(7 * 86_400))
///     .start(&bus)?;
/// println!("{:?}", archive.stats());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct ArchiveBuilder {
    out: Outbound,
    writers: usize,
    partitioning: Partitioning,
    retention: Option<Duration>,
    retention_every: Duration,
}

impl fmt::Debug for ArchiveBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveBuilder")
            .field("schema", &self.out.schema)
            .field("export", &self.out.export)
            .field("batch", &self.out.batch)
            .finish_non_exhaustive()
    }
}

impl ArchiveBuilder {
    outbound_setters!(
        batch: "1,000 and 50 ms",
        outbox: "(default: drop the oldest, counted; [`OverflowPolicy::Block`] makes publishers wait).",
        new: "PgArchive::builder(\"host=/var/run/postgresql user=app\", Codec::unsigned())"
    );

    /// Writer threads, each with its own connection, taking batches from
    /// the one outbox (default 1). While one writer's batch commits,
    /// another's COPY streams, so the server is never idle between
    /// batches: on the 2-core machine of `perf-reports/postgres.md` two
    /// writers archive 0.87× the rate of a raw single-connection COPY loop
    /// of prepared rows, one writer 0.72–0.78×. The price: rows are in
    /// commit order, so the batches of different writers interleave (a
    /// reader sees every row, but not always in publish order), and one
    /// connection per writer. Only the first writer enforces the
    /// retention. Without exports or [`routable`](Self::routable) there is
    /// nothing to write and one connection serves the retention.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgArchive;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let archive = PgArchive::builder("host=/var/run/postgresql user=app", Codec::unsigned())
    ///     .export("clicks.#")
    ///     .writers(2) // throughput over publish order within the table
    ///     .start(&bus)?;
    /// # drop(archive);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn writers(mut self, n: usize) -> Self {
        self.writers = n;
        self
    }

    /// How the table is partitioned (default [`Partitioning::Daily`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{Partitioning, PgArchive};
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let archive = PgArchive::builder("host=/var/run/postgresql user=app", Codec::unsigned())
    ///     .export("clicks.#")
    ///     .partitioning(Partitioning::Hourly) // millions of rows an hour
    ///     .start(&bus)?;
    /// # drop(archive);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn partitioning(mut self, p: Partitioning) -> Self {
        self.partitioning = p;
        self
    }

    /// Drops partitions whose newest possible row is older than `keep`,
    /// checked by the writer on start and then every `every` (default: keep
    /// everything; checked hourly).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgArchive;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let archive = PgArchive::builder("host=/var/run/postgresql user=app", Codec::unsigned())
    ///     .export("audit.#")
    ///     .retention(Duration::from_secs(90 * 86_400)) // 90 days, then whole days dropped
    ///     .start(&bus)?;
    /// println!("partitions dropped: {}", archive.stats().partitions_dropped);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn retention(mut self, keep: Duration) -> Self {
        self.retention = Some(keep);
        self
    }

    /// How often the writer enforces the retention (default one hour).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{Partitioning, PgArchive};
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let archive = PgArchive::builder("host=/var/run/postgresql user=app", Codec::unsigned())
    ///     .export("metrics.#")
    ///     .partitioning(Partitioning::Hourly)
    ///     .retention(Duration::from_secs(6 * 3_600))
    ///     .retention_every(Duration::from_secs(600)) // hourly partitions: check every 10 minutes
    ///     .start(&bus)?;
    /// # drop(archive);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn retention_every(mut self, every: Duration) -> Self {
        self.retention_every = every;
        self
    }

    /// Connects, migrates the schema, subscribes the outbox and starts the
    /// writer thread. Blocks until the schema is ready.
    ///
    /// # Errors
    ///
    /// [`PgError::Invalid`] for a setting out of range;
    /// [`PgError::Pattern`] for a bad export pattern;
    /// [`PgError::Postgres`] when the database cannot be reached or
    /// migrated; [`PgError::SchemaTooNew`]; [`PgError::Subscribe`] when the
    /// bus is shut down; [`PgError::Spawn`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{PgArchive, PgError};
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// match PgArchive::builder("host=/var/run/postgresql user=app", Codec::unsigned()).export("orders.#").start(&bus) {
    ///     Ok(archive) => println!("archiving: {:?}", archive.stats()),
    ///     Err(PgError::SchemaTooNew { .. }) => eprintln!("a newer topicbus migrated this database: upgrade first"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start<T>(self, bus: &Bus<T>) -> Result<PgArchive<T>, PgError>
    where
        T: Serialize + Send + Sync + 'static,
    {
        self.out.check()?;
        if self.retention_every.is_zero() {
            return Err(PgError::Invalid("the retention interval must be positive"));
        }
        if !(1..=MAX_WRITERS).contains(&self.writers) {
            return Err(PgError::Invalid("writers must be from 1 to 64"));
        }
        let patterns = self.out.patterns()?;
        let config: Config = self.out.conninfo.parse()?;
        let out = self.out;
        let settings = Settings {
            config,
            schema: out.schema.clone(),
            partitioning: self.partitioning,
            retention: self.retention,
        };
        let mut client = settings.connect_as(&writer_name(0))?;
        migrate(&mut client, &settings.schema)?;
        let outbox = out.outbox(bus, patterns, None)?;
        let writers = if outbox.is_some() { self.writers } else { 1 };
        let shared = Shared::new();
        // Each session counts its writer in.
        shared.counts.down.store(writers, Ordering::Relaxed);
        let confirms = Confirms::new();
        let mut clients = vec![client];
        for i in 1..writers {
            clients.push(settings.connect_as(&writer_name(i))?);
        }
        // Every session before any thread: a failure leaves nothing running.
        let mut ready = Vec::with_capacity(writers);
        for (i, client) in clients.into_iter().enumerate() {
            let writer = Writer {
                confirms: Arc::clone(&confirms),
                rx: outbox.clone(),
                shared: Arc::clone(&shared),
                settings: settings.clone(),
                codec: out.codec.clone(),
                node: out.node.clone(),
                batch: out.batch,
                linger: out.linger,
                retention: (i == 0 && self.retention.is_some()).then_some(self.retention_every),
                backoff: out.backoff,
                name: writer_name(i),
            };
            let session = writer.open(client)?;
            ready.push((writer, session));
        }
        let mut threads = Vec::with_capacity(writers);
        for (i, (writer, session)) in ready.into_iter().enumerate() {
            let name = match i {
                0 => "topicbus-pg-archive".to_owned(),
                i => format!("topicbus-pg-archive-{i}"),
            };
            match std::thread::Builder::new()
                .name(name)
                .spawn(move || writer.run(Some(session)))
            {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The writers already running stop (nothing reached
                    // them yet: the outbox is new).
                    shared.control.begin_stop(Duration::ZERO);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e.into());
                }
            }
        }
        bus.add_health_check(Arc::new(Health {
            shared: Arc::clone(&shared),
            component: format!("postgres archive {}", settings.schema),
            down: |c: &Counters| (!c.connected()).then_some("disconnected"),
        }));
        Ok(PgArchive {
            shared,
            settings,
            outbox,
            confirms,
            threads,
        })
    }
}

/// The archive: a bounded outbox on the bus (a pull subscription to the
/// exported patterns) drained into `<schema>.archive` by one writer thread,
/// or several with [`ArchiveBuilder::writers`].
///
/// Each batch is one transaction of binary `COPY` straight into the
/// archive. When a row is already there (same id and time: a second writer
/// exporting the same messages, or a batch written again after a lost
/// commit reply) that COPY fails on the primary key and the batch goes
/// again through a temporary staging table and `INSERT … SELECT … ON
/// CONFLICT DO NOTHING`, counting the rows already there as duplicates;
/// batches keep going that way until one finds no duplicate. The writer's
/// session commits synchronously: a row counted as archived survives a
/// server crash. A failed batch is kept and written again once a new
/// connection is up (full-jitter backoff); meanwhile publishers never wait
/// (unless the outbox's policy is to block) and the outbox drops by its
/// policy, counted.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use topicbus::envelope::Codec;
/// use topicbus::postgres::{ArchiveReader, Cursor, PgArchive};
/// use topicbus::Bus;
/// let db = "host=/var/run/postgresql user=app";
/// let bus = Bus::<String>::builder().build()?;
/// let archive = PgArchive::builder(db, Codec::unsigned()).export("orders.#").start(&bus)?;
/// bus.publish("orders.eu.created", "order 1".to_string())?;
/// let stats = archive.shutdown(Duration::from_secs(5)); // flushes the outbox
/// assert_eq!(stats.archived, 1);
/// let page = ArchiveReader::connect(db, Codec::unsigned())?.read::<String>(&Cursor::START, 10)?;
/// assert_eq!(page.messages[0].message.payload(), "order 1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PgArchive<T: Send + Sync + 'static> {
    shared: Arc<Shared>,
    settings: Settings,
    outbox: Option<Arc<Receiver<T>>>,
    confirms: Arc<Confirms>,
    threads: Vec<JoinHandle<()>>,
}

impl<T: Send + Sync + 'static> fmt::Debug for PgArchive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgArchive")
            .field("schema", &self.settings.schema)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PgArchive<()> {
    /// A builder for database `conninfo` (as for [`postgres::Config`]:
    /// `host=/run/postgresql user=app dbname=app`, or a `postgresql://`
    /// URL), signing envelopes with `codec`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgArchive;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let archive = PgArchive::builder("postgresql://app@db.internal/app", Codec::unsigned())
    ///     .export("#") // everything
    ///     .start(&bus)?;
    /// # drop(archive);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(conninfo: impl Into<String>, codec: Codec) -> ArchiveBuilder {
        ArchiveBuilder {
            out: Outbound::new(
                conninfo.into(),
                codec,
                Duration::from_millis(50),
                OverflowPolicy::DropOldest,
            ),
            writers: 1,
            partitioning: Partitioning::Daily,
            retention: None,
            retention_every: Duration::from_secs(3_600),
        }
    }
}

impl<T: Send + Sync + 'static> PgArchive<T> {
    /// The outbox as an [`Outlet`](crate::route::Outlet) for a
    /// [`Router`](crate::route::Router), when the archive has one (export
    /// patterns, or [`routable`](ArchiveBuilder::routable)). It is down
    /// from a failed write until every writer is connected again; a
    /// confirmed message is committed in the archive.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgArchive;
    /// use topicbus::route::Router;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let archive = PgArchive::builder("host=/var/run/postgresql user=app", Codec::unsigned()).routable().start(&bus)?;
    /// let router = Router::builder(&bus).to(archive.outlet().ok_or("not routable")?).build()?;
    /// router.publish("audit.login", "alice".to_string())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn outlet(&self) -> Option<crate::route::Outlet<T>> {
        outbound::outlet(
            format!("postgres archive {}", self.settings.schema),
            self.outbox.as_ref(),
            &self.confirms,
            &self.shared,
            |c| !c.connected(),
        )
    }

    /// The counters now.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgArchive;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let archive = PgArchive::builder("host=/var/run/postgresql user=app", Codec::unsigned()).export("#").start(&bus)?;
    /// let s = archive.stats();
    /// println!("archived {} (dups {}), dropped {}, connected {}", s.archived, s.duplicates, s.outbox_dropped, s.connected);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> ArchiveStats {
        let c = &self.shared.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (outbox_dropped, outbox_depth) = self
            .outbox
            .as_ref()
            .map_or((0, 0), |rx| rx.drops_and_depth());
        ArchiveStats {
            exported: get(&c.exported),
            archived: get(&c.archived),
            duplicates: get(&c.duplicates),
            encode_failed: get(&c.encode_failed),
            unsent: get(&c.unsent),
            outbox_dropped,
            outbox_depth,
            batches: get(&c.batches),
            staged_batches: get(&c.staged_batches),
            failed_writes: get(&c.failed_writes),
            reconnects: get(&c.reconnects),
            partitions_created: get(&c.partitions_created),
            partitions_dropped: get(&c.partitions_dropped),
            connected: c.connected(),
        }
    }

    /// The last database error the writer saw, if any.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgArchive;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let archive = PgArchive::builder("host=/var/run/postgresql user=app", Codec::unsigned()).export("#").start(&bus)?;
    /// if let Some(e) = archive.last_error() {
    ///     eprintln!("archive writer: {e}");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn last_error(&self) -> Option<String> {
        self.shared.control.last_error()
    }

    /// Drops the partitions past the retention now, on a connection of its
    /// own; returns their names. Blocks on database I/O.
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
    /// use topicbus::postgres::PgArchive;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let archive = PgArchive::builder("host=/var/run/postgresql user=app", Codec::unsigned())
    ///     .export("#")
    ///     .retention(Duration::from_secs(7 * 86_400))
    ///     .start(&bus)?;
    /// for table in archive.enforce_retention()? {
    ///     println!("dropped {table}");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn enforce_retention(&self) -> Result<Vec<String>, PgError> {
        let mut client = self.settings.connect()?;
        let dropped = drop_expired(&mut client, &self.settings, SystemTime::now())?;
        add(&self.shared.counts.partitions_dropped, dropped.len() as u64);
        if !dropped.is_empty() {
            // The writers forget the partitions they knew.
            self.shared
                .counts
                .retention_runs
                .fetch_add(1, Ordering::Release);
        }
        Ok(dropped)
    }

    /// Stops taking messages, writes what the outbox holds until `timeout`,
    /// and returns the final counters (`unsent` says what was left).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgArchive;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let archive = PgArchive::builder("host=/var/run/postgresql user=app", Codec::unsigned()).export("#").start(&bus)?;
    /// bus.publish("orders.created", "o-1".to_string())?;
    /// let last = archive.shutdown(Duration::from_secs(5));
    /// assert_eq!(last.exported, last.archived + last.duplicates + last.encode_failed + last.unsent);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(mut self, timeout: Duration) -> ArchiveStats {
        self.stop(timeout);
        self.stats()
    }

    fn stop(&mut self, timeout: Duration) {
        self.shared.control.begin_stop(timeout);
        for t in self.threads.drain(..) {
            // A writer that panicked has nothing more to report.
            let _ = t.join();
        }
        self.shared.control.finished();
    }
}

impl<T: Send + Sync + 'static> Drop for PgArchive<T> {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(1));
    }
}

/// One message ready to write.
struct Row {
    id: PgId,
    topic: String,
    published_at: SystemTime,
    envelope: Vec<u8>,
}

/// The batch on its way: messages as taken from the outbox, encoded while
/// the COPY streams them (so encoding overlaps the server's work on the
/// rows before), and kept encoded for a second COPY or a retry.
struct Batch<T> {
    /// Encoded, in order.
    rows: Vec<Row>,
    /// Taken, not encoded yet, in order after `rows`.
    taken: VecDeque<Arc<Message<T>>>,
}

impl<T> Batch<T> {
    fn new(capacity: usize) -> Self {
        Self {
            rows: Vec::with_capacity(capacity),
            taken: VecDeque::with_capacity(capacity),
        }
    }

    /// Messages in the batch (encoded or not).
    fn len(&self) -> usize {
        self.rows.len() + self.taken.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.taken.clear();
    }

    /// When each message was published.
    fn times(&self) -> impl Iterator<Item = SystemTime> + '_ {
        let rows = self.rows.iter().map(|r| r.published_at);
        rows.chain(self.taken.iter().map(|m| m.timestamp()))
    }
}

struct Writer<T: Send + Sync + 'static> {
    rx: Option<Arc<Receiver<T>>>,
    confirms: Arc<Confirms>,
    shared: Arc<Shared>,
    settings: Settings,
    codec: Codec,
    node: String,
    batch: usize,
    linger: Duration,
    /// How often this writer enforces the retention; `None` without a
    /// retention and for all writers but the first.
    retention: Option<Duration>,
    backoff: Backoff,
    /// Its connections' `application_name`.
    name: String,
}

/// The writer's connection and what it knows on it.
struct Session {
    client: Client,
    /// Partitions known to exist (forgotten with the connection).
    partitions: HashSet<u64>,
    /// [`Counters::retention_runs`] when `partitions` was last right.
    retention_runs: u64,
    /// Counts the writer as connected while the session lives.
    _up: Up,
}

/// A writer counted as connected in [`Counters::down`] for its lifetime.
struct Up(Arc<Shared>);

impl Up {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.counts.down.fetch_sub(1, Ordering::Relaxed);
        Self(Arc::clone(shared))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.0.counts.down.fetch_add(1, Ordering::Relaxed);
    }
}

impl<T: Serialize + Send + Sync + 'static> Writer<T> {
    fn run(self, mut session: Option<Session>) {
        let c = &self.shared.counts;
        let mut rows = Batch::new(self.batch);
        let mut failures = 0u32;
        // Through the staging table (duplicates expected) or straight in.
        let mut staged = false;
        let mut closed = self.rx.is_none();
        let mut next_retention = Instant::now();
        loop {
            let stopping = self.shared.control.stop.is_stopped();
            if stopping && self.shared.control.past_deadline() {
                break;
            }
            if rows.is_empty() && !closed {
                closed = self.fill(&mut rows, stopping);
            }
            if let Some(every) = self.retention.filter(|_| Instant::now() >= next_retention) {
                if let Some(s) = session.as_mut() {
                    match drop_expired(&mut s.client, &self.settings, SystemTime::now()) {
                        Ok(dropped) => {
                            add(&c.partitions_dropped, dropped.len() as u64);
                            if !dropped.is_empty() {
                                // Every writer forgets what it knew.
                                c.retention_runs.fetch_add(1, Ordering::Release);
                            }
                            next_retention = Instant::now() + every;
                        }
                        Err(e) => self.failed(&mut session, &e, &mut failures),
                    }
                }
            }
            if rows.is_empty() {
                if self.rx.is_none() {
                    // Nothing to export: only the retention to keep (on a
                    // connection made again if a retention run lost it).
                    if stopping {
                        break;
                    }
                    if self.ensure_session(&mut session, &mut failures) {
                        self.shared.control.stop.wait(POLL);
                    }
                    continue;
                }
                if closed {
                    break;
                }
                if !stopping {
                    // Lost while idle (a retention run failed): connect
                    // again now, so the archive does not read as down
                    // until the next batch (a router sends it none while
                    // it is down).
                    self.ensure_session(&mut session, &mut failures);
                }
                continue;
            }
            if !self.ensure_session(&mut session, &mut failures) {
                continue;
            }
            let Some(s) = session.as_mut() else {
                continue;
            };
            match self.write(s, &mut rows, &mut staged) {
                Ok(inserted) => {
                    self.confirms.written(rows.rows.iter().map(|r| r.id.0));
                    add(&c.archived, inserted);
                    add(&c.duplicates, rows.rows.len() as u64 - inserted);
                    add(&c.batches, 1);
                    rows.clear();
                    failures = 0;
                }
                Err(e) => {
                    // The commit may have landed: the retry goes staged.
                    staged = true;
                    // Down before counted: whoever sees the failure sees
                    // the archive degraded.
                    session = None;
                    add(&c.failed_writes, 1);
                    self.failed(&mut session, &e, &mut failures);
                }
            }
        }
        let mut left = rows.len() as u64;
        if let Some(rx) = &self.rx {
            let drained = outbound::drain(rx);
            add(&c.exported, drained);
            left += drained;
        }
        add(&c.unsent, left);
    }

    /// Connects again when there is no session; false (after the backoff)
    /// when that fails.
    fn ensure_session(&self, session: &mut Option<Session>, failures: &mut u32) -> bool {
        if session.is_some() {
            return true;
        }
        match self
            .settings
            .connect_as(&self.name)
            .map_err(PgError::from)
            .and_then(|cl| self.open(cl))
        {
            Ok(s) => {
                add(&self.shared.counts.reconnects, 1);
                *session = Some(s);
                true
            }
            Err(e) => {
                self.failed(session, &e, failures);
                false
            }
        }
    }

    /// Makes a connection ready: the staging table.
    fn open(&self, mut client: Client) -> Result<Session, PgError> {
        client.batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS tb_stage (
                 msg_id uuid, topic text, published_at timestamptz,
                 origin text, envelope bytea
             ) ON COMMIT DELETE ROWS",
        )?;
        Ok(Session {
            client,
            partitions: HashSet::new(),
            retention_runs: self.shared.counts.retention_runs.load(Ordering::Acquire),
            _up: Up::new(&self.shared),
        })
    }

    /// Takes a batch from the outbox; true when it is closed for good.
    fn fill(&self, rows: &mut Batch<T>, stopping: bool) -> bool {
        let Some(rx) = &self.rx else {
            return true;
        };
        outbound::fill(rx, self.batch, self.linger, stopping, |m| {
            self.take(m, rows);
        })
    }

    fn take(&self, m: Arc<Message<T>>, rows: &mut Batch<T>) {
        add(&self.shared.counts.exported, 1);
        rows.taken.push_back(m);
    }

    /// The row of `m`, or `None` (counted) when it does not encode.
    fn encode(&self, m: &Message<T>) -> Option<Row> {
        match self.codec.encode(m, &self.node) {
            Ok(envelope) => Some(Row {
                id: PgId(m.id()),
                topic: m.topic().as_str().to_owned(),
                published_at: m.timestamp(),
                envelope,
            }),
            Err(_) => {
                add(&self.shared.counts.encode_failed, 1);
                None
            }
        }
    }

    /// One batch in one transaction; returns the rows that were new.
    ///
    /// Straight into the archive by binary COPY while no duplicates are
    /// seen: half the server's work of going through the staging table. A
    /// duplicate id (another writer exporting the same messages, or a batch
    /// retried after a commit whose outcome was lost) fails that COPY with a
    /// unique violation; the batch is rolled back and written again through
    /// the staging table with `ON CONFLICT DO NOTHING`. Batches stay staged
    /// until one finds no duplicate (`staged` carries the mode).
    fn write(
        &self,
        s: &mut Session,
        rows: &mut Batch<T>,
        staged: &mut bool,
    ) -> Result<u64, PgError> {
        let p = self.settings.partitioning;
        let schema = &self.settings.schema;
        let runs = self.shared.counts.retention_runs.load(Ordering::Acquire);
        if runs != s.retention_runs {
            // A retention run may have dropped partitions this session
            // knew: ask for them again.
            s.partitions.clear();
            s.retention_runs = runs;
        }
        for start in rows.times().map(|t| p.start_of(t)) {
            if s.partitions.insert(start) {
                if let Err(e) = create_partition(&mut s.client, schema, p, start) {
                    s.partitions.remove(&start);
                    return Err(e);
                }
                add(&self.shared.counts.partitions_created, 1);
            }
        }
        if !*staged {
            let mut tx = s.client.transaction()?;
            match self.copy(&mut tx, &format!("{schema}.archive"), rows) {
                Ok(n) => {
                    tx.commit()?;
                    return Ok(n);
                }
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    drop(tx);
                    *staged = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        add(&self.shared.counts.staged_batches, 1);
        let mut tx = s.client.transaction()?;
        self.copy(&mut tx, "pg_temp.tb_stage", rows)?;
        let inserted = tx.execute(
            &format!(
                "INSERT INTO {schema}.archive (msg_id, topic, published_at, origin, envelope)
                 SELECT msg_id, topic, published_at, origin, envelope FROM pg_temp.tb_stage
                 ON CONFLICT DO NOTHING"
            ),
            &[],
        )?;
        tx.commit()?;
        *staged = inserted < rows.rows.len() as u64;
        Ok(inserted)
    }

    /// Binary COPY of `rows` into `table`, encoding those not encoded yet
    /// as it goes; returns the rows written.
    fn copy(
        &self,
        tx: &mut postgres::Transaction<'_>,
        table: &str,
        rows: &mut Batch<T>,
    ) -> Result<u64, postgres::Error> {
        let sink = tx.copy_in(&format!(
            "COPY {table} (msg_id, topic, published_at, origin, envelope) \
             FROM STDIN (FORMAT binary)"
        ))?;
        let mut w = BinaryCopyInWriter::new(
            sink,
            &[
                Type::UUID,
                Type::TEXT,
                Type::TIMESTAMPTZ,
                Type::TEXT,
                Type::BYTEA,
            ],
        );
        for r in &rows.rows {
            w.write(&[&r.id, &r.topic, &r.published_at, &self.node, &r.envelope])?;
        }
        while let Some(m) = rows.taken.pop_front() {
            // Kept before it is sent: a failed COPY leaves it encoded.
            let Some(r) = self.encode(&m) else { continue };
            rows.rows.push(r);
            let r = &rows.rows[rows.rows.len() - 1];
            w.write(&[&r.id, &r.topic, &r.published_at, &self.node, &r.envelope])?;
        }
        w.finish()
    }

    /// A write failed: drop the connection, note why, back off.
    fn failed(&self, session: &mut Option<Session>, e: &PgError, failures: &mut u32) {
        *session = None;
        self.shared
            .control
            .failed("archive", e, failures, self.backoff);
    }
}

/// Creates the partition starting at `start` if it does not exist (under an
/// advisory lock: several writers may race for it).
fn create_partition(
    client: &mut Client,
    schema: &str,
    p: Partitioning,
    start: u64,
) -> Result<(), PgError> {
    let mut tx = client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('topicbus.partition.' || $1))",
        &[&schema],
    )?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.{name} PARTITION OF {schema}.archive
         FOR VALUES FROM ('{from}') TO ('{to}')",
        name = p.name(start),
        from = bound(start),
        to = bound(start + p.span()),
    ))?;
    tx.commit()?;
    Ok(())
}

/// Drops the archive's partitions that end at or before `now − retention`;
/// returns their names.
fn drop_expired(
    client: &mut Client,
    settings: &Settings,
    now: SystemTime,
) -> Result<Vec<String>, PgError> {
    let Some(keep) = settings.retention else {
        return Ok(Vec::new());
    };
    let p = settings.partitioning;
    let horizon = now
        .checked_sub(keep)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let rows = client.query(
        "SELECT c.relname::text FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_class r ON r.oid = i.inhparent
         JOIN pg_namespace n ON n.oid = r.relnamespace
         WHERE n.nspname = $1 AND r.relname = 'archive'",
        &[&settings.schema],
    )?;
    let mut dropped = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let Some(start) = p.parse(&name) else {
            continue;
        };
        if start + p.span() <= horizon {
            client.batch_execute(&format!("DROP TABLE IF EXISTS {}.{name}", settings.schema))?;
            dropped.push(name);
        }
    }
    dropped.sort();
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip_and_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        for days in (0..200_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn partition_names_bounds_and_parsing_agree() {
        // 2026-11-23 13:45:10 UTC.
        let t = UNIX_EPOCH + Duration::from_secs(1_795_441_510);
        let day = Partitioning::Daily.start_of(t);
        assert_eq!(Partitioning::Daily.name(day), "archive_p20261123");
        assert_eq!(bound(day), "2026-11-23 00:00:00+00");
        assert_eq!(bound(day + 86_400), "2026-11-24 00:00:00+00");
        let hour = Partitioning::Hourly.start_of(t);
        assert_eq!(Partitioning::Hourly.name(hour), "archive_p2026112313");
        assert_eq!(bound(hour), "2026-11-23 13:00:00+00");
        for (p, start) in [(Partitioning::Daily, day), (Partitioning::Hourly, hour)] {
            assert_eq!(p.parse(&p.name(start)), Some(start));
        }
        for other in [
            "archive",
            "archive_p2026112",
            "archive_p20261323",
            "archive_p20261100",
            "archive_p2026112324",
            "archive_p2026112313x",
        ] {
            assert_eq!(Partitioning::Daily.parse(other), None, "{other}");
            assert_eq!(Partitioning::Hourly.parse(other), None, "{other}");
        }
    }

    #[test]
    fn cursors_round_trip_as_text_and_reject_junk() {
        let c = Cursor::new(9_000_000_000, 12);
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        for junk in ["", "1", "a:1", "1:b", "1:2:3", "-1:2"] {
            assert!(junk.parse::<Cursor>().is_err(), "{junk}");
        }
    }
}
