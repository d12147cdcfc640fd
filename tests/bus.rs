//! Behaviour of the bus runtime: delivery, ordering, priorities, overflow,
//! pause/resume, queue groups, isolation, shutdown, accounting.
//!
//! No test sleeps to synchronise: handlers and tests meet on channels and
//! barriers, with generous timeouts that only bound a failure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

mod common;
use common::{wait_until, Gate, LONG};
use topicbus::{
    Bus, GroupStrategy, Message, Outcome, OverflowPolicy, Priority, PublishError, RecvTimeoutError,
    ShutdownError, SubscribeError, SubscribeOptions, Topic, TryRecvError,
};

fn new_bus<T: Send + Sync + 'static>(workers: usize) -> Bus<T> {
    Bus::<T>::builder().workers(workers).build().expect("bus")
}

fn msg<T>(topic: &str, payload: T, priority: Priority) -> Message<T> {
    Message::builder(Topic::parse(topic).expect("topic"), payload)
        .priority(priority)
        .build()
}

#[test]
fn routes_to_matching_patterns_once_each() {
    let bus = new_bus::<u32>(2);
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let _s = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("orders.*.created")
                .pattern("orders.#"),
            move |m: &Message<u32>| {
                tx.lock().unwrap().send(*m.payload()).unwrap();
            },
        )
        .unwrap();
    let r = bus.publish("orders.eu.created", 1).unwrap();
    assert_eq!(
        (r.matched, r.enqueued),
        (1, 1),
        "two patterns, one delivery"
    );
    bus.publish("orders.eu.shipped", 2).unwrap();
    assert_eq!(bus.publish("users.created", 3).unwrap().matched, 0);
    let mut got = vec![
        rx.recv_timeout(LONG).unwrap(),
        rx.recv_timeout(LONG).unwrap(),
    ];
    got.sort_unstable();
    assert_eq!(got, [1, 2]);
    bus.shutdown(LONG).unwrap();
    assert!(rx.try_recv().is_err(), "nothing else delivered");
}

#[test]
fn one_subscriber_sees_one_publishers_lane_in_order() {
    let bus = new_bus::<u64>(4);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let sub = bus
        .subscribe("seq", move |m: &Message<u64>| {
            s2.lock().unwrap().push(*m.payload())
        })
        .unwrap();
    let topic = Topic::parse("seq").unwrap();
    for i in 0..20_000 {
        bus.publish(&topic, i).unwrap();
    }
    assert!(bus.shutdown(LONG).unwrap().is_clean());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 20_000);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert_eq!(sub.stats().handled, 20_000);
}

#[test]
fn high_lane_first_and_low_not_starved() {
    let bus = new_bus::<(Priority, u32)>(1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("p")
                .paused(true)
                .capacity(256),
            move |m: &Message<(Priority, u32)>| s2.lock().unwrap().push(*m.payload()),
        )
        .unwrap();
    for i in 0..4 {
        bus.publish_message(msg("p", (Priority::Low, i), Priority::Low))
            .unwrap();
        bus.publish_message(msg("p", (Priority::Normal, i), Priority::Normal))
            .unwrap();
    }
    for i in 0..40 {
        bus.publish_message(msg("p", (Priority::High, i), Priority::High))
            .unwrap();
    }
    sub.resume();
    bus.shutdown(LONG).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 48);
    assert_eq!(seen[0].0, Priority::High, "high first");
    let first_lower = seen.iter().position(|(p, _)| *p != Priority::High).unwrap();
    assert!(
        first_lower <= 16,
        "a lower lane is served after at most 16 high pops, got {first_lower}"
    );
    for p in Priority::ALL {
        let lane: Vec<u32> = seen.iter().filter(|(q, _)| *q == p).map(|x| x.1).collect();
        assert!(lane.windows(2).all(|w| w[0] < w[1]), "{p:?} lane in order");
    }
}

/// A paused subscription of capacity 2 per lane, filled, then one more.
fn overflow_case(
    policy: OverflowPolicy,
) -> (
    Bus<u32>,
    topicbus::Subscription,
    Vec<u32>,
    Result<topicbus::Receipt, PublishError>,
) {
    let bus = new_bus::<u32>(1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("o")
                .capacity(2)
                .overflow(policy)
                .paused(true),
            move |m: &Message<u32>| s2.lock().unwrap().push(*m.payload()),
        )
        .unwrap();
    bus.publish("o", 1).unwrap();
    bus.publish("o", 2).unwrap();
    let third = bus.publish("o", 3);
    sub.resume();
    bus.shutdown(LONG).unwrap();
    let seen = seen.lock().unwrap().clone();
    (bus, sub, seen, third)
}

#[test]
fn overflow_drop_newest() {
    let (_bus, sub, seen, third) = overflow_case(OverflowPolicy::DropNewest);
    let r = third.unwrap();
    assert_eq!((r.matched, r.enqueued, r.dropped), (1, 0, 1));
    assert_eq!(seen, [1, 2]);
    assert_eq!(sub.stats().dropped.newest, 1);
}

#[test]
fn overflow_drop_oldest() {
    let (_bus, sub, seen, third) = overflow_case(OverflowPolicy::DropOldest);
    assert_eq!(third.unwrap().enqueued, 1);
    assert_eq!(seen, [2, 3]);
    assert_eq!(sub.stats().dropped.oldest, 1);
}

#[test]
fn overflow_reject_is_an_error_with_receipt() {
    let (_bus, sub, seen, third) = overflow_case(OverflowPolicy::Reject);
    match third {
        Err(PublishError::Rejected { receipt }) => {
            assert_eq!((receipt.matched, receipt.rejected), (1, 1))
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(seen, [1, 2]);
    assert_eq!(sub.stats().dropped.rejected, 1);
}

#[test]
fn overflow_block_times_out_and_counts() {
    let (_bus, sub, seen, third) = overflow_case(OverflowPolicy::Block {
        timeout: Duration::from_millis(20),
    });
    assert_eq!(third.unwrap().dropped, 1);
    assert_eq!(seen, [1, 2]);
    assert_eq!(sub.stats().dropped.timeout, 1);
}

#[test]
fn overflow_block_waits_for_space() {
    let bus = new_bus::<u32>(1);
    let (gate, handler) = Gate::new();
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("b")
                .capacity(1)
                .overflow(OverflowPolicy::Block { timeout: LONG }),
            handler,
        )
        .unwrap();
    bus.publish("b", 1).unwrap();
    assert_eq!(gate.entered(), 1, "handler holds message 1");
    bus.publish("b", 2).unwrap(); // fills the lane
    let publisher = {
        let bus = bus.clone();
        std::thread::spawn(move || bus.publish("b", 3))
    };
    // Whether or not the publisher is blocked yet, releasing the handler
    // lets every message through; the publish must succeed, not time out.
    gate.release(3);
    let r = publisher.join().unwrap().unwrap();
    assert_eq!((r.enqueued, r.dropped), (1, 0));
    bus.shutdown(LONG).unwrap();
    assert_eq!(sub.stats().handled, 3);
}

#[test]
fn pause_queues_and_resume_delivers() {
    let bus = new_bus::<u32>(2);
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let sub = bus
        .subscribe("p", move |_m: &Message<u32>| {
            c2.fetch_add(1, Ordering::SeqCst);
            tx.lock().unwrap().send(()).unwrap();
        })
        .unwrap();
    sub.pause();
    assert!(sub.is_paused());
    for i in 0..10 {
        bus.publish("p", i).unwrap();
    }
    // Stats are exact here: paused, nothing ran and nothing will.
    assert_eq!(sub.stats().queued[1], 10);
    assert_eq!(count.load(Ordering::SeqCst), 0);
    sub.resume();
    for _ in 0..10 {
        rx.recv_timeout(LONG).unwrap();
    }
    assert_eq!(count.load(Ordering::SeqCst), 10);
}

#[test]
fn queue_group_round_robin_splits_exactly() {
    let bus = new_bus::<u32>(2);
    let seen = Arc::new(Mutex::new(HashMap::<u32, usize>::new()));
    let subs: Vec<_> = (0..3)
        .map(|_| {
            let seen = seen.clone();
            bus.subscribe_with(
                SubscribeOptions::new()
                    .pattern("jobs.*")
                    .queue_group("workers", GroupStrategy::RoundRobin),
                move |m: &Message<u32>| {
                    *seen.lock().unwrap().entry(*m.payload()).or_default() += 1;
                },
            )
            .unwrap()
        })
        .collect();
    for i in 0..300 {
        let r = bus.publish("jobs.x", i).unwrap();
        assert_eq!(r.matched, 1, "a group counts once");
    }
    bus.shutdown(LONG).unwrap();
    let handled: Vec<u64> = subs.iter().map(|s| s.stats().handled).collect();
    assert_eq!(handled, [100, 100, 100]);
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() == 300 && seen.values().all(|&n| n == 1),
        "each exactly once"
    );
    // The same group with another strategy is refused.
    let bus = new_bus::<u32>(1);
    let _a = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("a")
                .queue_group("g", GroupStrategy::RoundRobin),
            |_m: &Message<u32>| (),
        )
        .unwrap();
    let err = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("a")
                .queue_group("g", GroupStrategy::LeastLoaded),
            |_m: &Message<u32>| (),
        )
        .unwrap_err();
    assert!(matches!(err, SubscribeError::GroupStrategy { .. }));
}

#[test]
fn queue_group_least_loaded_and_other_subscribers_still_get_everything() {
    let bus = new_bus::<u32>(2);
    let (a, b) = {
        let opts = || {
            SubscribeOptions::new()
                .pattern("t.#")
                .queue_group("pool", GroupStrategy::LeastLoaded)
        };
        (
            bus.receiver_with(opts()).unwrap(),
            bus.receiver_with(opts()).unwrap(),
        )
    };
    let all = bus.receiver("t.#").unwrap();
    for i in 0..100 {
        assert_eq!(bus.publish("t.x", i).unwrap().matched, 2);
    }
    // Nobody receives yet: least-loaded alternates, so the split is even.
    let (na, nb) = (a.try_iter().count(), b.try_iter().count());
    assert_eq!((na + nb, na, nb), (100, 50, 50));
    assert_eq!(all.try_iter().count(), 100);
}

#[test]
fn panicking_and_failing_handlers_are_isolated() {
    let bus = new_bus::<u32>(1);
    let bad = bus
        .subscribe("x", |m: &Message<u32>| {
            if m.payload().is_multiple_of(2) {
                panic!("boom {}", m.payload());
            }
            Err::<(), _>("nope")
        })
        .unwrap();
    let good_count = Arc::new(AtomicUsize::new(0));
    let g2 = good_count.clone();
    let good = bus
        .subscribe("x", move |_m: &Message<u32>| {
            g2.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    for i in 0..100 {
        bus.publish("x", i).unwrap();
    }
    let c = bus.publish_confirmed("x", 7, LONG).unwrap();
    assert!(c.complete);
    let bad_outcome = c
        .deliveries
        .iter()
        .find(|d| d.subscription == bad.id())
        .unwrap();
    assert_eq!(bad_outcome.outcome, Outcome::Failed);
    assert_eq!(bad_outcome.detail.as_deref(), Some("nope"));
    assert!(
        bus.shutdown(LONG).unwrap().is_clean(),
        "the one worker survived"
    );
    let (b, g) = (bad.stats(), good.stats());
    assert_eq!((b.panicked, b.failed), (50, 51));
    assert_eq!(g.handled, 101);
    assert_eq!(good_count.load(Ordering::SeqCst), 101);
    assert_eq!(bus.stats().worker_panics, 0, "panics caught per handler");
}

#[test]
fn a_stalled_handler_does_not_hold_up_others() {
    let bus = new_bus::<u32>(2);
    let (gate, handler) = Gate::new();
    let slow = bus.subscribe("s", handler).unwrap();
    let fast = bus.receiver("s").unwrap();
    let fast_cb_count = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    let done_tx = Mutex::new(done_tx);
    let f2 = fast_cb_count.clone();
    let _fast_cb = bus
        .subscribe("s", move |_m: &Message<u32>| {
            if f2.fetch_add(1, Ordering::SeqCst) + 1 == 500 {
                done_tx.lock().unwrap().send(()).unwrap();
            }
        })
        .unwrap();
    bus.publish("s", 0).unwrap();
    gate.entered();
    for i in 1..500 {
        bus.publish("s", i).unwrap();
    }
    // While the slow handler holds one worker, the other serves the rest.
    done_rx.recv_timeout(LONG).unwrap();
    assert_eq!(fast.try_iter().count(), 500);
    assert_eq!(slow.stats().handled, 0);
    gate.release(500);
    assert!(bus.shutdown(LONG).unwrap().is_clean());
    assert_eq!(slow.stats().handled, 500);
}

#[test]
fn shutdown_drains_everything_under_load() {
    let bus = new_bus::<u64>(2);
    let subs: Vec<_> = (0..8)
        .map(|i| {
            bus.subscribe(
                if i % 2 == 0 { "load.#" } else { "load.*.x" },
                |m: &Message<u64>| {
                    std::hint::black_box(m.payload().wrapping_mul(31));
                },
            )
            .unwrap()
        })
        .collect();
    let start = Arc::new(Barrier::new(4));
    let publishers: Vec<_> = (0..3)
        .map(|p| {
            let bus = bus.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut sent = 0u64;
                let t = Topic::parse("load.a.x").unwrap();
                for i in 0.. {
                    match bus.publish(&t, p * 1_000_000 + i) {
                        Ok(_) => sent += 1,
                        Err(PublishError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                sent
            })
        })
        .collect();
    start.wait();
    // Let the publishers get going: wait until plenty was delivered.
    wait_until("plenty delivered", || bus.stats().total.delivered >= 50_000);
    let report = bus.shutdown(LONG).unwrap();
    let sent: u64 = publishers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(!report.timed_out && report.workers_joined, "{report:?}");
    for s in &subs {
        let st = s.stats();
        assert_eq!(st.delivered, sent, "every message reached every subscriber");
        assert_eq!(st.settled(), st.delivered, "{st:?}");
        assert_eq!(st.handled + st.dropped.timeout, st.delivered, "{st:?}");
        // Racing publishes after the drain are accounted as shutdown drops.
        assert_eq!(st.dropped.total(), st.dropped.timeout + st.dropped.shutdown);
    }
    assert!(matches!(
        bus.publish("load.a.x", 0),
        Err(PublishError::Closed)
    ));
}

#[test]
fn shutdown_times_out_on_a_stuck_handler_and_accounts_for_everything() {
    let bus = new_bus::<u32>(1);
    let (gate, handler) = Gate::new();
    let stuck = bus.subscribe("s", handler).unwrap();
    for i in 0..10 {
        bus.publish("s", i).unwrap();
    }
    gate.entered();
    let report = bus.shutdown(Duration::from_millis(50)).unwrap();
    assert!(report.timed_out && !report.workers_joined, "{report:?}");
    assert_eq!(report.dropped, 9, "{report:?}");
    gate.release(1);
    let st = stuck.stats();
    assert_eq!(st.dropped.shutdown, 9);
    // The stuck call settles once it returns; the detached worker exits.
    wait_until("the stuck call settled", || stuck.stats().settled() >= 10);
    assert_eq!(stuck.stats().handled, 1);
    // Shutdown is idempotent.
    assert_eq!(bus.shutdown(LONG).unwrap(), report);
}

#[test]
fn closed_bus_refuses_with_typed_errors() {
    let bus = new_bus::<Vec<u8>>(1);
    bus.shutdown(LONG).unwrap();
    assert!(!bus.is_open());
    assert!(matches!(
        bus.publish("a", vec![]),
        Err(PublishError::Closed)
    ));
    assert!(matches!(
        bus.subscribe("a", |_m: &Message<Vec<u8>>| ()),
        Err(SubscribeError::Closed)
    ));
    assert!(matches!(bus.receiver("a"), Err(SubscribeError::Closed)));
    assert!(bus.publish_batch([("a", vec![])]).is_err());
}

#[test]
fn bad_input_is_refused_and_nothing_is_half_done() {
    let bus = Bus::<Vec<u8>>::builder()
        .workers(1)
        .max_payload(8)
        .limits(topicbus::Limits {
            max_len: 16,
            max_depth: 3,
        })
        .build()
        .unwrap();
    let rx = bus.receiver("#").unwrap();
    assert!(matches!(
        bus.publish("a..b", vec![]),
        Err(PublishError::Topic(_))
    ));
    assert!(matches!(
        bus.publish("a.b.c.d", vec![]),
        Err(PublishError::Topic(_))
    ));
    let long = Topic::parse("abcdefghijklmnopq").unwrap(); // valid by default limits
    assert!(matches!(
        bus.publish(&long, vec![]),
        Err(PublishError::Topic(_))
    ));
    match bus.publish("a", vec![0; 9]) {
        Err(PublishError::PayloadTooLarge(e)) => assert_eq!((e.size, e.max), (9, 8)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        bus.subscribe("a.b*", |_m: &Message<Vec<u8>>| ()),
        Err(SubscribeError::Pattern(_))
    ));
    assert!(matches!(
        bus.subscribe_with(
            SubscribeOptions::new().pattern("a").capacity(0),
            |_m: &Message<Vec<u8>>| ()
        ),
        Err(SubscribeError::Options(_))
    ));
    assert!(matches!(
        bus.subscribe_with(
            SubscribeOptions::new()
                .pattern("a")
                .inline(true)
                .concurrency(2),
            |_m: &Message<Vec<u8>>| ()
        ),
        Err(SubscribeError::Options(_))
    ));
    assert_eq!(
        rx.try_recv().unwrap_err(),
        TryRecvError::Empty,
        "nothing got through"
    );
    assert_eq!(bus.stats().published, 0);
    assert_eq!(bus.publish("a", vec![0; 8]).unwrap().enqueued, 1);
}

#[test]
fn unsubscribe_stops_the_handler_and_accounts_for_the_queue() {
    let bus = new_bus::<u32>(2);
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("u").paused(true),
            move |_m: &Message<u32>| {
                c2.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
    for i in 0..5 {
        bus.publish("u", i).unwrap();
    }
    let probe = bus.receiver("u").unwrap();
    let stats_handle = bus.receiver("unrelated").unwrap();
    drop(stats_handle);
    let id = sub.id();
    sub.unsubscribe();
    assert_eq!(bus.publish("u", 9).unwrap().matched, 1, "only the probe");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(bus.stats().subscriptions.iter().all(|s| s.id != id));
    let total = bus.stats().total;
    assert_eq!(total.dropped.unsubscribed, 5);
    assert_eq!(probe.try_iter().count(), 1);
}

#[test]
fn a_handler_may_unsubscribe_itself_and_may_not_shut_down_its_bus() {
    let bus = new_bus::<u32>(1);
    let slot: Arc<Mutex<Option<topicbus::Subscription>>> = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let weak = bus.downgrade();
    let s2 = slot.clone();
    let sub = bus
        .subscribe("once", move |_m: &Message<u32>| {
            let err = weak.upgrade().map(|b| b.shutdown(LONG));
            let own = s2.lock().unwrap().take();
            if let Some(own) = own {
                own.unsubscribe();
            }
            tx.lock().unwrap().send(err).unwrap();
        })
        .unwrap();
    *slot.lock().unwrap() = Some(sub);
    bus.publish("once", 1).unwrap();
    let err = rx.recv_timeout(LONG).unwrap();
    assert_eq!(err, Some(Err(ShutdownError::InHandler)));
    assert_eq!(
        bus.publish("once", 2).unwrap().matched,
        0,
        "unsubscribed itself"
    );
    assert!(bus.shutdown(LONG).unwrap().is_clean());
}

#[test]
fn inline_handlers_run_on_the_publisher_thread() {
    let bus = new_bus::<u32>(1);
    let threads = Arc::new(Mutex::new(Vec::new()));
    let t2 = threads.clone();
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("i.#").inline(true),
            move |_m: &Message<u32>| {
                t2.lock().unwrap().push(std::thread::current().id());
            },
        )
        .unwrap();
    bus.publish("i.a", 1).unwrap();
    assert_eq!(*threads.lock().unwrap(), [std::thread::current().id()]);
    sub.pause();
    assert_eq!(bus.publish("i.a", 2).unwrap().dropped, 1);
    sub.resume();
    bus.publish("i.a", 3).unwrap();
    let st = sub.stats();
    assert_eq!((st.handled, st.dropped.paused, st.delivered), (2, 1, 3));
}

#[test]
fn concurrency_runs_handlers_in_parallel() {
    let bus = new_bus::<u32>(4);
    let meet = Arc::new(Barrier::new(3));
    let m2 = meet.clone();
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("c").concurrency(3),
            move |_m: &Message<u32>| {
                // Three calls must be inside at once to pass.
                m2.wait();
            },
        )
        .unwrap();
    for i in 0..3 {
        bus.publish("c", i).unwrap();
    }
    assert!(bus.shutdown(LONG).unwrap().is_clean());
    assert_eq!(sub.stats().handled, 3);
}

#[test]
fn receiver_blocks_times_out_iterates_and_closes() {
    let bus = new_bus::<u32>(1);
    let rx = Arc::new(bus.receiver("r.*").unwrap());
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(5)).unwrap_err(),
        RecvTimeoutError::Timeout
    );
    let waiter = {
        let rx = rx.clone();
        std::thread::spawn(move || rx.recv().map(|m| *m.payload()))
    };
    bus.publish("r.a", 42).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), 42);
    for i in 0..3 {
        bus.publish("r.b", i).unwrap();
    }
    let report = bus.shutdown(LONG).unwrap();
    assert_eq!(report.left_in_receivers, 3);
    let rest: Vec<u32> = rx.iter().map(|m| *m.payload()).collect();
    assert_eq!(rest, [0, 1, 2], "queued messages survive shutdown");
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Closed);
    assert_eq!(rx.stats().received, 4);
}

#[test]
fn expired_messages_are_counted_not_delivered() {
    let bus = new_bus::<u32>(1);
    let sub = bus.subscribe("e", |_m: &Message<u32>| ()).unwrap();
    let past = std::time::SystemTime::now() - Duration::from_secs(1);
    bus.publish_message(Message::builder(Topic::parse("e").unwrap(), 1).expires_at(past))
        .unwrap();
    let c = bus.publish_confirmed("e", 2, LONG).unwrap();
    assert!(c.all_succeeded());
    bus.shutdown(LONG).unwrap();
    let st = sub.stats();
    assert_eq!((st.expired, st.handled), (1, 1));
}

#[test]
fn publish_confirmed_reports_a_timeout_as_incomplete() {
    let bus = new_bus::<u32>(1);
    let (gate, handler) = Gate::new();
    let _s = bus.subscribe("c", handler).unwrap();
    let c = bus
        .publish_confirmed("c", 1, Duration::from_millis(10))
        .unwrap();
    assert!(!c.complete && c.deliveries.is_empty() && c.matched == 1);
    gate.release(1);
}

#[test]
fn dropping_the_last_handle_shuts_down_after_draining() {
    let bus = new_bus::<u32>(1);
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    bus.subscribe("d", move |_m: &Message<u32>| {
        c2.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap()
    .detach();
    let weak = bus.downgrade();
    let clone = bus.clone();
    for i in 0..1000 {
        clone.publish("d", i).unwrap();
    }
    drop(bus);
    assert!(weak.upgrade().is_some(), "a clone keeps it alive");
    drop(clone);
    assert!(weak.upgrade().is_none());
    assert_eq!(
        count.load(Ordering::SeqCst),
        1000,
        "drop drained the mailbox"
    );
}

#[test]
fn dropping_the_last_handle_inside_a_handler_does_not_deadlock() {
    let bus = new_bus::<u32>(1);
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let holder: Arc<Mutex<Option<Bus<u32>>>> = Arc::new(Mutex::new(None));
    let h2 = holder.clone();
    bus.subscribe("x", move |_m: &Message<u32>| {
        let last = h2.lock().unwrap().take();
        drop(last); // the last strong handle, dropped on a worker
        tx.lock().unwrap().send(()).unwrap();
    })
    .unwrap()
    .detach();
    let weak = bus.downgrade();
    *holder.lock().unwrap() = Some(bus.clone());
    bus.publish("x", 1).unwrap();
    drop(bus);
    rx.recv_timeout(LONG).unwrap();
    assert!(weak.upgrade().is_none());
}

#[test]
fn worker_start_hook_runs_once_per_worker_on_its_thread_and_a_panic_is_counted() {
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let tx = Mutex::new(tx);
    let bus = Bus::<u32>::builder()
        .workers(3)
        .on_worker_start(move |n| {
            let name = std::thread::current().name().unwrap_or_default().to_owned();
            tx.lock().expect("sender").send((n, name)).expect("send");
            if n == 1 {
                panic!("hook failure on worker 1");
            }
        })
        .build()
        .expect("bus");
    let mut seen: Vec<(usize, String)> = (0..3)
        .map(|_| rx.recv_timeout(LONG).expect("hook ran"))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        (0..3)
            .map(|n| (n, format!("topicbus-worker-{n}")))
            .collect::<Vec<_>>()
    );
    // The worker whose hook panicked still serves: three handlers that wait
    // (with a deadline) for each other can only all see three arrivals when
    // three workers run them at once.
    let met = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
    let (done_tx, done_rx) = mpsc::channel();
    let subs: Vec<_> = (0..3)
        .map(|i| {
            let (met, d) = (Arc::clone(&met), done_tx.clone());
            bus.subscribe(format!("w.{i}").as_str(), move |_m: &Message<u32>| {
                let (lock, cv) = &*met;
                let mut n = lock.lock().expect("lock");
                *n += 1;
                cv.notify_all();
                let (n, _) = cv.wait_timeout_while(n, LONG, |n| *n < 3).expect("wait");
                d.send(*n).expect("done");
            })
            .expect("subscribe")
        })
        .collect();
    for i in 0..3 {
        bus.publish(format!("w.{i}").as_str(), 0).expect("publish");
    }
    for _ in 0..3 {
        let n = done_rx.recv_timeout(LONG * 2).expect("handler finished");
        assert_eq!(n, 3, "three workers ran the handlers concurrently");
    }
    assert_eq!(bus.stats().worker_panics, 1);
    drop(subs);
    bus.shutdown(LONG).expect("shutdown");
}
