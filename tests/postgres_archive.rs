//! The PostgreSQL archive against a real PostgreSQL 15 cluster: migrations,
//! exact archive and replay, deduplication between writers, the commit
//! horizon with a transaction held open, retention by partition, forged
//! rows, and a server crash (`pg_ctl stop -m immediate`) mid-run.
#![cfg(feature = "postgres")]

#[path = "support/pg_server.rs"]
mod pg_server;

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use common::wait_until;
use pg_server::PgCluster;
use topicbus::envelope::{Codec, KeyRing};
use topicbus::postgres::{
    migrate, ArchiveReader, ArchiveStats, Cursor, PgArchive, PgError, SCHEMA_VERSION,
};
use topicbus::{Bus, Message, MessageId, OverflowPolicy, Topic};

fn codec() -> Codec {
    Codec::signed(KeyRing::new("test", [42u8; 32]).unwrap())
}

fn bus() -> Bus<String> {
    Bus::<String>::builder().workers(1).build().unwrap()
}

fn topic(s: &str) -> Topic {
    Topic::parse(s).unwrap()
}

/// Waits (yielding) until `cond` holds; panics with `what` and the
/// archive's counters after `secs`.
fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool, stats: impl Fn() -> String) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}: {}",
            stats()
        );
        std::thread::yield_now();
    }
}

/// Every message of the archive, read in pages of `page` from the start.
fn read_all(reader: &mut ArchiveReader, page: usize) -> (Vec<Message<String>>, u64, Cursor) {
    let mut at = Cursor::START;
    let mut out = Vec::new();
    let mut rejected = 0;
    loop {
        let p = reader.read::<String>(&at, page).unwrap();
        if p.is_empty() {
            return (out, rejected, at);
        }
        assert!(p.next > at, "the cursor moves forward");
        rejected += p.rejected;
        out.extend(p.messages.into_iter().map(|d| d.message));
        at = p.next;
    }
}

fn count(cluster: &PgCluster, db: &str, sql: &str) -> i64 {
    let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
    let _ = cluster;
    c.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn migrations_are_idempotent_serialised_and_refuse_a_newer_schema() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
                migrate(&mut c, "tb")
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), SCHEMA_VERSION);
    }
    let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    assert_eq!(
        migrate(&mut c, "tb").unwrap(),
        SCHEMA_VERSION,
        "again: a no-op"
    );
    let versions: Vec<i32> = c
        .query(
            "SELECT version FROM tb.schema_version ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    // A newer topicbus was here.
    c.execute(
        "INSERT INTO tb.schema_version (version) VALUES ($1)",
        &[&(SCHEMA_VERSION + 1)],
    )
    .unwrap();
    match migrate(&mut c, "tb") {
        Err(PgError::SchemaTooNew {
            found, supported, ..
        }) => assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION)),
        other => panic!("want SchemaTooNew, got {other:?}"),
    }
    let bus = bus();
    let err = PgArchive::builder(db.as_str(), codec())
        .schema("tb")
        .export("a.#")
        .start(&bus)
        .unwrap_err();
    assert!(matches!(err, PgError::SchemaTooNew { .. }), "{err}");
    // Bad input is refused before any I/O.
    assert!(matches!(
        migrate(&mut c, "x;drop"),
        Err(PgError::Invalid(_))
    ));
}

#[test]
fn archive_and_replay_are_exact_in_publish_order() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let archive = PgArchive::builder(db.as_str(), codec())
        .export("orders.#")
        .batch(100, Duration::from_millis(10))
        .start(&bus)
        .unwrap();
    let mut ids = Vec::new();
    let mut cut = None;
    for i in 0..2_500u32 {
        if i == 1_000 {
            cut = Some(SystemTime::now());
        }
        let m = Message::builder(topic("orders.eu.created"), format!("order {i}")).build();
        ids.push(m.id());
        bus.publish_message(m).unwrap();
        if i % 25 == 0 {
            bus.publish(topic("other.thing"), "not archived".into())
                .unwrap();
        }
    }
    wait_for(
        "2,500 archived",
        60,
        || archive.stats().archived == 2_500,
        || format!("{:?}", archive.stats()),
    );
    let stats = archive.shutdown(Duration::from_secs(10));
    assert_eq!(
        (
            stats.exported,
            stats.duplicates,
            stats.unsent,
            stats.outbox_dropped
        ),
        (2_500, 0, 0, 0),
        "{stats:?}"
    );
    assert!(stats.batches >= 25, "batches of at most 100: {stats:?}");
    assert_eq!(stats.staged_batches, 0, "no duplicate: straight COPY");

    let mut reader = ArchiveReader::connect(&db, codec()).unwrap();
    let (got, rejected, end) = read_all(&mut reader, 300);
    assert_eq!(rejected, 0);
    let got_ids: Vec<MessageId> = got.iter().map(Message::id).collect();
    assert_eq!(got_ids, ids, "every message once, in publish order");
    assert_eq!(got[7].payload(), "order 7");
    assert_eq!(got[7].topic().as_str(), "orders.eu.created");
    // At the end: nothing more, and the cursor resumes there.
    assert!(reader.read::<String>(&end, 10).unwrap().is_empty());

    // Replay from a time: the messages published from the cut on.
    let since = cut.unwrap();
    let mut at = Cursor::START;
    let mut later = Vec::new();
    loop {
        let p = reader.read_since::<String>(since, &at, 700).unwrap();
        if p.is_empty() {
            break;
        }
        later.extend(p.messages.into_iter().map(|d| d.message.id()));
        at = p.next;
    }
    assert_eq!(later, ids[1_000..].to_vec());
}

#[test]
fn two_writers_archive_each_message_once() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let start = |node: &str| {
        PgArchive::builder(db.as_str(), codec())
            .node_id(node)
            .export("jobs.#")
            .batch(50, Duration::from_millis(5))
            .start(&bus)
            .unwrap()
    };
    let (a, b) = (start("a"), start("b"));
    for i in 0..1_000u32 {
        bus.publish(topic("jobs.new"), format!("job {i}")).unwrap();
    }
    let done = || {
        let (sa, sb) = (a.stats(), b.stats());
        sa.archived + sa.duplicates == 1_000 && sb.archived + sb.duplicates == 1_000
    };
    wait_for("both writers through", 60, done, || {
        format!("{:?} {:?}", a.stats(), b.stats())
    });
    let (sa, sb) = (
        a.shutdown(Duration::from_secs(5)),
        b.shutdown(Duration::from_secs(5)),
    );
    assert_eq!(sa.archived + sb.archived, 1_000, "{sa:?} {sb:?}");
    assert_eq!(sa.duplicates + sb.duplicates, 1_000, "{sa:?} {sb:?}");
    // The second COPY of a batch hit the primary key and went staged.
    assert!(sa.staged_batches + sb.staged_batches > 0, "{sa:?} {sb:?}");
    assert_eq!(sa.failed_writes + sb.failed_writes, 0, "{sa:?} {sb:?}");
    assert_eq!(
        count(&cluster, &db, "SELECT count(*) FROM topicbus.archive"),
        1_000
    );
    let mut reader = ArchiveReader::connect(&db, codec()).unwrap();
    let (got, _, _) = read_all(&mut reader, 128);
    let distinct: HashSet<MessageId> = got.iter().map(Message::id).collect();
    assert_eq!((got.len(), distinct.len()), (1_000, 1_000));
}

#[test]
fn readers_stop_at_a_transaction_still_open_and_miss_nothing_after_it() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let archive = PgArchive::builder(db.as_str(), codec())
        .export("audit.#")
        .batch(10, Duration::from_millis(5))
        .start(&bus)
        .unwrap();
    bus.publish(topic("audit.first"), "first".into()).unwrap();
    wait_until("the first row", || archive.stats().archived == 1);

    // A second writer's transaction: its row is written, not committed.
    let slow = Message::builder(topic("audit.slow"), "slow".to_string()).build();
    let envelope = codec().encode(&slow, "slow-writer").unwrap();
    let mut other = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let mut tx = other.transaction().unwrap();
    tx.execute(
        "INSERT INTO topicbus.archive (msg_id, topic, published_at, origin, envelope)
         VALUES ($1::text::uuid, 'audit.slow', now(), 'slow-writer', $2)",
        &[&slow.id().to_string(), &envelope],
    )
    .unwrap();

    for i in 0..20 {
        bus.publish(topic("audit.later"), format!("later {i}"))
            .unwrap();
    }
    wait_until("21 rows committed", || archive.stats().archived == 21);

    let mut reader = ArchiveReader::connect(&db, codec()).unwrap();
    let (before, _, at) = read_all(&mut reader, 100);
    let payloads: Vec<&str> = before.iter().map(|m| m.payload().as_str()).collect();
    assert_eq!(
        payloads,
        ["first"],
        "rows committed after the open transaction began are held back"
    );

    tx.commit().unwrap();
    let mut rest = Vec::new();
    let mut at = at;
    loop {
        let p = reader.read::<String>(&at, 100).unwrap();
        if p.is_empty() {
            break;
        }
        rest.extend(p.messages.into_iter().map(|d| d.message.payload().clone()));
        at = p.next;
    }
    assert_eq!(rest.len(), 21, "{rest:?}");
    assert_eq!(
        rest[0], "slow",
        "the held-back row comes first: its xid is older"
    );
    assert!(rest[1..].iter().all(|p| p.starts_with("later")));
    drop(archive);
}

#[test]
fn retention_drops_whole_partitions_past_it() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let archive = PgArchive::builder(db.as_str(), codec())
        .export("log.#")
        .batch(10, Duration::from_millis(5))
        .retention(Duration::from_secs(3 * 86_400))
        .start(&bus)
        .unwrap();
    let now = SystemTime::now();
    let old = now - Duration::from_secs(10 * 86_400);
    // Just inside the retention: its partition ends after the horizon, so
    // it stays, whatever the time of day.
    let edge = now - Duration::from_secs(3 * 86_400 - 10);
    for (at, what) in [(old, "old"), (old, "old"), (edge, "edge"), (now, "new")] {
        bus.publish_message(
            Message::builder(topic("log.line"), what.to_string())
                .timestamp(at)
                .build(),
        )
        .unwrap();
    }
    wait_until("4 rows", || archive.stats().archived == 4);
    assert_eq!(archive.stats().partitions_created, 3);
    let dropped = archive.enforce_retention().unwrap();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(dropped[0].starts_with("archive_p"), "{dropped:?}");
    assert_eq!(archive.stats().partitions_dropped, 1);
    assert!(
        archive.enforce_retention().unwrap().is_empty(),
        "nothing left to drop"
    );
    let mut reader = ArchiveReader::connect(&db, codec()).unwrap();
    let (left, _, _) = read_all(&mut reader, 10);
    let payloads: Vec<&str> = left.iter().map(|m| m.payload().as_str()).collect();
    assert_eq!(payloads, ["edge", "new"]);
    // The writer forgot the dropped partition: a late row for it makes it
    // again instead of failing its batch on a partition it thought it had.
    bus.publish_message(
        Message::builder(topic("log.line"), "late".to_string())
            .timestamp(old)
            .build(),
    )
    .unwrap();
    wait_until("the late row", || archive.stats().archived == 5);
    let s = archive.stats();
    assert_eq!((s.partitions_created, s.failed_writes), (4, 0), "{s:?}");
}

#[test]
fn several_writers_share_one_outbox_and_archive_each_message_once() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let archive = PgArchive::builder(db.as_str(), codec())
        .export("jobs.#")
        .writers(3)
        .batch(50, Duration::from_millis(5))
        .outbox(10_000, OverflowPolicy::DropOldest)
        .start(&bus)
        .unwrap();
    assert!(archive.stats().connected);
    let named = |sql: &str| {
        count(
            &cluster,
            &db,
            &format!(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database()
                   AND application_name LIKE 'topicbus archive writer %' {sql}"
            ),
        )
    };
    assert_eq!(named(""), 3, "one connection per writer");
    for i in 0..3_000u32 {
        bus.publish(topic("jobs.new"), format!("job {i}")).unwrap();
    }
    wait_for(
        "3,000 rows",
        60,
        || archive.stats().archived == 3_000,
        || format!("{:?}", archive.stats()),
    );
    // More than one writer committed batches (a writer that never wrote
    // still shows the statement it opened its session with).
    assert!(named("AND query NOT LIKE 'CREATE TEMP TABLE%'") >= 2);
    let s = archive.shutdown(Duration::from_secs(5));
    assert_eq!(
        (
            s.exported,
            s.archived,
            s.duplicates,
            s.unsent,
            s.outbox_dropped
        ),
        (3_000, 3_000, 0, 0, 0),
        "{s:?}"
    );
    assert!(s.batches >= 60 && s.failed_writes == 0, "{s:?}");
    assert!(!s.connected, "every writer is gone");
    let mut reader = ArchiveReader::connect(&db, codec()).unwrap();
    let (got, _, _) = read_all(&mut reader, 500);
    let distinct: HashSet<&str> = got.iter().map(|m| m.payload().as_str()).collect();
    assert_eq!((got.len(), distinct.len()), (3_000, 3_000));
    let bad = PgArchive::builder(db.as_str(), codec())
        .export("jobs.#")
        .writers(0)
        .start(&bus);
    assert!(matches!(bad, Err(PgError::Invalid(_))), "{bad:?}");
}

#[test]
fn rows_that_do_not_verify_are_rejected_never_returned() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let archive = PgArchive::builder(db.as_str(), codec())
        .export("pay.#")
        .batch(10, Duration::from_millis(5))
        .start(&bus)
        .unwrap();
    bus.publish(topic("pay.in"), "genuine".into()).unwrap();
    wait_until("the genuine row", || archive.stats().archived == 1);
    let mallory = Codec::signed(KeyRing::new("test", [66u8; 32]).unwrap());
    let forged = Message::builder(topic("pay.in"), "forged".to_string()).build();
    let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    for (id, bytes) in [
        (forged.id(), mallory.encode(&forged, "evil").unwrap()),
        (MessageId::new(), b"not an envelope".to_vec()),
    ] {
        c.execute(
            "INSERT INTO topicbus.archive (msg_id, topic, published_at, origin, envelope)
             VALUES ($1::text::uuid, 'pay.in', now(), 'evil', $2)",
            &[&id.to_string(), &bytes],
        )
        .unwrap();
    }
    let mut reader = ArchiveReader::connect(&db, codec()).unwrap();
    let (got, rejected, _) = read_all(&mut reader, 10);
    let payloads: Vec<&str> = got.iter().map(|m| m.payload().as_str()).collect();
    assert_eq!((payloads, rejected), (vec!["genuine"], 2));
}

/// The server crashes (`pg_ctl stop -m immediate`) mid-run and comes back:
/// every message accepted by the outbox is archived exactly once (a batch
/// whose commit reply was lost is written again and deduplicated); with the
/// server down, an outbox that overflows drops by its policy, counted, and
/// the ledger still balances.
#[test]
fn a_server_crash_loses_nothing_the_outbox_kept() {
    let Some(mut cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let archive = PgArchive::builder(db.as_str(), codec())
        .export("ledger.#")
        .batch(200, Duration::from_millis(5))
        .outbox(1_000, OverflowPolicy::DropOldest)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .start(&bus)
        .unwrap();
    let describe = |s: &ArchiveStats| format!("{s:?}");
    let mut published = 0u64;
    let mut publish = |n: u64| {
        for _ in 0..n {
            bus.publish(topic("ledger.entry"), format!("entry {published}"))
                .unwrap();
            published += 1;
        }
    };
    // Phase 1: steady traffic, the crash in the middle of it.
    publish(300);
    wait_for(
        "some rows",
        60,
        || archive.stats().archived > 0,
        || describe(&archive.stats()),
    );
    cluster.crash();
    // Phase 2: the server is down: 3,000 more, the outbox holds 1,000.
    publish(3_000);
    wait_for(
        "the writer to notice",
        60,
        || archive.stats().failed_writes > 0,
        || describe(&archive.stats()),
    );
    let health = bus.health();
    assert!(
        health
            .issues
            .iter()
            .any(|i| i.component == "postgres archive topicbus"
                && i.reason.starts_with("disconnected")),
        "the archive is degraded while the server is down: {health:?}"
    );
    cluster.start_again();
    publish(200);
    let settled = || {
        let s = archive.stats();
        s.outbox_depth == 0 && s.exported == s.archived + s.duplicates + s.encode_failed
    };
    wait_for("the backlog written", 120, settled, || {
        describe(&archive.stats())
    });
    let s = archive.shutdown(Duration::from_secs(10));
    assert!(
        bus.health().issues.is_empty(),
        "a shut-down archive is not a problem"
    );
    assert_eq!(s.unsent, 0, "{s:?}");
    assert!(
        s.outbox_dropped > 0,
        "the outbox overflowed while down: {s:?}"
    );
    assert!(s.reconnects > 0, "{s:?}");
    assert_eq!(
        published,
        s.exported + s.outbox_dropped,
        "every publish is taken or dropped by policy: {s:?}"
    );
    let rows = count(&cluster, &db, "SELECT count(*) FROM topicbus.archive");
    assert_eq!(rows as u64, s.archived, "nothing counted is missing: {s:?}");
    let distinct = count(
        &cluster,
        &db,
        "SELECT count(DISTINCT msg_id) FROM topicbus.archive",
    );
    assert_eq!(distinct, rows, "no message twice");
    assert_eq!(
        s.archived + s.duplicates,
        s.exported,
        "every message taken is archived once: {s:?}"
    );
}

#[test]
fn a_shutdown_while_the_database_is_down_counts_every_message_unsent() {
    let Some(mut cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let archive = PgArchive::builder(db.as_str(), codec())
        .export("orders.#")
        .batch(100, Duration::from_millis(1))
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .start(&bus)
        .unwrap();
    cluster.crash();
    for i in 0..5_000u32 {
        bus.publish(topic("orders.eu.created"), format!("order {i}"))
            .unwrap();
    }
    // Some batches are encoded and waiting for the writer, some still in
    // the outbox: all of them are unsent, none lost from the books.
    wait_for(
        "the writer to find the database down",
        60,
        || !archive.stats().connected,
        || format!("{:?}", archive.stats()),
    );
    let s = archive.shutdown(Duration::from_millis(200));
    assert_eq!(
        (s.exported, s.archived, s.unsent, s.outbox_dropped),
        (5_000, 0, 5_000, 0),
        "{s:?}"
    );
    assert_eq!(
        s.exported,
        s.archived + s.duplicates + s.encode_failed + s.unsent
    );
    cluster.start_again();
}

#[test]
fn an_archive_that_lost_its_connection_while_idle_connects_again_by_itself() {
    let Some(mut cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let archive = PgArchive::builder(db.as_str(), codec())
        .export("orders.#")
        .retention(Duration::from_secs(30 * 86_400))
        .retention_every(Duration::from_millis(20))
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .start(&bus)
        .unwrap();
    // Nothing is published: only the retention runs touch the database.
    cluster.crash();
    wait_for(
        "a retention run to find the database down",
        60,
        || !archive.stats().connected,
        || format!("{:?}", archive.stats()),
    );
    cluster.start_again();
    // Still nothing to write, and yet it connects again: a router, which
    // sends nothing to an outlet that is down, would otherwise never see
    // it come back.
    wait_for(
        "the archive to connect again while idle",
        60,
        || archive.stats().connected && archive.outlet().is_some_and(|o| o.is_up()),
        || format!("{:?}", archive.stats()),
    );
    let s = archive.shutdown(Duration::from_secs(5));
    assert_eq!((s.exported, s.unsent), (0, 0), "{s:?}");
}
