//! The Redis pub/sub bridge against a real `redis-server` (started by the
//! test, unix socket only): buses in one and in two processes, wildcards,
//! loop prevention, forged envelopes, a server killed mid-run.
#![cfg(feature = "redis")]

#[path = "support/redis_server.rs"]
mod redis_server;

mod common;

use std::time::Duration;

use common::{wait_until, LONG};
use redis_server::{spawn_peer, RedisServer};
use topicbus::envelope::{Codec, Encoding, KeyRing};
use topicbus::redis::{BridgeBuilder, RedisBridge, ORIGIN_HEADER};
use topicbus::{Bus, Message, Receiver};

fn codec() -> Codec {
    Codec::signed(KeyRing::new("test", [42u8; 32]).unwrap())
}

fn bus() -> Bus<String> {
    Bus::<String>::builder().workers(1).build().unwrap()
}

fn bridge(server: &RedisServer, node: &str) -> BridgeBuilder {
    RedisBridge::builder(server.url(), codec())
        .node_id(node)
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(100))
}

/// Waits until the bridge's subscriber connection is up (Redis pub/sub
/// delivers only to subscribers connected at publish time).
fn wait_subscribed<T: Send + Sync + 'static>(b: &RedisBridge<T>) {
    wait_until("the bridge's subscription", || b.stats().inbound_connected);
}

fn recv(rx: &Receiver<String>) -> std::sync::Arc<Message<String>> {
    rx.recv_timeout(LONG).expect("a message through Redis")
}

#[test]
fn two_buses_exchange_messages_both_ways_with_wildcards_and_no_loops() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (bus(), bus());
    // a: sends orders, takes orders (its own come back from Redis), payments
    // and audit trails. b: sends everything (so it would send a's orders
    // straight back without loop prevention), takes created orders.
    let bridge_a = bridge(&server, "a")
        .export("orders.#")
        .import("orders.#")
        .import("payments.*")
        .import("#.audit")
        .start(&a)
        .unwrap();
    let bridge_b = bridge(&server, "b")
        .export("#")
        .import("orders.*.created")
        .start(&b)
        .unwrap();
    wait_subscribed(&bridge_a);
    wait_subscribed(&bridge_b);
    let a_orders = a.receiver("orders.#").unwrap();
    let a_payments = a.receiver("payments.#").unwrap();
    let a_audit = a.receiver("#.audit").unwrap();
    let b_orders = b.receiver("orders.#").unwrap();

    // Redis's glob `orders.*.created` matches this too; b's own matcher
    // does not.
    a.publish("orders.eu.north.created", "not for b".into())
        .unwrap();
    a.publish("orders.eu.created", "o1".into()).unwrap();
    let got = recv(&b_orders);
    assert_eq!(
        (got.topic().as_str(), got.payload().as_str()),
        ("orders.eu.created", "o1")
    );
    assert_eq!(got.headers().get(ORIGIN_HEADER), Some("a"));
    // b's answer comes back to a.
    b.publish("payments.settled", "p1".into()).unwrap();
    let paid = recv(&a_payments);
    assert_eq!(paid.payload(), "p1");
    assert_eq!(paid.headers().get(ORIGIN_HEADER), Some("b"));
    // A marker b sends after everything else: when it arrives, whatever b
    // would have sent back (o1 again) has arrived too.
    b.publish("trail.audit", "marker".into()).unwrap();
    assert_eq!(recv(&a_audit).payload(), "marker");
    let local: Vec<String> = a_orders.try_iter().map(|m| m.payload().clone()).collect();
    assert_eq!(local, ["not for b", "o1"], "a's own orders, once each");
    assert!(b_orders.try_recv().is_err(), "b took the four-level order");

    wait_until("the imports counted", || {
        bridge_a.stats().imported == 2 && bridge_b.stats().imported == 1
    });
    let (sa, sb) = (bridge_a.stats(), bridge_b.stats());
    assert_eq!((sa.exported, sa.own, sa.imported), (2, 2, 2), "{sa:?}");
    assert_eq!(sb.not_reexported, 1, "{sb:?}");
    assert_eq!((sb.imported, sb.filtered), (1, 1), "{sb:?}");
    assert_eq!(
        (sa.forged, sa.malformed, sb.forged, sb.malformed),
        (0, 0, 0, 0)
    );
    let report = bridge_a.shutdown(LONG);
    assert!(report.flushed, "{report:?}");
    assert_eq!(report.stats.published, 2);
    drop(bridge_b);
}

#[test]
fn forged_and_malformed_envelopes_are_counted_and_never_delivered() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let b = bus();
    let bridge_b = bridge(&server, "b").import("jobs.#").start(&b).unwrap();
    wait_subscribed(&bridge_b);
    let rx = b.receiver("jobs.#").unwrap();
    let msg = |p: &str| Message::builder("jobs.run".parse().unwrap(), p.to_string()).build();
    let mallory = Codec::signed(KeyRing::new("test", [0u8; 32]).unwrap());
    let mut raw = server.connection();
    let mut publish = |bytes: Vec<u8>| {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("topicbus:jobs.run")
            .arg(bytes)
            .query(&mut raw)
            .unwrap();
    };
    publish(mallory.encode(&msg("forged"), "x").unwrap());
    publish(Codec::unsigned().encode(&msg("unsigned"), "x").unwrap());
    let mut tampered = codec().encode(&msg("tampered"), "x").unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    publish(tampered);
    publish(b"rm -rf /".to_vec());
    publish(
        codec()
            .encoding(Encoding::Json)
            .encode(&msg("genuine"), "x")
            .unwrap(),
    );
    // Redis delivers one connection's messages in order: when the genuine
    // one arrives, the others were read and refused.
    assert_eq!(recv(&rx).payload(), "genuine");
    assert!(rx.try_recv().is_err());
    // Counted just after the local publish returns.
    wait_until("the import counted", || bridge_b.stats().imported == 1);
    let s = bridge_b.stats();
    assert_eq!(
        (s.received, s.forged, s.malformed, s.imported),
        (5, 3, 1, 1),
        "{s:?}"
    );
}

/// The other process of the two-process test: imports `ping.#`, answers
/// each with `pong.<n>`, stops on `ping.stop`. Runs only when started by
/// that test.
#[test]
fn child_process_peer() {
    let Ok(url) = std::env::var("TB_REDIS_CHILD") else {
        return;
    };
    let bus = bus();
    let bridge = RedisBridge::builder(url, codec())
        .node_id("child")
        .export("pong.#")
        .import("ping.#")
        .start(&bus)
        .unwrap();
    wait_subscribed(&bridge);
    let rx = bus.receiver("ping.#").unwrap();
    bus.publish("pong.ready", String::new()).unwrap();
    loop {
        let ping = rx.recv_timeout(Duration::from_secs(60)).expect("a ping");
        let n = ping.topic().as_str().trim_start_matches("ping.").to_owned();
        if n == "stop" {
            break;
        }
        bus.publish(format!("pong.{n}").as_str(), ping.payload().clone())
            .unwrap();
    }
    let report = bridge.shutdown(LONG);
    assert!(report.flushed, "{report:?}");
}

#[test]
fn two_processes_talk_through_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let bus = bus();
    let bridge = bridge(&server, "parent")
        .export("ping.#")
        .import("pong.#")
        .start(&bus)
        .unwrap();
    wait_subscribed(&bridge);
    let pongs = bus.receiver("pong.#").unwrap();
    let mut child = spawn_peer("child_process_peer", "TB_REDIS_CHILD", &server.url());
    assert_eq!(recv(&pongs).topic().as_str(), "pong.ready");
    for n in 0..100 {
        bus.publish(format!("ping.{n}").as_str(), format!("payload {n}"))
            .unwrap();
    }
    let mut got: Vec<String> = (0..100).map(|_| recv(&pongs).payload().clone()).collect();
    got.sort_by_key(|p| p[8..].parse::<u32>().unwrap());
    let want: Vec<String> = (0..100).map(|n| format!("payload {n}")).collect();
    assert_eq!(got, want);
    bus.publish("ping.stop", String::new()).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the child failed: {status}");
    // Once the bridge is down, everything it read is on the bus.
    let s = bridge.shutdown(LONG).stats;
    assert!(pongs.try_recv().is_err(), "a pong too many");
    assert_eq!((s.published, s.imported), (101, 101), "{s:?}");
}

#[test]
fn a_killed_server_loses_only_what_the_bridge_counts() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (bus(), bus());
    let bridge_a = bridge(&server, "a")
        .export("load.#")
        .outbox_capacity(100)
        .start(&a)
        .unwrap();
    let bridge_b = bridge(&server, "b").import("load.#").start(&b).unwrap();
    wait_subscribed(&bridge_b);
    let rx = b.receiver("load.#").unwrap();
    let mut sent: Vec<String> = Vec::new();
    let mut publish = |p: String| {
        a.publish("load.item", p.clone())
            .expect("local publish never fails");
        sent.push(p);
    };
    // Fewer than the outbox holds: all of them get through.
    for n in 0..50 {
        publish(n.to_string());
    }
    let mut got: Vec<String> = (0..50).map(|_| recv(&rx).payload().clone()).collect();

    server.kill9();
    publish("probe".into());
    wait_until("both sides to notice", || {
        let (sa, sb) = (bridge_a.stats(), bridge_b.stats());
        !sa.outbound_connected && !sb.inbound_connected
    });
    let health = a.health();
    assert!(
        health
            .issues
            .iter()
            .any(|i| i.component == "redis bridge a"),
        "{health:?}"
    );
    // Publishing stays local and instant; the outbox keeps the newest 100.
    for n in 200..500 {
        publish(n.to_string());
    }
    wait_until("the outbox to fill", || {
        bridge_a.stats().outbox_dropped >= 200
    });

    server.restart();
    wait_until("both sides to reconnect", || {
        let (sa, sb) = (bridge_a.stats(), bridge_b.stats());
        sa.outbound_connected && sb.inbound_connected
    });
    a.publish("load.end", "end".into()).unwrap();
    loop {
        let m = rx
            .recv_timeout(LONG)
            .unwrap_or_else(|e| panic!("{e}: a {:?}, b {:?}", bridge_a.stats(), bridge_b.stats()));
        if m.topic().as_str() == "load.end" {
            break;
        }
        got.push(m.payload().clone());
    }

    // The ledger: nothing duplicated, nothing unexpected, and every loss
    // counted by the bridge (the outbox's drops, and what Redis published
    // to nobody before b had subscribed again).
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "duplicates delivered");
    assert!(got.iter().all(|p| sent.contains(p)), "unexpected messages");
    let sa = bridge_a.stats();
    let lost = (sent.len() - got.len()) as u64;
    assert_eq!(lost, sa.outbox_dropped + sa.no_subscribers, "{sa:?}");
    assert!(sa.outbox_dropped >= 200, "{sa:?}");
    assert!(sa.reconnects >= 1 && bridge_b.stats().reconnects >= 1);
    assert!(got.contains(&"probe".to_string()) || sa.no_subscribers > 0);
    let report = bridge_a.shutdown(LONG);
    assert!(report.flushed && report.last_error.is_some(), "{report:?}");
    assert_eq!(
        report.stats.exported,
        report.stats.published + report.stats.encode_failed + report.stats.unsent
    );
    assert!(
        a.health().issues.is_empty(),
        "a shut-down bridge is not a problem"
    );
}

#[test]
fn shutdown_reports_what_a_dead_server_kept_from_being_sent() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let a = bus();
    let bridge_a = bridge(&server, "a").export("x.#").start(&a).unwrap();
    server.kill9();
    for n in 0..50 {
        a.publish("x.y", n.to_string()).unwrap();
    }
    wait_until("the outbox to hold the 50", || {
        let s = bridge_a.stats();
        s.outbox_depth + s.exported as usize >= 50
    });
    let report = bridge_a.shutdown(Duration::from_millis(200));
    assert!(!report.flushed, "{report:?}");
    let s = report.stats;
    assert_eq!((s.published, s.unsent, s.exported), (0, 50, 50), "{s:?}");
    assert!(report.last_error.is_some());
}
