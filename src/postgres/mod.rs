//! PostgreSQL adapter (feature `postgres`): an archive of the bus's
//! messages written with binary `COPY` into a time-partitioned table, and
//! read back in commit order ([`PgArchive`], [`ArchiveReader`]); and a
//! durable lease queue shared by several processes, with retries, dead
//! letters, delays, priorities and a transactional outbox ([`PgQueue`]);
//! the dead letters in a table, queried and replayed ([`PgDeadLetters`]),
//! where the bus's own can go too ([`PgDeadLetterSink`]). The archive and
//! the queue are [outlets](crate::route) a [`Router`](crate::route::Router)
//! can send to, beside or instead of Redis.
//!
//! The adapter owns its threads and uses the synchronous
//! [`postgres`](https://docs.rs/postgres) client: no async runtime in the
//! core. The tables live in one schema (default `topicbus`) that the adapter
//! creates and migrates on start ([`migrate`]); it refuses a schema a newer
//! topicbus wrote. Every row holds the message's signed
//! [`envelope`](crate::envelope): a reader rejects rows it cannot verify.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use topicbus::envelope::{Codec, KeyRing};
//! use topicbus::postgres::{ArchiveReader, Cursor, PgArchive};
//! use topicbus::{Bus, Topic};
//!
//! let bus = Bus::<String>::builder().build()?;
//! let codec = Codec::signed(KeyRing::new("2026-11", std::env::var("TOPICBUS_KEY")?)?);
//! let db = "host=/var/run/postgresql user=app dbname=app";
//! let archive = PgArchive::builder(db, codec.clone())
//!     .export("orders.#")
//!     .retention(Duration::from_secs(30 * 86_400))
//!     .start(&bus)?;
//! bus.publish(&Topic::parse("orders.eu.created")?, "order 1".to_string())?;
//! archive.shutdown(Duration::from_secs(5));
//!
//! // Later, elsewhere: everything archived, in commit order, from the start.
//! let mut reader = ArchiveReader::connect(db, codec)?;
//! let page = reader.read::<String>(&Cursor::START, 1_000)?;
//! for m in &page.messages {
//!     println!("{} {}", m.message.topic(), m.message.payload());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Blocking
//!
//! [`ArchiveBuilder::start`], [`PgArchive::shutdown`],
//! [`PgArchive::enforce_retention`], [`migrate`] and every
//! [`ArchiveReader`] method do database I/O and block the calling thread,
//! as do [`QueueBuilder::start`], [`PgQueue::publish_in`],
//! [`PgQueue::depth`], [`PgQueue::consumers`] and [`PgQueue::shutdown`],
//! every [`PgDeadLetters`] method, [`PgDeadLetterSink::start`] and
//! [`PgDeadLetterSink::shutdown`];
//! dropping a [`PgArchive`] or a [`PgQueue`] blocks for up to a second
//! while it flushes.
//! Do not call them from inside an async task (the `postgres` client
//! panics when called within a Tokio runtime); use `spawn_blocking`.

mod archive;
mod dead_letters;
mod outbound;
mod queue;
mod schema;
mod types;

pub use archive::{
    ArchiveBuilder, ArchiveReader, ArchiveStats, ArchivedPage, Cursor, Partitioning, PgArchive,
};
pub use dead_letters::{
    LetterPage, LetterQuery, PgDeadLetterSink, PgDeadLetters, SinkStats, StoredLetter,
};
pub use queue::{ConsumerInfo, PgQueue, QueueBuilder, QueueDepth, QueueStats, MAX_QUEUE_NAME};
pub use schema::{migrate, SCHEMA_VERSION};

/// What went wrong talking to PostgreSQL, or before.
///
/// # Examples
///
/// ```
/// use topicbus::envelope::Codec;
/// use topicbus::postgres::{PgArchive, PgError};
/// use topicbus::Bus;
/// let bus = Bus::<String>::builder().workers(1).build()?;
/// let err = PgArchive::builder("host=/nonexistent", Codec::unsigned())
///     .schema("Not A Schema")
///     .start(&bus)
///     .unwrap_err();
/// assert!(matches!(err, PgError::Invalid(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The database refused or failed (connection, SQL, I/O).
    #[error("postgres: {0}")]
    Postgres(#[from] ::postgres::Error),
    /// The schema was migrated by a newer topicbus: this one would not know
    /// its tables.
    #[error("schema {schema} is at version {found}; this topicbus knows up to {supported}")]
    SchemaTooNew {
        /// The schema.
        schema: String,
        /// Its version.
        found: i32,
        /// [`SCHEMA_VERSION`].
        supported: i32,
    },
    /// A message does not encode (its payload does not serialize, or the
    /// envelope is over the codec's limit).
    #[error("encode: {0}")]
    Encode(#[from] crate::envelope::EnvelopeError),
    /// An export pattern is not a valid pattern.
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

/// A connection whose commits survive a server crash, whatever the
/// server's default: what an adapter counts as written is written.
fn connect(config: &::postgres::Config) -> Result<::postgres::Client, ::postgres::Error> {
    let mut client = config.connect(::postgres::NoTls)?;
    client.batch_execute("SET synchronous_commit = on")?;
    Ok(client)
}

/// A connection of its own for reading a schema's tables, with the codec
/// that verifies what it reads ([`ArchiveReader`], [`PgDeadLetters`]).
struct Reading {
    client: ::postgres::Client,
    codec: crate::envelope::Codec,
    schema: String,
}

impl Reading {
    fn connect(conninfo: &str, codec: crate::envelope::Codec) -> Result<Self, PgError> {
        let config: ::postgres::Config = conninfo.parse()?;
        Ok(Self {
            client: connect(&config)?,
            codec,
            schema: "topicbus".into(),
        })
    }

    fn schema(&mut self, schema: &str) -> Result<(), PgError> {
        check_schema(schema)?;
        schema.clone_into(&mut self.schema);
        Ok(())
    }
}

impl std::fmt::Debug for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reading")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Checks a schema name: lower-case ASCII letters, digits and `_`, not
/// starting with a digit, at most 63 bytes (so it never needs quoting).
fn check_schema(schema: &str) -> Result<(), PgError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && !schema.as_bytes()[0].is_ascii_digit()
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PgError::Invalid(
            "schema names are lower-case letters, digits and '_', at most 63 bytes",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_never_need_quoting() {
        for good in ["topicbus", "tb_2", "_x", &"a".repeat(63)] {
            assert!(check_schema(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Topicbus",
            "2tb",
            "a-b",
            "a b",
            "a;drop",
            &"a".repeat(64),
            "é",
        ] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }
}
