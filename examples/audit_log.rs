//! An audit log: every message on the bus archived in PostgreSQL (binary
//! `COPY` into a daily-partitioned table), then read back in commit order
//! and replayed onto a fresh bus, from the start and from a point in time.
//!
//! ```text
//! cargo run --release --example audit_log --features postgres
//! cargo run --release --example audit_log --features postgres -- "<conninfo>"
//! ```
//!
//! With no argument it starts a private PostgreSQL 15 cluster (binaries
//! from `PG_BIN`, default `/usr/lib/postgresql/15/bin`).

#[path = "../tests/support/pg_server.rs"]
mod pg_server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use topicbus::envelope::{Codec, KeyRing};
use topicbus::postgres::{ArchiveReader, Cursor, PgArchive};
use topicbus::{Bus, Message};

type Error = Box<dyn std::error::Error>;

fn codec() -> Result<Codec, Error> {
    let key = std::env::var("TOPICBUS_KEY")
        .unwrap_or_else(|_| "demo key: set TOPICBUS_KEY in production!".into());
    Ok(Codec::signed(KeyRing::new("k1", key)?))
}

fn run(db: &str) -> Result<(), Error> {
    // 1. The application: its bus, and the archive taking everything.
    let bus = Bus::<String>::builder().build()?;
    let archive = PgArchive::builder(db, codec()?)
        .node_id("shop-1")
        .export("#")
        .retention(Duration::from_secs(90 * 86_400))
        .start(&bus)?;
    let mut cut = None;
    for i in 0..3_000u32 {
        if i == 2_000 {
            cut = Some(SystemTime::now());
        }
        let topic = match i % 3 {
            0 => "orders.created",
            1 => "payments.captured",
            _ => "users.login",
        };
        bus.publish(topic, format!("event {i}"))?;
    }
    let stats = archive.shutdown(Duration::from_secs(30));
    bus.shutdown(Duration::from_secs(5))?;
    println!(
        "archived {} of {} events in {} batches ({} dropped, {} unsent)",
        stats.archived, stats.exported, stats.batches, stats.outbox_dropped, stats.unsent
    );

    // 2. The auditor, later: everything, in commit order, onto a fresh bus.
    let auditor = Bus::<String>::builder().build()?;
    let by_topic: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let counts = Arc::clone(&by_topic);
    let _count = auditor.subscribe("#", move |m: &Message<String>| {
        if let Ok(mut c) = counts.lock() {
            *c.entry(m.topic().to_string()).or_default() += 1;
        }
    })?;
    let mut reader = ArchiveReader::connect(db, codec()?)?;
    let mut at = Cursor::START;
    let mut replayed = 0;
    loop {
        let page = reader.read::<String>(&at, 500)?;
        if page.is_empty() {
            break;
        }
        if page.rejected > 0 {
            return Err(format!("{} rows failed verification", page.rejected).into());
        }
        for m in page.messages {
            auditor.publish_message(m.message)?;
            replayed += 1;
        }
        at = page.next;
    }
    auditor.shutdown(Duration::from_secs(5))?;
    let by_topic = by_topic.lock().map_err(|_| "a counter panicked")?.clone();
    println!("replayed {replayed} from the start (resume after {at}): {by_topic:?}");

    // 3. From a point in time: the last 1,000.
    let since = cut.ok_or("no cut")?;
    let mut at = Cursor::START;
    let mut later: Vec<Message<String>> = Vec::new();
    loop {
        let page = reader.read_since::<String>(since, &at, 500)?;
        if page.is_empty() {
            break;
        }
        later.extend(page.messages.into_iter().map(|m| m.message));
        at = page.next;
    }
    println!(
        "since the cut: {} events, first {:?}",
        later.len(),
        later.first().map(|m| m.payload().clone())
    );
    // The database keeps microseconds: an event published in the same
    // microsecond just before the cut counts as at the cut.
    let tail: Vec<String> = (2_000..3_000).map(|i| format!("event {i}")).collect();
    let got: Vec<&String> = later.iter().map(Message::payload).collect();
    if replayed != 3_000 || !got.ends_with(&tail.iter().collect::<Vec<_>>()) || got.len() > 1_010 {
        return Err("the archive is not complete".into());
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    match std::env::args().nth(1) {
        Some(db) => run(&db),
        None => {
            let cluster = pg_server::PgCluster::start()
                .ok_or("PostgreSQL 15 binaries not found (set PG_BIN)")?;
            run(&cluster.database())
        }
    }
}
