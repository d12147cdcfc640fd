//! The adapter's tables, versioned: each migration runs once per schema,
//! in order, under an advisory lock, in one transaction with its version
//! row.

use postgres::Client;

use super::{check_schema, PgError};

/// The schema version this topicbus writes and reads.
///
/// # Examples
///
/// ```
/// assert!(topicbus::postgres::SCHEMA_VERSION >= 1);
/// ```
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Migration `n + 1` is `MIGRATIONS[n]`; `{s}` is the schema. Never edit
/// one that shipped: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: the archive. `seq` orders rows of one transaction; `xid` (the
    // writing transaction) gives the commit horizon readers stop at. The
    // key includes the partition column, as PostgreSQL requires; a
    // message's `published_at` never changes, so it deduplicates by id.
    "CREATE SEQUENCE {s}.archive_seq;
     CREATE TABLE {s}.archive (
         seq          bigint      NOT NULL DEFAULT nextval('{s}.archive_seq'),
         xid          xid8        NOT NULL DEFAULT pg_current_xact_id(),
         msg_id       uuid        NOT NULL,
         topic        text        NOT NULL,
         published_at timestamptz NOT NULL,
         origin       text        NOT NULL,
         envelope     bytea       NOT NULL,
         PRIMARY KEY (published_at, msg_id)
     ) PARTITION BY RANGE (published_at);
     CREATE INDEX archive_xid_seq ON {s}.archive (xid, seq);",
    // 2: the durable queue (one table, many named queues), the consumers'
    // heartbeats, and the dead letters of the queue and of the bus. A
    // queued message is keyed by its id within its queue (enqueueing it
    // twice is a no-op); `visible_at` carries the delay, the lease and the
    // retry backoff in one column, so one index serves the claim.
    "CREATE TABLE {s}.queue (
         queue       text        NOT NULL,
         msg_id      uuid        NOT NULL,
         topic       text        NOT NULL,
         priority    smallint    NOT NULL,
         visible_at  timestamptz NOT NULL,
         enqueued_at timestamptz NOT NULL DEFAULT now(),
         attempts    int         NOT NULL DEFAULT 0,
         expires_at  timestamptz,
         last_error  text,
         envelope    bytea       NOT NULL,
         PRIMARY KEY (queue, msg_id)
     );
     CREATE INDEX queue_ready ON {s}.queue (queue, priority, visible_at, msg_id);
     CREATE TABLE {s}.consumers (
         queue      text        NOT NULL,
         consumer   text        NOT NULL,
         started_at timestamptz NOT NULL DEFAULT now(),
         last_seen  timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (queue, consumer)
     );
     CREATE TABLE {s}.dead_letters (
         id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         queue         text,
         msg_id        uuid        NOT NULL,
         topic         text        NOT NULL,
         reason        text        NOT NULL,
         error_kind    text,
         error         text,
         subscription  bigint,
         attempts      int         NOT NULL,
         first_failure timestamptz NOT NULL,
         failed_at     timestamptz NOT NULL DEFAULT now(),
         origin        text        NOT NULL,
         envelope      bytea       NOT NULL
     );
     CREATE INDEX dead_letters_queue ON {s}.dead_letters (queue, id);
     CREATE INDEX dead_letters_failed_at ON {s}.dead_letters (failed_at);",
];

/// Creates or upgrades the adapter's tables in `schema`; returns the
/// version it is at. Safe to run from several processes at once (an
/// advisory lock serialises them) and again (a no-op).
///
/// Blocks on database I/O.
///
/// # Examples
///
/// ```no_run
/// let mut client = postgres::Client::connect("host=/tmp user=postgres", postgres::NoTls)?;
/// assert_eq!(topicbus::postgres::migrate(&mut client, "topicbus")?,
///            topicbus::postgres::SCHEMA_VERSION);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`PgError::Invalid`] for a schema name that is not plain lower-case;
/// [`PgError::SchemaTooNew`] when a newer topicbus migrated the schema;
/// [`PgError::Postgres`] when the database fails.
pub fn migrate(client: &mut Client, schema: &str) -> Result<i32, PgError> {
    check_schema(schema)?;
    let mut tx = client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('topicbus.migrate.' || $1))",
        &[&schema],
    )?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_version (
             version    int         PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))?;
    let found: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_version"),
            &[],
        )?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(PgError::SchemaTooNew {
            schema: schema.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let insert = format!("INSERT INTO {schema}.schema_version (version) VALUES ($1)");
    let done = usize::try_from(found).unwrap_or(0);
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.batch_execute(&sql.replace("{s}", schema))?;
        tx.execute(&insert, &[&(n as i32 + 1)])?;
    }
    tx.commit()?;
    Ok(SCHEMA_VERSION)
}
