//! Redis Streams queue groups against a real `redis-server`: the group
//! splits the work, entries a dead consumer held are claimed, entries
//! delivered too often and forged ones go to the dead-letter stream.
#![cfg(feature = "redis")]

#[path = "support/redis_server.rs"]
mod redis_server;

mod common;

use std::collections::HashSet;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{wait_until, LONG};
use redis_server::{spawn_peer, RedisServer};
use topicbus::envelope::{Codec, KeyRing};
use topicbus::redis::{RedisStreams, StreamsBuilder, ORIGIN_HEADER};
use topicbus::{Bus, Message};

const KEY: &str = "topicbus:stream:jobs";
const DEAD: &str = "topicbus:stream:jobs:dead";

fn codec() -> Codec {
    Codec::signed(KeyRing::new("test", [42u8; 32]).unwrap())
}

fn bus() -> Bus<String> {
    Bus::<String>::builder().workers(2).build().unwrap()
}

fn streams(url: &str, node: &str) -> StreamsBuilder {
    RedisStreams::builder(url, codec(), "jobs")
        .node_id(node)
        .block(Duration::from_millis(20))
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(100))
}

/// Every payload handled on a bus, in order.
fn record(bus: &Bus<String>) -> (Arc<Mutex<Vec<String>>>, topicbus::Subscription) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let sub = bus
        .subscribe("jobs.#", move |m: &Message<String>| {
            assert!(m.headers().contains(ORIGIN_HEADER));
            s.lock().unwrap().push(m.payload().clone());
        })
        .unwrap();
    (seen, sub)
}

fn produce(url: &str, n: usize) {
    let p = bus();
    let producer = streams(url, "producer").export("jobs.#").start(&p).unwrap();
    for i in 0..n {
        p.publish("jobs.run", format!("job {i}")).unwrap();
    }
    let s = producer.shutdown(LONG);
    assert_eq!((s.added, s.unsent), (n as u64, 0), "{s:?}");
}

fn pending(server: &RedisServer, consumer: &str) -> usize {
    let mut con = server.connection();
    let summary: redis::Value = match redis::cmd("XPENDING")
        .arg(KEY)
        .arg("workers")
        .query(&mut con)
    {
        Ok(v) => v,
        // No group yet: nothing pending.
        Err(e) if e.code() == Some("NOGROUP") => return 0,
        Err(e) => panic!("{e}"),
    };
    let redis::Value::Array(parts) = summary else {
        panic!("{summary:?}")
    };
    let redis::Value::Array(per) = &parts[3] else {
        return 0;
    };
    per.iter()
        .filter_map(|c| match c {
            redis::Value::Array(p) => Some(p),
            _ => None,
        })
        .filter(|p| matches!(&p[0], redis::Value::BulkString(n) if n == consumer.as_bytes()))
        .map(|p| match &p[1] {
            redis::Value::BulkString(n) => String::from_utf8_lossy(n).parse().unwrap(),
            _ => 0,
        })
        .sum()
}

fn dead_reasons(server: &RedisServer) -> Vec<String> {
    let mut con = server.connection();
    let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(DEAD)
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    r.ids
        .iter()
        .map(|e| match e.map.get("reason") {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_group_splits_the_stream_and_handles_each_entry_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    produce(&url, 1000);
    let (a, b) = (bus(), bus());
    // a's first handler call waits until b handled something: a holds its
    // first batch, so b must take part.
    let (b_went, b_went_rx) = mpsc::channel::<()>();
    let b_went = Mutex::new(b_went);
    let b_went_rx = Mutex::new(b_went_rx);
    let a_seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&a_seen);
    let _a_sub = a
        .subscribe("jobs.#", move |m: &Message<String>| {
            let mut seen = s.lock().unwrap();
            if seen.is_empty() {
                let _ = b_went_rx.lock().unwrap().recv_timeout(LONG);
            }
            seen.push(m.payload().clone());
        })
        .unwrap();
    let b_seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&b_seen);
    let _b_sub = b
        .subscribe("jobs.#", move |m: &Message<String>| {
            s.lock().unwrap().push(m.payload().clone());
            let _ = b_went.lock().unwrap().send(());
        })
        .unwrap();
    let sa = streams(&url, "a")
        .consume("workers")
        .count(10)
        .start(&a)
        .unwrap();
    let sb = streams(&url, "b")
        .consume("workers")
        .count(10)
        .start(&b)
        .unwrap();
    wait_until("every entry acknowledged", || {
        sa.stats().acked + sb.stats().acked == 1000
    });
    let (ra, rb) = (sa.shutdown(LONG), sb.shutdown(LONG));
    let (a_seen, b_seen) = (a_seen.lock().unwrap(), b_seen.lock().unwrap());
    assert!(!a_seen.is_empty() && !b_seen.is_empty());
    let all: Vec<&String> = a_seen.iter().chain(b_seen.iter()).collect();
    let unique: HashSet<&&String> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (1000, 1000), "each once");
    assert_eq!(ra.read + rb.read, 1000, "{ra:?} {rb:?}");
    assert_eq!(ra.delivered + rb.delivered, 1000);
    assert_eq!(pending(&server, "a") + pending(&server, "b"), 0);
}

/// Waits until the Redis list `key` has at least `n` items.
fn wait_list(url: &str, key: &str, n: usize) {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    wait_until(key, || {
        redis::cmd("LLEN")
            .arg(key)
            .query::<usize>(&mut con)
            .unwrap()
            >= n
    });
}

/// A handler's effect: the payload pushed to the shared list `effects`
/// and to the member's own list `mine`.
fn effect(url: &str, mine: &str, payload: &str) {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: () = redis::pipe()
        .cmd("RPUSH")
        .arg("effects")
        .arg(payload)
        .cmd("RPUSH")
        .arg(mine)
        .arg(payload)
        .query(&mut con)
        .unwrap();
}

/// A group member in another process: its handler's effect is an `RPUSH`
/// to the shared list `effects`; its first call waits until the other
/// member (the parent) handled something, so both take part. Runs only
/// when started by the test below.
#[test]
fn group_member_process() {
    let Ok(url) = std::env::var("TB_GROUP_CHILD") else {
        return;
    };
    let bus = bus();
    let u = url.clone();
    let first = std::sync::Once::new();
    let _s = bus
        .subscribe("jobs.#", move |m: &Message<String>| {
            first.call_once(|| wait_list(&u, "by-parent", 1));
            effect(&u, "by-child", m.payload());
        })
        .unwrap();
    let streams = streams(&url, "child")
        .consume("workers")
        .count(10)
        .start(&bus)
        .unwrap();
    wait_list(&url, "effects", 1000);
    let s = streams.shutdown(LONG);
    assert_eq!(s.forged + s.malformed, 0);
}

#[test]
fn a_group_split_across_two_processes_has_each_effect_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    produce(&url, 1000);
    let mut child = spawn_peer("group_member_process", "TB_GROUP_CHILD", &url);
    // The child holds its first batch until the parent handled something.
    wait_until("the child to take a batch", || {
        pending(&server, "child") > 0
    });
    let b = bus();
    let u = url.clone();
    let _s = b
        .subscribe("jobs.#", move |m: &Message<String>| {
            effect(&u, "by-parent", m.payload());
        })
        .unwrap();
    let sb = streams(&url, "parent")
        .consume("workers")
        .count(10)
        .start(&b)
        .unwrap();
    wait_list(&url, "effects", 1000);
    assert!(child.wait().unwrap().success(), "the child failed");
    sb.shutdown(LONG);
    let mut con = server.connection();
    let effects: Vec<String> = redis::cmd("LRANGE")
        .arg("effects")
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    let unique: HashSet<&String> = effects.iter().collect();
    assert_eq!(
        (effects.len(), unique.len()),
        (1000, 1000),
        "each effect once"
    );
    let mut by = |k: &str| redis::cmd("LLEN").arg(k).query::<usize>(&mut con).unwrap();
    let (p, c) = (by("by-parent"), by("by-child"));
    assert!(p > 0 && c > 0 && p + c == 1000, "parent {p}, child {c}");
    assert_eq!(pending(&server, "parent") + pending(&server, "child"), 0);
}

/// A consumer process that takes entries and never finishes them: killed
/// by the test below. Runs only when started by it.
#[test]
fn stuck_consumer_process() {
    let Ok(url) = std::env::var("TB_STREAM_CHILD") else {
        return;
    };
    let bus = bus();
    let (_never, wait) = mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    let _s = bus
        .subscribe("jobs.#", move |_m: &Message<String>| {
            let _ = wait.lock().unwrap().recv_timeout(Duration::from_secs(120));
        })
        .unwrap();
    let _streams = streams(&url, "stuck")
        .consume("workers")
        .count(50)
        .start(&bus)
        .unwrap();
    // Killed by the parent; never gets here in time.
    std::thread::park_timeout(Duration::from_secs(120));
}

#[test]
fn a_killed_consumers_pending_entries_are_claimed_by_another() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    produce(&url, 100);
    let mut child = spawn_peer("stuck_consumer_process", "TB_STREAM_CHILD", &url);
    wait_until("the child to take a batch", || {
        pending(&server, "stuck") > 0
    });
    child.kill().unwrap();
    let _ = child.wait();
    let taken = pending(&server, "stuck");
    assert!(taken > 0 && taken <= 100);

    let b = bus();
    let (seen, _sub) = record(&b);
    // Pages of ten: the janitor claims the dead member's backlog page by
    // page.
    let sb = streams(&url, "b")
        .consume("workers")
        .count(10)
        .visibility_timeout(Duration::from_millis(100))
        .start(&b)
        .unwrap();
    wait_until("everything acknowledged", || sb.stats().acked == 100);
    let s = sb.shutdown(LONG);
    assert!(s.claimed >= taken as u64, "{s:?}");
    let seen = seen.lock().unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (100, 100));
    assert_eq!(pending(&server, "stuck"), 0);
}

#[test]
fn entries_delivered_too_often_and_forged_ones_go_to_the_dead_letter_stream() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    produce(&url, 3);
    let mut raw = server.connection();
    // A ghost consumer took the three; one of them it took five times.
    let _: redis::Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(KEY)
        .arg("workers")
        .arg("0")
        .query(&mut raw)
        .unwrap();
    let taken: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("ghost")
        .arg("STREAMS")
        .arg(KEY)
        .arg(">")
        .query(&mut raw)
        .unwrap();
    let poison = taken.keys[0].ids[0].id.clone();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(KEY)
        .arg("workers")
        .arg("ghost")
        .arg(0)
        .arg(&poison)
        .arg("RETRYCOUNT")
        .arg(5)
        .query(&mut raw)
        .unwrap();
    // And someone without the key added an entry.
    let mallory = Codec::signed(KeyRing::new("test", [0u8; 32]).unwrap());
    let forged = Message::builder("jobs.run".parse().unwrap(), "forged".to_string()).build();
    let _: String = redis::cmd("XADD")
        .arg(KEY)
        .arg("*")
        .arg("e")
        .arg(mallory.encode(&forged, "evil").unwrap())
        .query(&mut raw)
        .unwrap();

    let b = bus();
    let (seen, _sub) = record(&b);
    let sb = streams(&url, "b")
        .consume("workers")
        .visibility_timeout(Duration::from_millis(50))
        .max_deliveries(5)
        .start(&b)
        .unwrap();
    wait_until("everything settled", || {
        let s = sb.stats();
        s.acked == 4 && s.dead_lettered == 2
    });
    let s = sb.shutdown(LONG);
    assert_eq!((s.forged, s.delivered), (1, 2), "{s:?}");
    let mut reasons = dead_reasons(&server);
    reasons.sort();
    assert_eq!(reasons, ["forged", "max_deliveries"]);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["job 1", "job 2"], "the poison entry was job 0");
    assert_eq!(pending(&server, "ghost"), 0);
}

#[test]
fn a_killed_server_loses_nothing_the_stream_accepted() {
    let Some(mut server) = RedisServer::start_durable() else {
        return;
    };
    let url = server.url();
    let (p, c) = (bus(), bus());
    let producer = streams(&url, "p").export("jobs.#").start(&p).unwrap();
    let (seen, _sub) = record(&c);
    let consumer = streams(&url, "c").consume("workers").start(&c).unwrap();
    let mut sent = Vec::new();
    let mut publish = |range: std::ops::Range<usize>| {
        for i in range {
            let job = format!("job {i}");
            p.publish("jobs.run", job.clone()).unwrap();
            sent.push(job);
        }
    };
    publish(0..500);
    wait_until("some handled", || seen.lock().unwrap().len() >= 100);
    server.kill9();
    // Published during the outage: held in the outbox (10,000 per lane).
    publish(500..1000);
    wait_until("the producer to notice", || {
        !producer.stats().producer_connected
    });
    server.restart();
    let start = std::time::Instant::now();
    while seen.lock().unwrap().len() < 1000 {
        // On a timeout, say what is missing and where things stand.
        if start.elapsed() > LONG {
            let got = seen.lock().unwrap().clone();
            let missing: Vec<&String> = sent.iter().filter(|s| !got.contains(s)).collect();
            let mut con = server.connection();
            let groups: redis::Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(KEY)
                .query(&mut con)
                .unwrap();
            panic!(
                "missing {missing:?}\nproducer {:?}\nconsumer {:?}\ngroups {groups:?}",
                producer.stats(),
                consumer.stats()
            );
        }
        std::thread::yield_now();
    }
    let (ps, cs) = (producer.shutdown(LONG), consumer.shutdown(LONG));
    // The ledger: nothing lost, nothing handled twice, nothing unexpected.
    let got = seen.lock().unwrap().clone();
    let unique: HashSet<&String> = got.iter().collect();
    let missing: Vec<&String> = sent.iter().filter(|s| !unique.contains(s)).collect();
    let unexpected = unique.iter().filter(|g| !sent.contains(g)).count();
    let duplicated = got.len() - unique.len();
    assert!(
        missing.is_empty() && duplicated == 0 && unexpected == 0,
        "lost {missing:?}, {duplicated} duplicated, {unexpected} unexpected; {ps:?} {cs:?}"
    );
    assert_eq!((ps.outbox_dropped, ps.unsent), (0, 0), "{ps:?}");
    assert!(ps.reconnects + cs.reconnects >= 1, "{ps:?} {cs:?}");
}

/// The writer speaks to Redis over a connection of its own (not the `redis`
/// crate's): the password and the database in the URL must reach it, and a
/// wrong password must leave everything unsent, not sent somewhere else.
#[test]
fn the_writer_authenticates_and_selects_the_database_in_the_url() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut admin = server.connection();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .exec(&mut admin)
        .unwrap();
    let url = |pass: &str| format!("{}?db=3&pass={pass}", server.url());
    let len = |con: &mut redis::Connection, db: i64| -> usize {
        redis::cmd("SELECT").arg(db).exec(con).unwrap();
        redis::cmd("XLEN").arg(KEY).query(con).unwrap()
    };

    produce(&url("s3cret"), 10);
    assert_eq!(len(&mut admin, 3), 10, "in the database the URL names");
    assert_eq!(len(&mut admin, 0), 0, "and nowhere else");

    let p = bus();
    let refused = streams(&url("wrong"), "producer")
        .export("jobs.#")
        .start(&p)
        .unwrap();
    p.publish("jobs.run", "never".to_string()).unwrap();
    let s = refused.shutdown(Duration::from_millis(500));
    assert_eq!((s.added, s.unsent), (0, 1), "{s:?}");
    assert!(!s.producer_connected);
    assert_eq!(len(&mut admin, 3), 10);
}

/// A `redis-server` on a loopback TCP port (the other tests use unix
/// sockets), killed on drop.
struct TcpServer(std::process::Child);

impl Drop for TcpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The writer's TCP path: the same pipeline over `redis://127.0.0.1:<port>`.
#[test]
fn the_writer_sends_over_tcp() {
    // Only to know that redis-server is installed (skipped loudly if not).
    let Some(_unix) = RedisServer::start() else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("tb-redis-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _server = TcpServer(
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut admin = None;
    wait_until("the TCP server to accept connections", || {
        admin = client.get_connection().ok();
        admin.is_some()
    });
    let mut admin = admin.unwrap();

    produce(&url, 100);
    let len: usize = redis::cmd("XLEN").arg(KEY).query(&mut admin).unwrap();
    assert_eq!(len, 100);
    let _ = std::fs::remove_dir_all(&dir);
}
