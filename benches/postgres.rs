//! The PostgreSQL archive against the raw client doing the same commands,
//! in the same run, on a private PostgreSQL 15 cluster (unix socket,
//! `fsync=off`, `max_wal_size = 32GB`, `checkpoint_timeout = 1h`,
//! autovacuum off; both sides commit with `synchronous_commit = on`).
//!
//! - `pg_archive/raw_copy`: prepared rows (one envelope, a fresh id per
//!   row), per batch of 1,000: binary `COPY` straight into the archive,
//!   commit: the adapter's statements when no row is a duplicate.
//! - `pg_archive/raw_copy_staged`: the same rows through a temporary
//!   staging table and `INSERT … SELECT … ON CONFLICT DO NOTHING` (what the
//!   adapter falls back to once a batch holds a duplicate).
//! - `pg_archive/raw_encoding`: `raw_copy`, building, encoding and signing
//!   each message first (the work the adapter must also do).
//! - `pg_archive/adapter`: publish on the bus → outbox → the archive's
//!   writer (batches of 1,000 or 50 ms).
//!
//! Every sample starts from an empty archive (`TRUNCATE`, untimed), so the
//! order of the functions does not favour the first, and writes whole
//! batches (the count rounded up, its time scaled back), so the adapter's
//! last batch does not wait out a linger sustained load never sees.
//!
//! Figures: `perf-reports/postgres.md`.

#![allow(missing_docs)]

#[path = "../tests/support/pg_server.rs"]
mod pg_server;

use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pg_server::PgCluster;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use topicbus::envelope::{Codec, KeyRing};
use topicbus::postgres::{migrate, PgArchive};
use topicbus::{Bus, Message, OverflowPolicy, Topic};

const BATCH: usize = 1_000;

fn codec() -> Codec {
    Codec::signed(KeyRing::new("bench", [7u8; 32]).expect("key"))
}

fn payload(i: u64) -> String {
    format!("order {i:08}: 3 items, EUR 129.90")
}

/// A message id as a `uuid`, binary, as a hand-written loop would send it.
#[derive(Debug)]
struct Uuid(u128);

impl postgres::types::ToSql for Uuid {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0.to_be_bytes());
        Ok(postgres::types::IsNull::No)
    }

    postgres::types::accepts!(UUID);
    postgres::types::to_sql_checked!();
}

/// What the raw loop writes per row.
struct Row {
    id: Uuid,
    at: SystemTime,
    envelope: Vec<u8>,
}

/// Where the raw loop copies its rows.
#[derive(Clone, Copy)]
enum Target {
    /// Straight into the archive: no deduplication.
    Archive,
    /// Into a staging table, then `INSERT … ON CONFLICT DO NOTHING`.
    Staged,
}

/// `n` rows by binary COPY, `BATCH` per transaction.
fn raw(client: &mut postgres::Client, n: u64, into: Target, mut row: impl FnMut(u64) -> Row) {
    let mut i = 0;
    while i < n {
        let end = (i + BATCH as u64).min(n);
        let rows: Vec<Row> = (i..end).map(&mut row).collect();
        let mut tx = client.transaction().expect("begin");
        let table = match into {
            Target::Archive => "topicbus.archive",
            Target::Staged => "pg_temp.raw_stage",
        };
        let sink = tx
            .copy_in(&format!(
                "COPY {table} (msg_id, topic, published_at, origin, envelope) \
                 FROM STDIN (FORMAT binary)"
            ))
            .expect("copy");
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
        for r in &rows {
            w.write(&[&r.id, &"orders.eu.created", &r.at, &"raw", &r.envelope])
                .expect("row");
        }
        w.finish().expect("finish");
        if let Target::Staged = into {
            tx.execute(
                "INSERT INTO topicbus.archive (msg_id, topic, published_at, origin, envelope)
                 SELECT msg_id, topic, published_at, origin, envelope FROM pg_temp.raw_stage
                 ON CONFLICT DO NOTHING",
                &[],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
        i = end;
    }
}

/// Every sample starts from an empty archive, so no function pays for the
/// rows an earlier one left (the partitions stay).
fn empty(client: &mut postgres::Client) {
    client
        .batch_execute("TRUNCATE topicbus.archive")
        .expect("truncate");
}

/// `n` rounded up to whole batches: every function writes only full
/// batches (as under sustained load), so the adapter's last batch does not
/// wait out its linger. Its time is scaled back to `n`.
fn whole(n: u64) -> u64 {
    n.div_ceil(BATCH as u64) * BATCH as u64
}

/// The time of `m` rows as the time of `n`.
fn scaled(t: Duration, n: u64, m: u64) -> Duration {
    t.mul_f64(n as f64 / m as f64)
}

fn archive(c: &mut Criterion) {
    let cluster = PgCluster::start().expect("PostgreSQL 15 binaries are needed for this benchmark");
    let db = cluster.database();
    let mut client = postgres::Client::connect(&db, postgres::NoTls).expect("connect");
    // Checkpoints and autovacuum at random moments are noise, not a cost of
    // either side: few checkpoints, no autovacuum (each sample truncates).
    for setting in [
        "ALTER SYSTEM SET max_wal_size = '32GB'",
        "ALTER SYSTEM SET checkpoint_timeout = '1h'",
        "ALTER SYSTEM SET autovacuum = off",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(setting).expect("settings");
    }
    migrate(&mut client, "topicbus").expect("migrate");
    client
        .batch_execute(
            "SET synchronous_commit = on;
             CREATE TEMP TABLE raw_stage (msg_id uuid, topic text, published_at timestamptz,
                                          origin text, envelope bytea) ON COMMIT DELETE ROWS",
        )
        .expect("staging");
    let codec = codec();
    let topic = Topic::parse("orders.eu.created").expect("topic");
    let bus = Bus::<String>::builder().workers(1).build().expect("bus");
    let archive = PgArchive::builder(db.as_str(), codec.clone())
        .export("orders.#")
        .batch(BATCH, Duration::from_millis(50))
        .outbox(1 << 21, OverflowPolicy::DropOldest)
        .start(&bus)
        .expect("archive");
    // The day's partition exists before the raw loop runs.
    bus.publish(&topic, payload(0)).expect("publish");
    while archive.stats().archived < 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let prepared = codec
        .encode(&Message::builder(topic.clone(), payload(0)).build(), "raw")
        .expect("encode");

    let mut g = c.benchmark_group("pg_archive");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    let prepared_row = |_| Row {
        id: Uuid(topicbus::MessageId::new().as_u128()),
        at: SystemTime::now(),
        envelope: prepared.clone(),
    };
    for (name, target) in [
        ("raw_copy", Target::Archive),
        ("raw_copy_staged", Target::Staged),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|n| {
                empty(&mut client);
                let m = whole(n);
                let start = Instant::now();
                raw(&mut client, m, target, prepared_row);
                scaled(start.elapsed(), n, m)
            })
        });
    }
    g.bench_function("raw_encoding", |b| {
        b.iter_custom(|n| {
            empty(&mut client);
            let m = whole(n);
            let start = Instant::now();
            raw(&mut client, m, Target::Archive, |i| {
                let m = Message::builder(topic.clone(), payload(i)).build();
                Row {
                    id: Uuid(m.id().as_u128()),
                    at: m.timestamp(),
                    envelope: codec.encode(&m, "raw").expect("encode"),
                }
            });
            scaled(start.elapsed(), n, m)
        })
    });
    g.bench_function("adapter", |b| {
        b.iter_custom(|n| {
            empty(&mut client);
            let m = whole(n);
            let base = archive.stats().archived;
            let start = Instant::now();
            for i in 0..m {
                bus.publish(&topic, payload(i)).expect("publish");
            }
            // Sleeping, not spinning: the writer and the server need both
            // cores more than this thread needs a prompt wake-up.
            while archive.stats().archived < base + m {
                std::thread::sleep(Duration::from_micros(200));
            }
            scaled(start.elapsed(), n, m)
        })
    });
    g.finish();
    let s = archive.shutdown(Duration::from_secs(30));
    assert_eq!(
        (s.outbox_dropped, s.duplicates, s.unsent),
        (0, 0, 0),
        "the benchmark's outbox never dropped: {s:?}"
    );
}

criterion_group!(benches, archive);
criterion_main!(benches);
