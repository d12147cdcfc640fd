//! A durable work queue in PostgreSQL shared by two worker processes, with
//! dead letters and their replay.
//!
//! The producer enqueues 1,000 jobs through its bus (and one more inside a
//! database transaction of its own, the transactional outbox); two worker
//! processes claim them (`FOR UPDATE SKIP LOCKED`) and run them; every
//! 100th job is poison and fails on every attempt, so after three attempts
//! it moves to the dead letters. The producer then looks at the dead
//! letters and replays them to a repair handler of its own.
//!
//! ```text
//! cargo run --release --example postgres_queue --features postgres
//! ```
//!
//! With no arguments it starts a private PostgreSQL 15 cluster (binaries
//! from `PG_BIN`, default `/usr/lib/postgresql/15/bin`) and runs the
//! workers as child processes of itself. Against your own database:
//! `… -- worker "<conninfo>" w1` (twice, in other terminals), then
//! `… -- producer "<conninfo>"`.

#[path = "../tests/support/pg_server.rs"]
mod pg_server;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use topicbus::envelope::{Codec, KeyRing};
use topicbus::postgres::{LetterQuery, PgDeadLetters, PgQueue};
use topicbus::{Bus, Message, Topic};

type Error = Box<dyn std::error::Error>;

const JOBS: u64 = 1_000;
/// Jobs 100, 200, … 900 (the 1,000th goes through the transaction).
const POISON: u64 = JOBS / 100 - 1;

fn codec() -> Result<Codec, Error> {
    let key = std::env::var("TOPICBUS_KEY")
        .unwrap_or_else(|_| "demo key: set TOPICBUS_KEY in production!".into());
    Ok(Codec::signed(KeyRing::new("k1", key)?))
}

/// A worker: claims jobs until its standard input closes, then drains and
/// reports.
fn worker(db: &str, name: &str) -> Result<(), Error> {
    let bus = Bus::<String>::builder().workers(2).build()?;
    let done = Arc::new(AtomicU64::new(0));
    let d = Arc::clone(&done);
    let _jobs = bus.subscribe("jobs.#", move |m: &Message<String>| -> Result<(), String> {
        if m.payload().contains("poison") {
            return Err(format!("cannot run {}", m.payload()));
        }
        d.fetch_add(1, Ordering::Relaxed);
        Ok(())
    })?;
    let queue = PgQueue::builder(db, codec()?, "jobs")
        .node_id(name)
        .consume()
        .claim(100)
        .max_attempts(3)
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .start(&bus)?;
    println!("{name}: ready");
    // Until the parent closes our standard input.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let s = queue.shutdown(Duration::from_secs(10));
    bus.shutdown(Duration::from_secs(10))?;
    println!(
        "{name}: ran {} jobs; claimed {}, acknowledged {}, retried {}, dead-lettered {}",
        done.load(Ordering::Relaxed),
        s.claimed,
        s.acked,
        s.retried,
        s.dead_lettered
    );
    if s.claimed != s.acked + s.retried + s.released + s.dead_lettered + s.unsettled {
        return Err(format!("{name}: a claimed job is unaccounted for: {s:?}").into());
    }
    Ok(())
}

/// The producer: enqueues the jobs, waits until the queue is empty, then
/// replays the dead letters to a repair handler.
fn producer(db: &str) -> Result<(), Error> {
    let bus = Bus::<String>::builder().workers(1).build()?;
    let queue = PgQueue::builder(db, codec()?, "jobs")
        .node_id("producer")
        .export("jobs.#")
        .start(&bus)?;
    let start = Instant::now();
    for i in 1..JOBS {
        let kind = if i % 100 == 0 { "poison" } else { "render" };
        bus.publish("jobs.render", format!("{kind} job {i}"))?;
    }
    // One more, inside a transaction of our own: queued if and only if the
    // order it belongs to commits.
    let mut client = postgres::Client::connect(db, postgres::NoTls)?;
    client.batch_execute("CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY)")?;
    let mut tx = client.transaction()?;
    tx.execute("INSERT INTO orders VALUES ($1)", &[&(JOBS as i64)])?;
    let last = Message::builder(Topic::parse("jobs.render")?, format!("render job {JOBS}")).build();
    queue.publish_in(&mut tx, &last)?;
    tx.commit()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut letters = PgDeadLetters::connect(db, codec()?)?;
    let poison = LetterQuery::new().queue("jobs");
    loop {
        let depth = queue.depth()?;
        if depth.total == 0 && queue.stats().outbox_depth == 0 && letters.count(&poison)? == POISON
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the queue did not drain: {depth:?} {:?}", queue.stats()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "producer: {JOBS} jobs through the queue in {:.2?}",
        start.elapsed()
    );
    let page = letters.query::<String>(&poison)?;
    for l in page.letters.iter().take(3) {
        println!(
            "producer: dead letter #{}: {:?} after {} attempts ({}, {:?})",
            l.id,
            l.message.payload(),
            l.attempts,
            l.reason,
            l.error
        );
    }
    // Replay: a repair handler takes the poison jobs on this bus.
    let repaired = Arc::new(AtomicU64::new(0));
    let r = Arc::clone(&repaired);
    let _repair = bus.subscribe("jobs.#", move |_m: &Message<String>| {
        r.fetch_add(1, Ordering::Relaxed);
    })?;
    let replayed = letters.republish(&bus, &poison)?;
    let stats = queue.shutdown(Duration::from_secs(10));
    bus.shutdown(Duration::from_secs(10))?;
    println!(
        "producer: enqueued {}, replayed {replayed} dead letters, repaired {}",
        stats.enqueued,
        repaired.load(Ordering::Relaxed)
    );
    if replayed != POISON || letters.count(&LetterQuery::new())? != 0 {
        return Err("the dead letters were not all replayed".into());
    }
    Ok(())
}

/// A private cluster, two worker processes, the producer here.
fn demo() -> Result<(), Error> {
    let cluster =
        pg_server::PgCluster::start().ok_or("PostgreSQL 15 binaries not found (set PG_BIN)")?;
    let db = cluster.database();
    // The schema exists before the workers race to create it.
    topicbus::postgres::migrate(
        &mut postgres::Client::connect(&db, postgres::NoTls)?,
        "topicbus",
    )?;
    let me = std::env::current_exe()?;
    let mut workers = Vec::new();
    for name in ["w1", "w2"] {
        workers.push(
            Command::new(&me)
                .args(["worker", &db, name])
                .stdin(Stdio::piped())
                .spawn()?,
        );
    }
    let produced = producer(&db);
    let mut ok = produced.is_ok();
    for mut w in workers {
        drop(w.stdin.take());
        ok &= w.wait()?.success();
    }
    produced?;
    if !ok {
        return Err("a worker failed".into());
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("worker") => worker(
            args.get(1).ok_or("worker <conninfo> <name>")?,
            args.get(2).map_or("worker", String::as_str),
        ),
        Some("producer") => producer(args.get(1).ok_or("producer <conninfo>")?),
        None => demo(),
        Some(other) => Err(format!("unknown role {other:?}: worker, producer, or none").into()),
    }
}
