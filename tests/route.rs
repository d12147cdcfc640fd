//! Multi-adapter publishing against a real `redis-server` and a real
//! PostgreSQL 15: Redis killed mid-run falls back to the PostgreSQL queue
//! (every confirmed message where its receipt says, checked in both
//! servers), a hung Redis whose outbox fills falls through to the
//! fallback, each strategy's verdict, and the typed refusals.
#![cfg(all(feature = "redis", feature = "postgres"))]

#[path = "support/pg_server.rs"]
mod pg_server;
#[path = "support/redis_server.rs"]
mod redis_server;

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{wait_until, LONG};
use pg_server::PgCluster;
use redis_server::RedisServer;
use topicbus::envelope::Codec;
use topicbus::postgres::{PgArchive, PgQueue};
use topicbus::redis::RedisStreams;
use topicbus::route::{OutletOutcome, Route, RouteError, Router, Strategy};
use topicbus::{Bus, Message, MessageId, OverflowPolicy, Topic};

const STREAM_KEY: &str = "topicbus:stream:orders";

fn bus() -> Bus<String> {
    Bus::<String>::builder().workers(1).build().unwrap()
}

fn streams(url: &str) -> topicbus::redis::StreamsBuilder {
    RedisStreams::builder(url, Codec::unsigned(), "orders")
        .routable()
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(50))
        .io_timeout(Duration::from_secs(30))
}

fn queue(db: &str) -> topicbus::postgres::QueueBuilder {
    PgQueue::builder(db, Codec::unsigned(), "orders")
        .routable()
        .batch(100, Duration::from_millis(1))
}

/// A Redis URL nobody listens on: the outlet goes down at its first write.
fn nowhere() -> String {
    let dir = std::env::temp_dir().join(format!("tb-nowhere-{}", std::process::id()));
    format!("redis+unix://{}/r.sock", dir.display())
}

/// The message ids in the stream.
fn stream_ids(server: &RedisServer) -> HashSet<MessageId> {
    let mut con = server.connection();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(STREAM_KEY)
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    let codec = Codec::unsigned();
    entries
        .ids
        .iter()
        .map(|e| {
            let bytes: Vec<u8> = e.get("e").expect("the envelope field");
            codec.decode::<String>(&bytes).unwrap().message.id()
        })
        .collect()
}

/// The message ids in a PostgreSQL table with a `msg_id` column.
fn table_ids(db: &str, sql: &str) -> HashSet<MessageId> {
    let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
    c.query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0).parse().unwrap())
        .collect()
}

#[test]
fn redis_killed_mid_run_falls_back_to_the_postgres_queue_and_comes_back() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let streams = streams(&redis.url()).start(&bus).unwrap();
    let queue = queue(&db).start(&bus).unwrap();
    let archive = PgArchive::builder(&db, Codec::unsigned())
        .routable()
        .batch(100, Duration::from_millis(1))
        .start(&bus)
        .unwrap();
    let (to_redis, to_pg) = (streams.outlet().unwrap(), queue.outlet().unwrap());
    let router = Router::builder(&bus)
        .route(Route::to(to_redis.clone()).or(to_pg.clone()))
        .to(archive.outlet().unwrap())
        .strategy(Strategy::All)
        .local(false)
        .build()
        .unwrap();
    let send = |i: usize, timeout: Duration| {
        router.publish_confirmed("orders.eu.created", format!("order {i}"), timeout)
    };
    // Where each confirmed message is, by its receipt.
    let (mut in_redis, mut in_queue, mut archived) =
        (HashSet::new(), HashSet::new(), HashSet::new());
    let mut note = |r: &topicbus::route::RouteReceipt| {
        assert_eq!(r.routes[1].outcome(), Some(OutletOutcome::Written));
        archived.insert(r.id);
        match r.routes[0].delivered_by() {
            Some(n) if n == to_redis.name() => in_redis.insert(r.id),
            Some(n) if n == to_pg.name() => in_queue.insert(r.id),
            other => panic!("delivered by {other:?}"),
        };
    };
    let mut confirmed = 0;
    for i in 0..100 {
        let r = send(i, LONG).expect("both servers up");
        assert!(!r.routes[0].fell_back());
        note(&r);
        confirmed += 1;
    }

    redis.kill9();
    // The first write after the kill finds the server gone: that message
    // stays in the Redis outbox, unconfirmed, and the strategy says so.
    let mut unconfirmed = Vec::new();
    let mut i = 100;
    while to_redis.is_up() {
        match send(i, Duration::from_millis(200)) {
            Ok(r) => note(&r),
            Err(RouteError::Incomplete(r)) => {
                assert_eq!(r.routes[0].outcome(), Some(OutletOutcome::Unconfirmed));
                unconfirmed.push(r.id);
            }
            Err(e) => panic!("{e}"),
        }
        i += 1;
        assert!(i < 10_000, "the Redis outlet never went down");
    }
    // Down: everything takes the fallback, confirmed in PostgreSQL.
    for _ in 0..100 {
        let r = send(i, LONG).expect("the fallback is up");
        assert!(r.routes[0].fell_back(), "{r:?}");
        assert_eq!(r.routes[0].attempts[0].outcome, OutletOutcome::Down);
        assert_eq!(r.routes[0].outcome(), Some(OutletOutcome::Written));
        note(&r);
        i += 1;
    }

    // Back: the held messages are written, the outlet is up again, and
    // messages go to Redis once more.
    redis.restart();
    wait_until("the Redis outlet up again", || to_redis.is_up());
    let after: Vec<_> = (0..50)
        .map(|k| send(i + k, LONG).expect("both up again"))
        .collect();
    for r in &after {
        assert_eq!(r.routes[0].delivered_by(), Some(to_redis.name()));
        note(r);
    }
    assert_eq!(confirmed, 100);
    assert!(in_queue.len() >= 100);

    // Each confirmed message is where its receipt says, and nowhere else.
    let in_stream = stream_ids(&redis); // the restarted server: only what came after
    for r in &after {
        assert!(in_stream.contains(&r.id));
    }
    for id in &unconfirmed {
        assert!(
            in_stream.contains(id),
            "a held message was sent after the restart"
        );
    }
    let queued = table_ids(
        &db,
        "SELECT msg_id::text FROM topicbus.queue WHERE queue = 'orders'",
    );
    assert_eq!(queued, in_queue, "the queue holds exactly the fallbacks");
    let in_archive = table_ids(&db, "SELECT msg_id::text FROM topicbus.archive");
    assert!(archived.is_subset(&in_archive));
    assert!(in_redis.is_disjoint(&queued));
    let stats = streams.shutdown(LONG);
    assert_eq!(stats.unsent, 0, "{stats:?}");
    queue.shutdown(LONG);
    archive.shutdown(LONG);
}

#[test]
fn a_hung_redis_whose_outbox_is_full_falls_through_to_the_fallback() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let streams = streams(&redis.url())
        .outbox_capacity(1)
        .outbox_overflow(OverflowPolicy::Reject)
        .start(&bus)
        .unwrap();
    let queue = queue(&db).start(&bus).unwrap();
    let router = Router::builder(&bus)
        .route(Route::to(streams.outlet().unwrap()).or(queue.outlet().unwrap()))
        .strategy(Strategy::All)
        .build()
        .unwrap();
    redis.pause();
    // The writer takes what it can and then waits for replies that do not
    // come; the outbox fills and refuses; the link is not known down.
    let receipts: Vec<_> = (0..20)
        .map(|i| {
            router
                .publish("orders.eu.created", format!("order {i}"))
                .unwrap()
        })
        .collect();
    let fell: Vec<_> = receipts
        .iter()
        .filter(|r| r.routes[0].fell_back())
        .collect();
    assert!(fell.len() >= 10, "{receipts:?}");
    for r in &fell {
        assert_eq!(r.routes[0].attempts[0].outcome, OutletOutcome::Rejected);
        assert_eq!(r.routes[0].outcome(), Some(OutletOutcome::Accepted));
    }
    redis.resume();
    let report = streams.shutdown(LONG);
    assert_eq!(report.unsent, 0, "{report:?}");
    assert_eq!(report.added as usize, 20 - fell.len(), "{report:?}");
    let s = queue.shutdown(LONG);
    assert_eq!(s.enqueued as usize, fell.len(), "{s:?}");
}

#[test]
fn strategies_decide_on_what_is_up_and_say_what_each_outlet_did() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = bus();
    let local = bus.receiver("orders.#").unwrap();
    let dead = streams(&nowhere())
        .outbox_capacity(1)
        .outbox_overflow(OverflowPolicy::Reject)
        .start(&bus)
        .unwrap();
    let queue = queue(&db).start(&bus).unwrap();
    let (down, pg) = (dead.outlet().unwrap(), queue.outlet().unwrap());
    // Never written to yet: not known down. The first message finds out.
    assert!(down.is_up());
    let best = Router::builder(&bus).to(down.clone()).build().unwrap();
    let r = best.publish("orders.a", "first".into()).unwrap();
    assert_eq!(r.routes[0].outcome(), Some(OutletOutcome::Accepted));
    assert_eq!(r.local.map(|l| l.enqueued), Some(1));
    wait_until("the dead outlet down", || !down.is_up());

    // Best effort with no outlet up holds the message in the outbox, until
    // the outbox is full.
    let r = best.publish("orders.a", "held".into()).unwrap();
    let attempts: Vec<_> = r.routes[0].attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(attempts, [OutletOutcome::Down, OutletOutcome::Held]);
    let r = best.publish("orders.a", "no room".into()).unwrap();
    assert_eq!(r.routes[0].outcome(), Some(OutletOutcome::Rejected));
    assert_eq!(r.routes[0].delivered_by(), None);

    // First success skips the down route and takes the next.
    let first = Router::builder(&bus)
        .to(down.clone())
        .to(pg.clone())
        .strategy(Strategy::FirstSuccess)
        .build()
        .unwrap();
    let r = first.publish("orders.b", "to pg".into()).unwrap();
    assert_eq!(r.routes[0].outcome(), Some(OutletOutcome::Down));
    assert_eq!(r.routes[1].delivered_by(), Some(pg.name()));
    let r = first
        .publish_confirmed("orders.b", "to pg, written".into(), LONG)
        .unwrap();
    assert_eq!(r.routes[1].outcome(), Some(OutletOutcome::Written));

    // All refuses before publishing anything when a route has no outlet up.
    let all = Router::builder(&bus)
        .to(pg.clone())
        .to(down.clone())
        .strategy(Strategy::All)
        .build()
        .unwrap();
    match all.publish("orders.c", "refused".into()) {
        Err(RouteError::Unavailable { route, receipt }) => {
            assert_eq!(route, 1);
            assert!(receipt.local.is_none());
        }
        other => panic!("{other:?}"),
    }
    // With a fallback the route is served.
    let all = Router::builder(&bus)
        .route(Route::to(down.clone()).or(pg.clone()))
        .strategy(Strategy::All)
        .local(false)
        .build()
        .unwrap();
    let r = all.publish("orders.c", "via fallback".into()).unwrap();
    assert!(r.routes[0].fell_back());
    assert!(r.local.is_none());

    // Local delivery: five published with `local` (first, held, no room,
    // to pg, to pg written); none of the refused or non-local ones.
    let mut payloads = Vec::new();
    while let Ok(m) = local.try_recv() {
        payloads.push(m.payload().clone());
    }
    assert_eq!(
        payloads,
        ["first", "held", "no room", "to pg", "to pg, written"]
    );

    // Typed refusals.
    let delayed = Message::builder(Topic::parse("orders.d").unwrap(), "later".to_string())
        .delay(Duration::from_secs(60));
    assert!(matches!(
        all.publish_message(delayed),
        Err(RouteError::Delayed)
    ));
    assert!(matches!(
        all.publish("bad..topic", "x".into()),
        Err(RouteError::Publish(_))
    ));
    assert!(matches!(
        Router::<String>::builder(&bus).build(),
        Err(RouteError::NoRoutes)
    ));
    assert!(matches!(
        Router::builder(&bus)
            .to(pg.clone())
            .route(Route::to(down.clone()).or(pg.clone().named("again")))
            .build(),
        Err(RouteError::DuplicateOutlet(name)) if name == pg.name()
    ));
    let other = Bus::<String>::builder().workers(1).build().unwrap();
    assert!(matches!(
        Router::builder(&other).to(pg.clone()).build(),
        Err(RouteError::ForeignOutlet(_))
    ));

    // A shut-down adapter's outlet is stopped.
    let s = queue.shutdown(LONG);
    assert_eq!(s.enqueued, 3, "{s:?}");
    assert!(!pg.is_up());
    let only_pg = Router::builder(&bus)
        .to(pg.clone())
        .strategy(Strategy::FirstSuccess)
        .build()
        .unwrap();
    match only_pg.publish("orders.e", "gone".into()) {
        Err(RouteError::Unavailable { receipt, .. }) => {
            assert_eq!(receipt.routes[0].outcome(), Some(OutletOutcome::Stopped));
        }
        other => panic!("{other:?}"),
    }
    let report = dead.shutdown(Duration::from_millis(100));
    // "first" (in the writer's batch) and "held" (in the outbox) never
    // went out; both are counted.
    assert_eq!(report.unsent, 2, "{report:?}");
}

#[test]
fn an_adapter_without_exports_or_routable_has_no_outlet() {
    let bus = bus();
    let s = RedisStreams::builder(nowhere(), Codec::unsigned(), "x")
        .start(&bus)
        .unwrap();
    assert!(s.outlet().is_none());
    let r = RedisStreams::builder(nowhere(), Codec::unsigned(), "x")
        .export("a.#")
        .start(&bus)
        .unwrap();
    assert!(r.outlet().is_some());
}
