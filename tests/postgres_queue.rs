//! The PostgreSQL durable queue against a real PostgreSQL 15 cluster:
//! exactly-once handling in the plain case, claims shared between two
//! consumers, lease expiry and extension, retry and the dead-letter move,
//! TTL, delay, priority, the transactional outbox, missed and killed
//! notifications, and a server crash (`pg_ctl stop -m immediate`) mid-run
//! with an ok / lost / duplicated ledger.
//!
//! Most "processes" here are separate buses with their own connections in
//! one test process: the database sees independent consumers, which is
//! what the claim, the leases and the notifications depend on; one test
//! shares the work with a consumer in a child process.
#![cfg(feature = "postgres")]

#[path = "support/pg_server.rs"]
mod pg_server;

mod common;

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pg_server::PgCluster;
use topicbus::envelope::{Codec, KeyRing};
use topicbus::postgres::{PgQueue, QueueBuilder, QueueStats};
use topicbus::{Bus, Message, MessageId, OverflowPolicy, Priority, Topic};

fn codec() -> Codec {
    Codec::signed(KeyRing::new("test", [42u8; 32]).unwrap())
}

fn bus() -> Bus<String> {
    Bus::<String>::builder().workers(2).build().unwrap()
}

fn topic(s: &str) -> Topic {
    Topic::parse(s).unwrap()
}

fn message(t: &str, payload: &str) -> Message<String> {
    Message::builder(topic(t), payload.to_owned()).build()
}

/// A consumer of `queue` with test-sized timings.
fn consumer(db: &str, queue: &str) -> QueueBuilder {
    PgQueue::builder(db, codec(), queue)
        .consume()
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(40))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
}

/// Waits (yielding) until `cond` holds; panics with `what` and `state()`
/// after `secs`.
fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool, state: impl Fn() -> String) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}: {}",
            state()
        );
        std::thread::yield_now();
    }
}

/// Every claimed row and every exported message is in exactly one final
/// state.
fn assert_accounted(s: &QueueStats) {
    assert_eq!(
        s.exported,
        s.enqueued + s.duplicates + s.encode_failed + s.unsent,
        "{s:?}"
    );
    assert_eq!(
        s.claimed,
        s.acked + s.retried + s.released + s.dead_lettered + s.unsettled,
        "{s:?}"
    );
}

/// Ids handled by a subscription, in order.
type Log = Arc<Mutex<Vec<MessageId>>>;

fn record(bus: &Bus<String>, pattern: &str) -> (Log, topicbus::Subscription) {
    let log = Log::default();
    let l = Arc::clone(&log);
    let s = bus
        .subscribe(pattern, move |m: &Message<String>| {
            l.lock().unwrap().push(m.id());
        })
        .unwrap();
    (log, s)
}

fn scalar(db: &str, sql: &str) -> i64 {
    let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
    c.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn exported_messages_are_handled_once_and_deleted() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let (log, _s) = record(&bus, "jobs.#");
    let queue = consumer(&db, "jobs")
        .export("jobs.#")
        .batch(200, Duration::from_millis(2))
        .start(&bus)
        .unwrap();
    // The queue's own deliveries match the export pattern too: they must
    // not be enqueued again (the origin header marks them).
    let mut sent = Vec::new();
    for i in 0..2_000 {
        let m = message("jobs.render", &format!("job {i}"));
        sent.push(m.id());
        bus.publish_message(m).unwrap();
    }
    // Every publish is seen twice locally: once as published, once as
    // delivered by the queue.
    wait_for(
        "4,000 local deliveries",
        60,
        || log.lock().unwrap().len() >= 4_000 && queue.stats().acked >= 2_000,
        || format!("{:?}", queue.stats()),
    );
    let s = queue.shutdown(Duration::from_secs(10));
    assert_accounted(&s);
    assert_eq!(
        (s.exported, s.enqueued, s.duplicates, s.claimed, s.acked),
        (2_000, 2_000, 0, 2_000, 2_000),
        "{s:?}"
    );
    assert_eq!(
        (s.retried, s.dead_lettered, s.unsettled),
        (0, 0, 0),
        "{s:?}"
    );
    let mut counts: HashMap<MessageId, usize> = HashMap::new();
    for id in log.lock().unwrap().iter() {
        *counts.entry(*id).or_default() += 1;
    }
    assert!(sent.iter().all(|id| counts.get(id) == Some(&2)));
    assert_eq!(counts.len(), 2_000);
    assert_eq!(scalar(&db, "SELECT count(*) FROM topicbus.queue"), 0);
}

#[test]
fn two_consumers_share_the_work_and_handle_each_message_once() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let producer_bus = bus();
    let producer = PgQueue::builder(db.as_str(), codec(), "work")
        .export("work.#")
        .batch(100, Duration::from_millis(2))
        .start(&producer_bus)
        .unwrap();
    let (bus_a, bus_b) = (bus(), bus());
    let (log_a, _sa) = record(&bus_a, "work.#");
    let (log_b, _sb) = record(&bus_b, "work.#");
    let a = consumer(&db, "work").claim(25).start(&bus_a).unwrap();
    let b = consumer(&db, "work").claim(25).start(&bus_b).unwrap();
    let mut sent = Vec::new();
    for i in 0..4_000 {
        let m = message("work.item", &i.to_string());
        sent.push(m.id());
        producer_bus.publish_message(m).unwrap();
    }
    let handled = || log_a.lock().unwrap().len() + log_b.lock().unwrap().len();
    wait_for(
        "4,000 handled",
        60,
        || handled() >= 4_000 && a.stats().acked + b.stats().acked >= 4_000,
        || format!("{:?} {:?}", a.stats(), b.stats()),
    );
    let (sa, sb) = (
        a.shutdown(Duration::from_secs(5)),
        b.shutdown(Duration::from_secs(5)),
    );
    let sp = producer.shutdown(Duration::from_secs(5));
    for s in [&sa, &sb, &sp] {
        assert_accounted(s);
    }
    assert_eq!(sp.enqueued, 4_000, "{sp:?}");
    let (na, nb) = (log_a.lock().unwrap().len(), log_b.lock().unwrap().len());
    assert_eq!(na + nb, 4_000, "no message handled twice");
    let mut all: Vec<MessageId> = log_a.lock().unwrap().clone();
    all.extend(log_b.lock().unwrap().iter());
    all.sort();
    sent.sort();
    assert_eq!(all, sent, "every message by exactly one consumer");
    // SKIP LOCKED shares the claims: neither consumer starves.
    assert!(
        na >= 800 && nb >= 800,
        "both consumers took a fair share: {na} / {nb}"
    );
}

/// The consumer process of
/// [`two_processes_share_the_work_and_handle_each_message_once`]: runs
/// only in the child that test spawns (with `TOPICBUS_PG_PEER` set to the
/// database), prints `@@handled <id>` per message, and stops when its
/// standard input closes.
#[test]
fn two_process_peer() {
    let Ok(db) = std::env::var("TOPICBUS_PG_PEER") else {
        return; // not the child: nothing to do
    };
    let bus = bus();
    let _s = bus
        .subscribe("split.#", |m: &Message<String>| {
            println!("@@handled {}", m.id());
        })
        .unwrap();
    let queue = consumer(&db, "split").claim(25).start(&bus).unwrap();
    println!("@@ready");
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    let s = queue.shutdown(Duration::from_secs(10));
    assert_accounted(&s);
    bus.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn two_processes_share_the_work_and_handle_each_message_once() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    // The schema exists before the two race to create it.
    topicbus::postgres::migrate(
        &mut postgres::Client::connect(&db, postgres::NoTls).unwrap(),
        "topicbus",
    )
    .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "two_process_peer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TOPICBUS_PG_PEER", &db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (ready_tx, ready) = mpsc::channel();
    let (theirs_tx, theirs) = mpsc::channel::<MessageId>();
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            // The harness may print the test's name on the same line.
            let line = line.unwrap();
            let Some(at) = line.find("@@") else { continue };
            let said = &line[at + 2..];
            if said == "ready" {
                ready_tx.send(()).unwrap();
            } else if let Some(id) = said.strip_prefix("handled ") {
                theirs_tx.send(id.parse().unwrap()).unwrap();
            }
        }
    });
    ready
        .recv_timeout(Duration::from_secs(60))
        .expect("the peer consumer started");
    let mine_bus = bus();
    let (mine, _s) = record(&mine_bus, "split.#");
    let me = consumer(&db, "split").claim(25).start(&mine_bus).unwrap();
    let producer_bus = bus();
    let producer = PgQueue::builder(db.as_str(), codec(), "split")
        .export("split.#")
        .batch(100, Duration::from_millis(2))
        .start(&producer_bus)
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..4_000 {
        let m = message("split.item", &i.to_string());
        sent.push(m.id());
        producer_bus.publish_message(m).unwrap();
    }
    let mut other = Vec::new();
    wait_for(
        "4,000 handled by the two processes",
        60,
        || {
            other.extend(theirs.try_iter());
            mine.lock().unwrap().len() + other.len() >= 4_000
        },
        || format!("{:?}", me.stats()),
    );
    let sp = producer.shutdown(Duration::from_secs(5));
    let sm = me.shutdown(Duration::from_secs(5));
    drop(child.stdin.take()); // the peer drains and stops
    assert!(child.wait().unwrap().success(), "the peer process failed");
    reader.join().unwrap();
    other.extend(theirs.try_iter());
    assert_accounted(&sp);
    assert_accounted(&sm);
    let (na, nb) = (mine.lock().unwrap().len(), other.len());
    let mut all: Vec<MessageId> = mine.lock().unwrap().clone();
    all.extend(&other);
    all.sort();
    sent.sort();
    assert_eq!(all, sent, "every message by exactly one process, once");
    assert!(
        na >= 800 && nb >= 800,
        "both processes took a fair share: {na} / {nb}"
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM topicbus.queue"), 0);
}

/// A handler that reports each message and blocks until released.
fn gated(
    bus: &Bus<String>,
    pattern: &str,
) -> (
    mpsc::Receiver<MessageId>,
    mpsc::Sender<()>,
    topicbus::Subscription,
) {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let s = bus
        .subscribe(pattern, move |m: &Message<String>| {
            entered_tx.send(m.id()).unwrap();
            let _ = release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60));
        })
        .unwrap();
    (entered, release, s)
}

#[test]
fn a_lease_that_runs_out_is_delivered_to_another_consumer() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let (bus_a, bus_b) = (bus(), bus());
    let (entered_a, release_a, _sa) = gated(&bus_a, "slow.#");
    let (log_b, _sb) = record(&bus_b, "slow.#");
    // A gives up waiting for its handler after 200 ms and stops extending
    // the lease: 300 ms later the row is visible to B again.
    let a = consumer(&db, "slow")
        .lease(Duration::from_millis(300))
        .handler_timeout(Duration::from_millis(200))
        .start(&bus_a)
        .unwrap();
    let m = message("slow.job", "x");
    let id = m.id();
    publish_committed(&a, &db, &m);
    assert_eq!(entered_a.recv_timeout(Duration::from_secs(20)).unwrap(), id);
    // A stalls: its handler never reports, it stops, and its lease is left
    // to run out, as a dead process would leave it.
    let sa = a.shutdown(Duration::from_secs(5));
    assert_eq!(scalar(&db, "SELECT count(*) FROM topicbus.queue"), 1);
    // B can get the row only once A's lease ran out.
    let b = consumer(&db, "slow").start(&bus_b).unwrap();
    wait_for(
        "B to handle it",
        30,
        || b.stats().acked == 1,
        || format!("{sa:?} {:?}", b.stats()),
    );
    assert_eq!(log_b.lock().unwrap().as_slice(), [id]);
    release_a.send(()).unwrap();
    let sb = b.shutdown(Duration::from_secs(5));
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM topicbus.dead_letters"),
        0,
        "B's delivery was the second attempt, within the limit"
    );
    assert_accounted(&sa);
    assert_accounted(&sb);
    assert_eq!((sa.claimed, sa.unsettled, sa.acked), (1, 1, 0), "{sa:?}");
    assert_eq!((sb.claimed, sb.acked), (1, 1), "{sb:?}");
    assert_eq!(scalar(&db, "SELECT count(*) FROM topicbus.queue"), 0);
}

#[test]
fn a_long_handler_keeps_its_lease_extended() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let (bus_a, bus_b) = (bus(), bus());
    let (entered_a, release_a, _sa) = gated(&bus_a, "long.#");
    let (log_b, _sb) = record(&bus_b, "long.#");
    let lease = Duration::from_millis(150);
    let a = consumer(&db, "long").lease(lease).start(&bus_a).unwrap();
    let m = message("long.job", "x");
    publish_committed(&a, &db, &m);
    assert_eq!(
        entered_a.recv_timeout(Duration::from_secs(20)).unwrap(),
        m.id()
    );
    // B, polling eagerly, must not get it while A's handler runs for many
    // lease times.
    let b = consumer(&db, "long")
        .lease(lease)
        .poll_interval(Duration::from_millis(20))
        .start(&bus_b)
        .unwrap();
    wait_for(
        "A to extend its lease ten times",
        30,
        || a.stats().lease_extensions >= 10,
        || format!("{:?}", a.stats()),
    );
    assert!(
        log_b.lock().unwrap().is_empty(),
        "B got a row whose lease A kept extending"
    );
    release_a.send(()).unwrap();
    wait_for(
        "A to acknowledge",
        30,
        || a.stats().acked == 1,
        || format!("{:?}", a.stats()),
    );
    let (sa, sb) = (
        a.shutdown(Duration::from_secs(5)),
        b.shutdown(Duration::from_secs(5)),
    );
    assert_accounted(&sa);
    assert_eq!(sb.claimed, 0, "{sb:?}");
    assert_eq!(scalar(&db, "SELECT count(*) FROM topicbus.queue"), 0);
}

/// Enqueues `m` through `queue` in a transaction of its own, committed.
fn publish_committed(queue: &PgQueue<String>, db: &str, m: &Message<String>) {
    let mut client = postgres::Client::connect(db, postgres::NoTls).unwrap();
    let mut tx = client.transaction().unwrap();
    assert!(queue.publish_in(&mut tx, m).unwrap(), "newly queued");
    tx.commit().unwrap();
}

#[test]
fn failures_retry_with_backoff_then_move_to_the_dead_letters() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let c = Arc::clone(&calls);
    let _s = bus
        .subscribe("pay.#", move |m: &Message<String>| -> Result<(), String> {
            let mut calls = c.lock().unwrap();
            let n = calls.entry(m.payload().clone()).or_default();
            *n += 1;
            match m.payload().as_str() {
                "flaky" if *n < 3 => Err(format!("flaky failure {n}")),
                "broken" => Err("card declined".into()),
                _ => Ok(()),
            }
        })
        .unwrap();
    let queue = consumer(&db, "pay").max_attempts(4).start(&bus).unwrap();
    let broken = message("pay.charge", "broken");
    for m in [&message("pay.charge", "flaky"), &broken] {
        publish_committed(&queue, &db, m);
    }
    // A topic no subscription matches is a failure too, not a silent ack.
    publish_committed(&queue, &db, &message("nobody.home", "lost?"));
    wait_for(
        "the flaky one handled and two dead letters",
        60,
        || {
            let s = queue.stats();
            s.acked == 1 && s.dead_lettered == 2
        },
        || format!("{:?}", queue.stats()),
    );
    let s = queue.shutdown(Duration::from_secs(5));
    assert_accounted(&s);
    // flaky: 2 retries then handled; broken and nobody: 3 retries each,
    // buried on the 4th attempt.
    assert_eq!((s.retried, s.claimed), (2 + 3 + 3, 3 + 4 + 4), "{s:?}");
    assert_eq!(calls.lock().unwrap()["flaky"], 3);
    assert_eq!(calls.lock().unwrap()["broken"], 4);
    let mut client = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let rows = client
        .query(
            "SELECT msg_id::text, topic, reason, error, attempts, queue
             FROM topicbus.dead_letters ORDER BY topic",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 2);
    let get = |i: usize| -> (String, String, String, String, i32, String) {
        let r = &rows[i];
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
    };
    let (id, topic, reason, error, attempts, q) = get(1);
    assert_eq!(id, broken.id().to_string());
    assert_eq!(
        (
            topic.as_str(),
            reason.as_str(),
            error.as_str(),
            attempts,
            q.as_str()
        ),
        ("pay.charge", "max_attempts", "card declined", 4, "pay")
    );
    let (_, topic, _, error, _, _) = get(0);
    assert_eq!(
        (topic.as_str(), error.as_str()),
        ("nobody.home", "no subscription matched")
    );
    assert_eq!(scalar(&db, "SELECT count(*) FROM topicbus.queue"), 0);
}

#[test]
fn expired_messages_are_dead_lettered_never_delivered() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let (log, _s) = record(&bus, "ttl.#");
    let queue = consumer(&db, "ttl").start(&bus).unwrap();
    let stale = Message::builder(topic("ttl.a"), "stale".to_owned())
        .expires_at(SystemTime::now() - Duration::from_secs(1))
        .build();
    let fresh = Message::builder(topic("ttl.a"), "fresh".to_owned())
        .ttl(Duration::from_secs(600))
        .build();
    publish_committed(&queue, &db, &stale);
    publish_committed(&queue, &db, &fresh);
    wait_for(
        "both settled",
        30,
        || {
            let s = queue.stats();
            s.acked + s.dead_lettered == 2
        },
        || format!("{:?}", queue.stats()),
    );
    let s = queue.shutdown(Duration::from_secs(5));
    assert_accounted(&s);
    assert_eq!(
        (s.expired, s.dead_lettered, s.acked, s.delivered),
        (1, 1, 1, 1),
        "{s:?}"
    );
    assert_eq!(log.lock().unwrap().as_slice(), [fresh.id()]);
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM topicbus.dead_letters WHERE reason = 'expired'"
        ),
        1
    );
}

#[test]
fn delayed_messages_wait_for_their_time_and_priorities_order_the_claim() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = Bus::<String>::builder().workers(1).build().unwrap();
    let (log, _s) = record(&bus, "prio.#");
    // A handle that does not consume yet: the rows wait in the table.
    let producer = PgQueue::builder(db.as_str(), codec(), "prio")
        .start(&bus)
        .unwrap();
    let at = |p: Priority, s: &str| {
        Message::builder(topic("prio.job"), s.to_owned())
            .priority(p)
            .build()
    };
    let low = at(Priority::Low, "low");
    let normal = at(Priority::Normal, "normal");
    let high = at(Priority::High, "high");
    for m in [&low, &normal, &high] {
        publish_committed(&producer, &db, m);
    }
    let delay = Duration::from_millis(700);
    let enqueued = Instant::now();
    let later = Message::builder(topic("prio.job"), "later".to_owned())
        .priority(Priority::High)
        .delay(delay)
        .build();
    publish_committed(&producer, &db, &later);
    assert!(
        !publish_committed_again(&producer, &db, &later),
        "an id is queued once"
    );
    let depth = producer.depth().unwrap();
    assert_eq!((depth.total, depth.ready), (4, 3));
    // One row per claim, a poll interval far beyond the test: the first
    // read after LISTEN finds the backlog, the next row's time wakes the
    // consumer for the delayed one.
    let queue = consumer(&db, "prio")
        .claim(1)
        .poll_interval(Duration::from_secs(600))
        .start(&bus)
        .unwrap();
    wait_for(
        "all four handled",
        30,
        || log.lock().unwrap().len() == 4,
        || format!("{:?}", queue.stats()),
    );
    let waited = enqueued.elapsed();
    assert_eq!(
        log.lock().unwrap().as_slice(),
        [high.id(), normal.id(), low.id(), later.id()],
        "priority order, the delayed one last though high"
    );
    assert!(waited >= delay, "not before its time: {waited:?}");
    let s = queue.shutdown(Duration::from_secs(5));
    assert_accounted(&s);
    assert_eq!(s.acked, 4);
}

fn publish_committed_again(queue: &PgQueue<String>, db: &str, m: &Message<String>) -> bool {
    let mut client = postgres::Client::connect(db, postgres::NoTls).unwrap();
    let mut tx = client.transaction().unwrap();
    let fresh = queue.publish_in(&mut tx, m).unwrap();
    tx.commit().unwrap();
    fresh
}

#[test]
fn the_transactional_outbox_queues_only_what_commits() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let (log, _s) = record(&bus, "orders.#");
    let queue = consumer(&db, "orders").start(&bus).unwrap();
    let mut client = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    client
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY)")
        .unwrap();
    let rolled_back = message("orders.created", "1");
    let mut tx = client.transaction().unwrap();
    tx.execute("INSERT INTO orders VALUES (1)", &[]).unwrap();
    assert!(queue.publish_in(&mut tx, &rolled_back).unwrap());
    tx.rollback().unwrap();
    let committed = message("orders.created", "2");
    let mut tx = client.transaction().unwrap();
    tx.execute("INSERT INTO orders VALUES (2)", &[]).unwrap();
    assert!(queue.publish_in(&mut tx, &committed).unwrap());
    tx.commit().unwrap();
    wait_for(
        "the committed one handled",
        30,
        || queue.stats().acked == 1,
        || format!("{:?}", queue.stats()),
    );
    let s = queue.shutdown(Duration::from_secs(5));
    assert_accounted(&s);
    assert_eq!(s.claimed, 1, "the rolled-back message never existed: {s:?}");
    assert_eq!(log.lock().unwrap().as_slice(), [committed.id()]);
    assert_eq!(
        client
            .query_one("SELECT array_agg(id) FROM orders", &[])
            .unwrap()
            .get::<_, Vec<i32>>(0),
        [2]
    );
}

#[test]
fn a_missed_notification_is_caught_by_polling_and_a_killed_listener_comes_back() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let (log, _s) = record(&bus, "hint.#");
    let queue = consumer(&db, "hint")
        .poll_interval(Duration::from_millis(200))
        .start(&bus)
        .unwrap();
    // 1. A row written behind the adapter's back, with no NOTIFY: only the
    // poll finds it.
    let quiet = message("hint.quiet", "q");
    let envelope = codec().encode(&quiet, "elsewhere").unwrap();
    let mut client = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    client
        .execute(
            "INSERT INTO topicbus.queue (queue, msg_id, topic, priority, visible_at, envelope)
             VALUES ('hint', $1::text::uuid, 'hint.quiet', 1, now(), $2)",
            &[&quiet.id().to_string(), &envelope],
        )
        .unwrap();
    wait_for(
        "the quiet row handled",
        30,
        || queue.stats().acked == 1,
        || format!("{:?}", queue.stats()),
    );
    assert_eq!(queue.stats().wakeups, 0, "no notification was sent");
    queue.shutdown(Duration::from_secs(5));

    // 2. The listening connection is killed; with a poll interval beyond
    // the test, only a new LISTEN (and the read after it) brings the next
    // message.
    let queue = consumer(&db, "hint")
        .poll_interval(Duration::from_secs(600))
        .start(&bus)
        .unwrap();
    let first = message("hint.one", "1");
    publish_committed(&queue, &db, &first);
    wait_for(
        "the first handled",
        30,
        || queue.stats().acked == 1,
        || format!("{:?}", queue.stats()),
    );
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND backend_type = 'client backend'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(killed >= 1);
    wait_for(
        "the consumer to reconnect",
        30,
        || queue.stats().reconnects >= 1 && queue.stats().consumer_connected,
        || format!("{:?}", queue.stats()),
    );
    let second = message("hint.two", "2");
    publish_committed(&queue, &db, &second);
    wait_for(
        "the second handled",
        30,
        || queue.stats().acked == 2,
        || format!("{:?}", queue.stats()),
    );
    let s = queue.shutdown(Duration::from_secs(5));
    assert_accounted(&s);
    assert_eq!(
        log.lock().unwrap().as_slice(),
        [quiet.id(), first.id(), second.id()]
    );
}

#[test]
fn a_server_crash_mid_run_loses_nothing_and_duplicates_nothing_handled() {
    let Some(mut cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let (log, _s) = record(&bus, "ledger.#");
    let queue = consumer(&db, "ledger")
        .export("ledger.#")
        .batch(100, Duration::from_millis(2))
        .outbox(100_000, OverflowPolicy::DropNewest)
        .lease(Duration::from_millis(500))
        .start(&bus)
        .unwrap();
    let describe = || format!("{:?}", queue.stats());
    let mut sent = Vec::new();
    let mut publish = |n: usize| {
        for i in 0..n {
            let m = message("ledger.entry", &i.to_string());
            sent.push(m.id());
            bus.publish_message(m).unwrap();
        }
    };
    publish(2_000);
    wait_for("some handled", 60, || queue.stats().acked > 0, describe);
    cluster.crash();
    publish(2_000);
    wait_for(
        "the adapter to notice",
        60,
        || !queue.stats().consumer_connected || queue.stats().failed_writes > 0,
        describe,
    );
    cluster.start_again();
    publish(1_000);
    let handled_once = || {
        let s = queue.stats();
        s.outbox_depth == 0 && s.exported == s.enqueued + s.duplicates && s.acked >= s.enqueued
    };
    wait_for("the backlog handled", 120, handled_once, describe);
    let s = queue.shutdown(Duration::from_secs(10));
    assert_accounted(&s);
    assert_eq!(s.outbox_dropped, 0, "{s:?}");
    // The ledger: every sent id is ok (handled locally by the queue once),
    // none lost, none handled twice. Each id is also seen once as the
    // local publish itself.
    let mut counts: HashMap<MessageId, usize> = HashMap::new();
    for id in log.lock().unwrap().iter() {
        *counts.entry(*id).or_default() += 1;
    }
    let lost: Vec<_> = sent
        .iter()
        .filter(|id| counts.get(id).copied().unwrap_or(0) < 2)
        .collect();
    let duplicated: Vec<_> = sent
        .iter()
        .filter(|id| counts.get(id).copied().unwrap_or(0) > 2)
        .collect();
    let unexpected = counts.len() - sent.len();
    assert!(lost.is_empty(), "{} lost: {s:?}", lost.len());
    assert!(
        duplicated.is_empty(),
        "{} handled twice: {s:?}",
        duplicated.len()
    );
    assert_eq!(unexpected, 0);
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM topicbus.queue"),
        0,
        "{s:?}"
    );
}
