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
//! - `pg_archive/adapter_unsigned`: the same with an unsigned codec (no
//!   HMAC), on a bus and archive of its own.
//! - `pg_archive/adapter_2_writers`: the adapter with `.writers(2)`: two
//!   writer threads and connections taking batches from one outbox.
//!
//! Every sample starts from an empty archive (`TRUNCATE`, untimed), so the
//! order of the functions does not favour the first, and writes whole
//! batches (the count rounded up, its time scaled back), so the adapter's
//! last batch does not wait out a linger sustained load never sees.
//!
//! The durable queue, end to end (enqueue → claim → handler → ack), on a
//! second cluster:
//!
//! - `pg_queue/raw_skip_locked`: one thread inserts prepared rows in
//!   batches of 1,000 (`INSERT … SELECT FROM unnest … ON CONFLICT DO
//!   NOTHING`) while another claims 500 at a time (`FOR UPDATE SKIP
//!   LOCKED`, lease, attempt count) and deletes them: the adapter's
//!   statements with nothing around them.
//! - `pg_queue/raw_codec`: the same, encoding and signing each message
//!   before the insert and verifying and decoding it after the claim.
//! - `pg_queue/adapter_{1,2}_consumer`: publish on one bus → its queue's
//!   outbox and writer → the table → a consumer (one or two threads) of a
//!   second bus → a no-op handler → the batched delete.
//!
//! And `pg_outage/publish_{no_adapter,db_up,db_slow,db_down}`: the time
//! of one `publish` on a bus whose archive and queue both export it, while
//! the database is up, slow (every insert statement into the archive and
//! the queue waits 50 ms in a trigger) and after `pg_ctl stop -m
//! immediate`, against a bus without adapters in the same run (p50 / p99 /
//! p99.9 printed). `pg_outage/route_{db_up,db_slow,db_down}`: the same
//! through a `Router` (best effort, not local) to the outlets of a second
//! bus's routable archive and queue.
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
use topicbus::postgres::{migrate, ArchiveBuilder, PgArchive, PgQueue, QueueBuilder};
use topicbus::route::{Router, Strategy};
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

impl<'a> postgres::types::FromSql<'a> for Uuid {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(u128::from_be_bytes(raw.try_into()?)))
    }

    postgres::types::accepts!(UUID);
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

/// Publishes whole batches covering `n` on `bus` and waits until `done`
/// counted them all; returns the time as the time of `n`.
fn through(bus: &Bus<String>, topic: &Topic, n: u64, done: impl Fn() -> u64) -> Duration {
    let m = whole(n);
    let base = done();
    let start = Instant::now();
    for i in 0..m {
        bus.publish(topic, payload(i)).expect("publish");
    }
    // Sleeping, not spinning: the adapter's threads and the server need
    // both cores more than this thread needs a prompt wake-up.
    while done() < base + m {
        std::thread::sleep(Duration::from_micros(200));
    }
    scaled(start.elapsed(), n, m)
}

/// The time of `m` rows as the time of `n`.
fn scaled(t: Duration, n: u64, m: u64) -> Duration {
    t.mul_f64(n as f64 / m as f64)
}

/// A private cluster set for benchmarking, a database on it, and a client
/// of that database with the adapter's schema migrated.
fn cluster() -> (PgCluster, String, postgres::Client) {
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
        .batch_execute("SET synchronous_commit = on")
        .expect("durable commits");
    (cluster, db, client)
}

fn archive(c: &mut Criterion) {
    let (_cluster, db, mut client) = cluster();
    client
        .batch_execute(
            "CREATE TEMP TABLE raw_stage (msg_id uuid, topic text, published_at timestamptz,
                                          origin text, envelope bytea) ON COMMIT DELETE ROWS",
        )
        .expect("staging");
    let codec = codec();
    let topic = Topic::parse("orders.eu.created").expect("topic");
    // A bus and its archive, exporting everything, with envelopes of
    // `codec`, written by `writers` connections.
    let archived = |codec: Codec, writers: usize| {
        let bus = Bus::<String>::builder().workers(1).build().expect("bus");
        let archive = PgArchive::builder(db.as_str(), codec)
            .export("orders.#")
            .writers(writers)
            .batch(BATCH, Duration::from_millis(50))
            .outbox(1 << 21, OverflowPolicy::DropOldest)
            .start(&bus)
            .expect("archive");
        (bus, archive)
    };
    let (bus, archive) = archived(codec.clone(), 1);
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
            through(&bus, &topic, n, || archive.stats().archived)
        })
    });
    // The same with envelopes neither signed nor checked: what the HMAC
    // costs the archive (a table only trusted writers reach).
    let (plain_bus, plain) = archived(Codec::unsigned(), 1);
    g.bench_function("adapter_unsigned", |b| {
        b.iter_custom(|n| {
            empty(&mut client);
            through(&plain_bus, &topic, n, || plain.stats().archived)
        })
    });
    // Two writer connections: one batch's COPY streams while the other's
    // commits.
    let (two_bus, two) = archived(codec.clone(), 2);
    g.bench_function("adapter_2_writers", |b| {
        b.iter_custom(|n| {
            empty(&mut client);
            through(&two_bus, &topic, n, || two.stats().archived)
        })
    });
    g.finish();
    for a in [archive, plain, two] {
        let s = a.shutdown(Duration::from_secs(30));
        assert_eq!(
            (s.outbox_dropped, s.duplicates, s.unsent),
            (0, 0, 0),
            "the benchmark's outbox never dropped: {s:?}"
        );
    }
}

/// What the raw queue loop does besides the statements.
#[derive(Clone, Copy)]
enum Handling {
    /// Nothing: prepared envelopes in, nothing done with them out (the
    /// database's ceiling).
    Nothing,
    /// Build, encode and sign each message before the insert; verify and
    /// decode it after the claim (the adapter's work around its bus).
    Decode,
}

/// The raw queue loop: one thread inserts `n` rows in batches of `BATCH`
/// (`INSERT … SELECT FROM unnest … ON CONFLICT DO NOTHING`), this one
/// claims `CLAIM` at a time (`FOR UPDATE SKIP LOCKED`, lease, attempt) and
/// deletes them; returns when all `n` are deleted.
fn raw_queue(
    producer: &mut postgres::Client,
    consumer: &mut postgres::Client,
    n: u64,
    codec: &Codec,
    handling: Handling,
    mut envelope: impl FnMut(u64) -> (u128, Vec<u8>) + Send,
) {
    let insert = "INSERT INTO topicbus.queue (queue, msg_id, topic, priority, visible_at, envelope)
                  SELECT 'raw', u.id, 'orders.eu.created', 1, now(), u.envelope
                  FROM unnest($1::uuid[], $2::bytea[]) AS u(id, envelope)
                  ON CONFLICT DO NOTHING";
    let claim = "WITH c AS MATERIALIZED (
                     SELECT msg_id FROM topicbus.queue
                     WHERE queue = 'raw' AND visible_at <= now()
                     ORDER BY priority, visible_at, msg_id LIMIT $1
                     FOR UPDATE SKIP LOCKED)
                 UPDATE topicbus.queue q
                 SET visible_at = now() + interval '30 seconds', attempts = q.attempts + 1
                 FROM c WHERE q.queue = 'raw' AND q.msg_id = c.msg_id
                 RETURNING q.msg_id, q.envelope";
    let delete = "DELETE FROM topicbus.queue WHERE queue = 'raw' AND msg_id = ANY($1)";
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut i = 0;
            while i < n {
                let end = (i + BATCH as u64).min(n);
                let (ids, envelopes): (Vec<Uuid>, Vec<Vec<u8>>) = (i..end)
                    .map(&mut envelope)
                    .map(|(id, e)| (Uuid(id), e))
                    .unzip();
                producer
                    .execute(insert, &[&ids, &envelopes])
                    .expect("insert");
                i = end;
            }
        });
        let mut done = 0;
        while done < n {
            let rows = consumer.query(claim, &[&CLAIM]).expect("claim");
            if rows.is_empty() {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            let mut ids = Vec::with_capacity(rows.len());
            for r in &rows {
                if let Handling::Decode = handling {
                    let bytes: &[u8] = r.get(1);
                    codec.decode::<String>(bytes).expect("decode");
                }
                ids.push(r.get::<_, Uuid>(0));
            }
            done += consumer.execute(delete, &[&ids]).expect("ack");
        }
    });
}

/// Rows claimed per statement, by both sides.
const CLAIM: i64 = 500;

fn queue(c: &mut Criterion) {
    let (_cluster, db, mut consumer) = cluster();
    let mut producer = postgres::Client::connect(&db, postgres::NoTls).expect("connect");
    producer
        .batch_execute("SET synchronous_commit = on")
        .expect("durable commits");
    let codec = codec();
    let topic = Topic::parse("orders.eu.created").expect("topic");
    let prepared = codec
        .encode(&Message::builder(topic.clone(), payload(0)).build(), "raw")
        .expect("encode");
    let empty = |client: &mut postgres::Client| {
        client
            .batch_execute("TRUNCATE topicbus.queue")
            .expect("truncate");
    };

    let mut g = c.benchmark_group("pg_queue");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    for (name, handling) in [
        ("raw_skip_locked", Handling::Nothing),
        ("raw_codec", Handling::Decode),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|n| {
                empty(&mut consumer);
                let m = whole(n);
                let start = Instant::now();
                raw_queue(
                    &mut producer,
                    &mut consumer,
                    m,
                    &codec,
                    handling,
                    |i| match handling {
                        Handling::Nothing => {
                            (topicbus::MessageId::new().as_u128(), prepared.clone())
                        }
                        Handling::Decode => {
                            let m = Message::builder(topic.clone(), payload(i)).build();
                            (m.id().as_u128(), codec.encode(&m, "raw").expect("encode"))
                        }
                    },
                );
                scaled(start.elapsed(), n, m)
            })
        });
    }
    for consumers in [1, 2] {
        let out = Bus::<String>::builder().workers(1).build().expect("bus");
        let input = Bus::<String>::builder().workers(1).build().expect("bus");
        let _handler = input
            .subscribe("orders.#", |_m: &Message<String>| ())
            .expect("subscribe");
        let enqueue = PgQueue::builder(db.as_str(), codec.clone(), "orders")
            .export("orders.#")
            .batch(BATCH, Duration::from_millis(5))
            .outbox(1 << 21, OverflowPolicy::DropNewest)
            .start(&out)
            .expect("producer");
        let consume = PgQueue::builder(db.as_str(), codec.clone(), "orders")
            .consume()
            .consumers(consumers)
            .claim(CLAIM as usize)
            .start(&input)
            .expect("consumer");
        g.bench_function(format!("adapter_{consumers}_consumer"), |b| {
            b.iter_custom(|n| {
                empty(&mut consumer);
                through(&out, &topic, n, || consume.stats().acked)
            })
        });
        let (p, q) = (
            enqueue.shutdown(Duration::from_secs(30)),
            consume.shutdown(Duration::from_secs(30)),
        );
        assert_eq!(
            (p.outbox_dropped, p.duplicates, q.retried, q.dead_lettered),
            (0, 0, 0, 0),
            "the benchmark lost or retried nothing: {p:?} {q:?}"
        );
    }
    g.finish();
}

/// Runs `publish` for a sample of `n`, timing each call into `latency`
/// (nanoseconds); returns the sample's total.
fn timed_publishes(
    publish: &dyn Fn(String),
    n: u64,
    latency: &mut hdrhistogram::Histogram<u64>,
) -> Duration {
    let mut total = Duration::ZERO;
    for i in 0..n {
        let payload = payload(i);
        let start = Instant::now();
        publish(payload);
        let took = start.elapsed();
        total += took;
        latency.saturating_record(took.as_nanos() as u64);
    }
    total
}

/// An archive and a queue on `bus` with the outage benchmark's settings;
/// `setup` adds exports or makes them routable.
fn outage_adapters(
    db: &str,
    codec: &Codec,
    bus: &Bus<String>,
    archive: impl FnOnce(ArchiveBuilder) -> ArchiveBuilder,
    queue: impl FnOnce(QueueBuilder) -> QueueBuilder,
) -> (PgArchive<String>, PgQueue<String>) {
    let a = archive(
        PgArchive::builder(db, codec.clone())
            .outbox(100_000, OverflowPolicy::DropOldest)
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500)),
    )
    .start(bus)
    .expect("archive");
    let q = queue(
        PgQueue::builder(db, codec.clone(), "orders")
            .outbox(100_000, OverflowPolicy::DropNewest)
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500)),
    )
    .start(bus)
    .expect("queue");
    (a, q)
}

/// Every insert statement into the archive and the queue waits 50 ms: a
/// database that is up but slow.
const SLOW: &str = "
    CREATE FUNCTION topicbus.bench_slow() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$;
    CREATE TRIGGER bench_slow BEFORE INSERT ON topicbus.archive
        FOR EACH STATEMENT EXECUTE FUNCTION topicbus.bench_slow();
    CREATE TRIGGER bench_slow BEFORE INSERT ON topicbus.queue
        FOR EACH STATEMENT EXECUTE FUNCTION topicbus.bench_slow();";

/// The publish latency of a bus whose archive and queue export every
/// message, and of a router to a second bus's routable archive and queue,
/// while the database is up, slow and down, against a bus without
/// adapters, in the same run. Percentiles go to standard output.
fn outage(c: &mut Criterion) {
    let (mut cluster, db, mut client) = cluster();
    let codec = codec();
    let topic = Topic::parse("orders.eu.created").expect("topic");
    let plain = Bus::<String>::builder().workers(1).build().expect("bus");
    let bus = Bus::<String>::builder().workers(1).build().expect("bus");
    let (archive, queue) = outage_adapters(
        &db,
        &codec,
        &bus,
        |a| a.export("orders.#"),
        |q| q.export("orders.#"),
    );
    let rbus = Bus::<String>::builder().workers(1).build().expect("bus");
    let (rarchive, rqueue) = outage_adapters(
        &db,
        &codec,
        &rbus,
        ArchiveBuilder::routable,
        QueueBuilder::routable,
    );
    let router = Router::builder(&rbus)
        .to(rarchive.outlet().expect("outlet"))
        .to(rqueue.outlet().expect("outlet"))
        .strategy(Strategy::BestEffort)
        .local(false)
        .build()
        .expect("router");
    let mut g = c.benchmark_group("pg_outage");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    let run = |g: &mut criterion::BenchmarkGroup<'_, _>, name: &str, publish: &dyn Fn(String)| {
        let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
            .expect("histogram");
        g.bench_function(name, |b| {
            b.iter_custom(|n| timed_publishes(publish, n, &mut latency))
        });
        println!(
            "pg_outage/{name}: publish latency p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns ({} publishes)",
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99),
            latency.value_at_quantile(0.999),
            latency.max(),
            latency.len()
        );
    };
    let on = |b: &Bus<String>| {
        let (b, t) = (b.clone(), topic.clone());
        move |p: String| {
            b.publish(&t, p).expect("publish");
        }
    };
    let routed = |p: String| {
        router.publish(&topic, p).expect("best effort never fails");
    };
    run(&mut g, "publish_no_adapter", &on(&plain));
    run(&mut g, "publish_db_up", &on(&bus));
    run(&mut g, "route_db_up", &routed);
    client.batch_execute(SLOW).expect("slow triggers");
    run(&mut g, "publish_db_slow", &on(&bus));
    run(&mut g, "route_db_slow", &routed);
    let batches = archive.stats().batches;
    cluster.crash();
    run(&mut g, "publish_db_down", &on(&bus));
    run(&mut g, "route_db_down", &routed);
    g.finish();
    let (a, q) = (archive.stats(), queue.stats());
    println!(
        "pg_outage: {batches} archive batches written before the crash; while slow and down the archive dropped {} and the queue {} (counted), neither connected: {} {}",
        a.outbox_dropped, q.outbox_dropped, a.connected, q.producer_connected
    );
    cluster.start_again();
    drop((archive, queue, router, rarchive, rqueue));
}

criterion_group!(benches, archive, queue, outage);
criterion_main!(benches);
