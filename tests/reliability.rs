//! Reliability features driven by a manual clock: retries and their
//! schedule, strict order, dead letters and replay, circuit breakers,
//! deduplication, TTL, request-reply, filters, delayed delivery, hooks.
//!
//! Time moves only when a test advances the clock; handlers and tests meet
//! on channels, and the few state checks wait on a condition with a
//! generous deadline (yielding, never sleeping).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

mod common;
use common::{on_clock, wait_until, LONG};
use topicbus::{
    BreakerWindow, Bus, CircuitBreaker, CircuitState, Clock, DeadLetter, DeadLetterQuery,
    DeadLetterReason, Dedup, DropReason, ErrorKind, ManualClock, Message, MessageId, Outcome,
    Pattern, Permanent, ReplayError, RequestError, RetryOrder, RetryPolicy, SubscribeOptions,
    Topic, WhenOpen,
};

fn topic(s: &str) -> Topic {
    Topic::parse(s).expect("topic")
}

fn retries(n: u32, initial_ms: u64) -> RetryPolicy {
    RetryPolicy::new(n)
        .backoff(Duration::from_millis(initial_ms), Duration::from_secs(3600))
        .jitter(false)
}

#[test]
fn retries_follow_the_backoff_schedule_on_the_timer() {
    let clock = ManualClock::shared();
    let (retry_tx, retry_rx) = mpsc::channel();
    let retry_tx = Mutex::new(retry_tx);
    let bus = on_clock(&clock)
        .dead_letters(10)
        .on_retry(move |_m, _s, attempt, delay| {
            let _ = retry_tx.lock().unwrap().send((attempt, delay));
        })
        .build()
        .unwrap();
    let (seen_tx, seen) = mpsc::channel();
    let seen_tx = Mutex::new(seen_tx);
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("pay").retry(retries(4, 10)),
            move |m: &Message<u32>| {
                let _ = seen_tx.lock().unwrap().send(m.attempt());
                Err::<(), _>("gateway timeout")
            },
        )
        .unwrap();
    // Another subscription on the same single worker: a waiting retry must
    // not occupy it.
    let other = bus.receiver("other").unwrap();
    let (other_tx, other_rx) = mpsc::channel();
    let other_tx = Mutex::new(other_tx);
    let _o = bus
        .subscribe("ping", move |m: &Message<u32>| {
            let _ = other_tx.lock().unwrap().send(*m.payload());
        })
        .unwrap();

    bus.publish("pay", 1).unwrap();
    assert_eq!(seen.recv_timeout(LONG).unwrap(), 1);
    let expected = [(2, 10), (3, 20), (4, 40)];
    for (attempt, ms) in expected {
        let (a, delay) = retry_rx.recv_timeout(LONG).unwrap();
        assert_eq!((a, delay), (attempt, Duration::from_millis(ms)));
        // While the retry waits, the worker serves others.
        bus.publish("ping", attempt).unwrap();
        assert_eq!(other_rx.recv_timeout(LONG).unwrap(), attempt);
        assert!(seen.try_recv().is_err(), "not before its time");
        clock.advance(Duration::from_millis(ms - 1));
        assert!(seen.recv_timeout(Duration::from_millis(20)).is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(seen.recv_timeout(LONG).unwrap(), attempt);
    }
    let dlq = bus.dead_letters().unwrap();
    wait_until("the dead letter", || dlq.len() == 1);
    let letter = &dlq.all()[0];
    assert_eq!(letter.reason, DeadLetterReason::RetriesExhausted);
    assert_eq!(letter.attempts, 4);
    assert_eq!(letter.subscription, Some(sub.id()));
    let error = letter.error.as_ref().unwrap();
    assert_eq!(
        (error.kind, error.message.as_str()),
        (ErrorKind::Transient, "gateway timeout")
    );
    assert_eq!(
        letter
            .last_failure
            .duration_since(letter.first_failure)
            .unwrap(),
        Duration::from_millis(70)
    );
    let s = sub.stats();
    assert_eq!(
        (s.delivered, s.retried, s.dead_lettered.retries_exhausted),
        (1, 3, 1)
    );
    assert_eq!(s.settled(), 1, "one outcome for one delivery");
    drop(other);
}

fn ordering_run(order: RetryOrder) -> Vec<(u32, u32)> {
    let clock = ManualClock::shared();
    let (retry_tx, retry_rx) = mpsc::channel();
    let retry_tx = Mutex::new(retry_tx);
    let bus = on_clock(&clock)
        .on_retry(move |m, _s, _a, _d| {
            let _ = retry_tx.lock().unwrap().send(*m.payload());
        })
        .build()
        .unwrap();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&handled);
    let (done_tx, done) = mpsc::channel();
    let done_tx = Mutex::new(done_tx);
    let _sub = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("q")
                .retry(retries(3, 100).order(order)),
            move |m: &Message<u32>| {
                if *m.payload() == 1 && m.attempt() == 1 {
                    return Err("first try fails");
                }
                h.lock().unwrap().push((*m.payload(), m.attempt()));
                let _ = done_tx.lock().unwrap().send(());
                Ok(())
            },
        )
        .unwrap();
    bus.publish("q", 1).unwrap();
    assert_eq!(retry_rx.recv_timeout(LONG).unwrap(), 1);
    bus.publish("q", 2).unwrap();
    if order == RetryOrder::Reorder {
        done.recv_timeout(LONG).unwrap();
    } else {
        assert!(
            done.recv_timeout(Duration::from_millis(50)).is_err(),
            "held"
        );
    }
    clock.advance(Duration::from_millis(100));
    done.recv_timeout(LONG).unwrap();
    if order == RetryOrder::Strict {
        done.recv_timeout(LONG).unwrap();
    }
    let got = handled.lock().unwrap().clone();
    got
}

#[test]
fn reordering_and_strict_retries() {
    assert_eq!(ordering_run(RetryOrder::Reorder), [(2, 1), (1, 2)]);
    assert_eq!(ordering_run(RetryOrder::Strict), [(1, 2), (2, 1)]);
}

#[test]
fn permanent_errors_and_panics_skip_retries() {
    let bus = Bus::<u32>::builder()
        .workers(1)
        .dead_letters(10)
        .build()
        .unwrap();
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("x").retry(retries(5, 1)),
            |m: &Message<u32>| -> Result<(), Permanent> {
                match *m.payload() {
                    0 => Err(Permanent::new("bad input")),
                    _ => panic!("handler bug"),
                }
            },
        )
        .unwrap();
    bus.publish_confirmed("x", 0, LONG).unwrap();
    bus.publish_confirmed("x", 1, LONG).unwrap();
    let letters = bus.dead_letters().unwrap().all();
    let reasons: Vec<_> = letters.iter().map(|l| (l.reason, l.attempts)).collect();
    assert_eq!(
        reasons,
        [
            (DeadLetterReason::Permanent, 1),
            (DeadLetterReason::Panicked, 1)
        ]
    );
    assert_eq!(letters[1].error.as_ref().unwrap().message, "handler bug");
    assert_eq!(sub.stats().retried, 0);
}

#[test]
fn without_dead_letters_failures_are_counted_failed() {
    let bus = Bus::<u32>::builder().workers(1).build().unwrap();
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("x").retry(retries(2, 0)),
            |_m: &Message<u32>| Err::<(), _>("nope"),
        )
        .unwrap();
    let c = bus.publish_confirmed("x", 0, LONG).unwrap();
    assert_eq!(c.deliveries[0].outcome, Outcome::Failed);
    let s = sub.stats();
    assert_eq!((s.failed, s.retried, s.dead_lettered.total()), (1, 1, 0));
    assert!(bus.dead_letters().is_none());
}

#[test]
fn breaker_goes_closed_open_half_open_closed_and_open_again() {
    let clock = ManualClock::shared();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let c = Arc::clone(&changes);
    let bus = on_clock(&clock)
        .on_circuit_change(move |_s, from, to| c.lock().unwrap().push((from, to)))
        .build()
        .unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let f = Arc::clone(&failing);
    let (ran_tx, ran) = mpsc::channel();
    let ran_tx = Mutex::new(ran_tx);
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("svc").circuit_breaker(
                CircuitBreaker::new()
                    .window(BreakerWindow::Calls(2))
                    .min_calls(2)
                    .failure_rate(0.5)
                    .open_for(Duration::from_secs(10), 0.0)
                    .trials(1)
                    .when_open(WhenOpen::Hold),
            ),
            move |m: &Message<u32>| {
                let _ = ran_tx.lock().unwrap().send(*m.payload());
                if f.load(Ordering::SeqCst) {
                    Err("down")
                } else {
                    Ok(())
                }
            },
        )
        .unwrap();
    use CircuitState::{Closed, HalfOpen, Open};
    let trip = |first: u32| {
        for p in [first, first + 1] {
            bus.publish("svc", p).unwrap();
            assert_eq!(ran.recv_timeout(LONG).unwrap(), p);
        }
        wait_until("open", || sub.stats().circuit == Some(Open));
    };
    trip(1);
    // Held while open: the handler does not run, the message waits.
    bus.publish("svc", 3).unwrap();
    wait_until("held", || sub.stats().held == 1);
    assert!(ran.recv_timeout(Duration::from_millis(30)).is_err());
    failing.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(10));
    assert_eq!(ran.recv_timeout(LONG).unwrap(), 3, "the trial");
    wait_until("closed", || sub.stats().circuit == Some(Closed));
    failing.store(true, Ordering::SeqCst);
    trip(4);
    bus.publish("svc", 6).unwrap();
    wait_until("held", || sub.stats().held == 1);
    clock.advance(Duration::from_secs(10));
    assert_eq!(ran.recv_timeout(LONG).unwrap(), 6, "a failing trial");
    wait_until("open again", || sub.stats().circuit == Some(Open));
    // The hook runs after the new state is visible in stats: wait for it.
    wait_until("six hook calls", || changes.lock().unwrap().len() == 6);
    assert_eq!(
        *changes.lock().unwrap(),
        [
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed),
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open)
        ]
    );
    let s = sub.stats();
    assert_eq!((s.handled, s.failed), (1, 5));
}

#[test]
fn an_open_breaker_dead_letters_or_drops_by_policy() {
    for policy in [WhenOpen::DeadLetter, WhenOpen::Drop] {
        let clock = ManualClock::shared();
        let bus = on_clock(&clock).dead_letters(10).build().unwrap();
        let sub = bus
            .subscribe_with(
                SubscribeOptions::new().pattern("svc").circuit_breaker(
                    CircuitBreaker::new()
                        .window(BreakerWindow::Calls(1))
                        .min_calls(1)
                        .open_for(Duration::from_secs(60), 0.0)
                        .when_open(policy),
                ),
                |_m: &Message<u32>| Err::<(), _>("down"),
            )
            .unwrap();
        bus.publish_confirmed("svc", 1, LONG).unwrap();
        let c = bus.publish_confirmed("svc", 2, LONG).unwrap();
        let expect = match policy {
            WhenOpen::DeadLetter => Outcome::DeadLettered(DeadLetterReason::CircuitOpen),
            _ => Outcome::Dropped(DropReason::CircuitOpen),
        };
        assert_eq!(c.deliveries[0].outcome, expect);
        assert_eq!(sub.stats().settled(), 2);
    }
}

#[test]
fn dedup_window_by_id_expires_with_the_clock() {
    let clock = ManualClock::shared();
    let bus = on_clock(&clock).build().unwrap();
    let rx = bus
        .receiver_with(
            SubscribeOptions::new()
                .pattern("cmd")
                .dedup(Dedup::new(Duration::from_secs(30), 1000)),
        )
        .unwrap();
    let id = MessageId::new();
    let same = || {
        Message::builder(topic("cmd"), 7)
            .restore(id, SystemTime::now(), 1)
            .build()
    };
    assert_eq!(bus.publish_message(same()).unwrap().matched, 1);
    let dup = bus.publish_message(same()).unwrap();
    assert_eq!((dup.matched, dup.duplicates), (0, 1));
    clock.advance(Duration::from_secs(29));
    assert_eq!(bus.publish_message(same()).unwrap().duplicates, 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(bus.publish_message(same()).unwrap().matched, 1, "forgotten");
    assert_eq!(rx.try_iter().count(), 2);
    let s = rx.stats();
    assert_eq!((s.delivered, s.duplicates), (2, 2));
}

#[test]
fn ttl_is_checked_at_enqueue_and_at_dequeue() {
    let clock = ManualClock::shared();
    let expired = Arc::new(AtomicUsize::new(0));
    let e = Arc::clone(&expired);
    let bus = on_clock(&clock)
        .dead_letters(10)
        .on_expire(move |_m, _s| {
            e.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("t")
                .paused(true)
                .dead_letter_expired(true),
            move |_m: &Message<u32>| {
                h.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
    // At enqueue: already expired by the bus's clock.
    let stale = Message::builder(topic("t"), 1)
        .timestamp(clock.wall())
        .expires_at(clock.wall());
    let r = bus.publish_message(stale).unwrap();
    assert_eq!((r.matched, r.expired, r.enqueued), (1, 1, 0));
    assert_eq!(sub.stats().queued, [0, 0, 0], "it took no mailbox slot");
    // At dequeue: fresh when queued, expired when its turn comes.
    let fresh = Message::builder(topic("t"), 2)
        .timestamp(clock.wall())
        .ttl(Duration::from_secs(5));
    assert_eq!(bus.publish_message(fresh).unwrap().enqueued, 1);
    clock.advance(Duration::from_secs(5));
    sub.resume();
    wait_until("the expiry", || sub.stats().settled() == 2);
    assert_eq!(handled.load(Ordering::SeqCst), 0, "never delivered");
    assert_eq!(expired.load(Ordering::SeqCst), 2);
    assert_eq!(sub.stats().dead_lettered.expired, 2);
    let reasons: Vec<_> = bus
        .dead_letters()
        .unwrap()
        .all()
        .iter()
        .map(|l| (l.reason, *l.message.payload()))
        .collect();
    assert_eq!(
        reasons,
        [
            (DeadLetterReason::Expired, 1),
            (DeadLetterReason::Expired, 2)
        ]
    );
}

#[test]
fn request_reply_times_out_and_counts_the_late_reply() {
    let clock = ManualClock::shared();
    let bus = Bus::<u32>::builder()
        .workers(2)
        .clock(clock.clone())
        .build()
        .unwrap();
    let weak = bus.downgrade();
    let (go_tx, go) = mpsc::channel::<()>();
    let go = Mutex::new(go);
    let (asked_tx, asked) = mpsc::channel();
    let asked_tx = Mutex::new(asked_tx);
    let _slow = bus
        .subscribe("slow.double", move |m: &Message<u32>| {
            let _ = asked_tx.lock().unwrap().send(());
            let _ = go.lock().unwrap().recv_timeout(LONG);
            m.reply(&weak, m.payload() * 2).map(drop)
        })
        .unwrap();
    let b = bus.clone();
    let requester =
        std::thread::spawn(move || b.request("slow.double", 21, Duration::from_secs(3)));
    asked.recv_timeout(LONG).unwrap();
    clock.advance(Duration::from_secs(3));
    assert_eq!(
        requester.join().unwrap().unwrap_err(),
        RequestError::Timeout
    );
    go_tx.send(()).unwrap(); // the reply comes too late
    wait_until("the late reply", || bus.stats().late_replies == 1);

    // In time, it is the answer; the reply carries the conversation.
    let b = bus.clone();
    let requester = std::thread::spawn(move || b.request("slow.double", 4, Duration::from_secs(3)));
    asked.recv_timeout(LONG).unwrap();
    go_tx.send(()).unwrap();
    let reply = requester.join().unwrap().unwrap();
    assert_eq!(*reply.payload(), 8);
    assert!(reply.causation_id().is_some());
    assert_eq!(bus.stats().late_replies, 1);
}

#[test]
fn filters_run_before_enqueue_and_take_no_slot() {
    let bus = Bus::<u32>::builder().workers(1).build().unwrap();
    let rx = bus
        .receiver_with(
            SubscribeOptions::new()
                .pattern("orders.#")
                .capacity(1)
                .overflow(topicbus::OverflowPolicy::DropNewest)
                .entity("billing")
                .from_sender("checkout")
                .header_eq("region", "eu")
                .filter(|m: &Message<u32>| (*m.payload()).is_multiple_of(2)),
        )
        .unwrap();
    let build = |p: u32, to: Option<&str>, from: &str, region: &str| {
        let mut b = Message::builder(topic("orders.new"), p)
            .from(from)
            .header("region", region.to_string());
        if let Some(to) = to {
            b = b.to(to);
        }
        b.build()
    };
    let refused = [
        build(2, Some("shipping"), "checkout", "eu"), // someone else's
        build(2, None, "crm", "eu"),                  // wrong sender
        build(2, None, "checkout", "us"),             // wrong header
        build(3, None, "checkout", "eu"),             // predicate
    ];
    for m in refused {
        let r = bus.publish_message(m).unwrap();
        assert_eq!((r.matched, r.filtered), (0, 1));
    }
    let r = bus
        .publish_message(build(4, Some("billing"), "checkout", "eu"))
        .unwrap();
    assert_eq!(r.enqueued, 1, "the refused ones took no slot of the one");
    let s = rx.stats();
    assert_eq!((s.delivered, s.filtered, s.dropped.total()), (1, 4, 0));

    let broadcasts = bus
        .receiver_with(SubscribeOptions::new().pattern("n").broadcast_only(true))
        .unwrap();
    let direct = bus
        .receiver_with(
            SubscribeOptions::new()
                .pattern("n")
                .entity("me")
                .directed_only(true),
        )
        .unwrap();
    bus.publish("n", 1).unwrap();
    bus.publish_message(Message::builder(topic("n"), 2).to("me"))
        .unwrap();
    let got =
        |rx: &topicbus::Receiver<u32>| rx.try_iter().map(|m| *m.payload()).collect::<Vec<_>>();
    assert_eq!(got(&broadcasts), [1]);
    assert_eq!(got(&direct), [2]);
}

#[test]
fn a_filter_for_another_payload_type_is_refused() {
    let bus = Bus::<u32>::builder().workers(1).build().unwrap();
    let err = bus
        .receiver_with(
            SubscribeOptions::new()
                .pattern("a")
                .filter(|_m: &Message<String>| true),
        )
        .unwrap_err();
    assert!(err.to_string().contains("payload type"), "{err}");
}

#[test]
fn delayed_messages_arrive_in_due_order_and_shutdown_gives_up_the_rest() {
    let clock = ManualClock::shared();
    let bus = on_clock(&clock).dead_letters(10).build().unwrap();
    let rx = bus.receiver("later").unwrap();
    for (p, secs) in [(30, 30), (10, 10), (20, 20), (99, 99)] {
        let r = bus
            .publish_message(
                Message::builder(topic("later"), p)
                    .timestamp(clock.wall())
                    .delay(Duration::from_secs(secs)),
            )
            .unwrap();
        assert!(r.delayed && r.matched == 0);
    }
    assert!(rx.try_recv().is_err());
    let mut got = Vec::new();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(10));
        got.push(*rx.recv_timeout(LONG).unwrap().payload());
    }
    assert_eq!(got, [10, 20, 30]);
    let d = bus.stats().delayed;
    assert_eq!((d.scheduled, d.delivered, d.pending), (4, 3, 1));
    bus.shutdown(LONG).unwrap();
    let d = bus.stats().delayed;
    assert_eq!((d.delivered, d.given_up, d.pending), (3, 1, 0));
    let letters = bus.dead_letters().unwrap().all();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].reason,
            letters[0].subscription,
            *letters[0].message.payload()
        ),
        (DeadLetterReason::Shutdown, None, 99)
    );
}

#[test]
fn retries_waiting_at_shutdown_are_dead_lettered() {
    let clock = ManualClock::shared();
    let bus = on_clock(&clock).dead_letters(10).build().unwrap();
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("x").retry(retries(3, 1000)),
            |_m: &Message<u32>| Err::<(), _>("down"),
        )
        .unwrap();
    bus.publish("x", 1).unwrap();
    wait_until("the retry", || sub.stats().retrying == 1);
    let report = bus.shutdown(LONG).unwrap();
    assert!(!report.timed_out, "shutdown does not wait for the backoff");
    let s = sub.stats();
    assert_eq!(
        (s.dead_lettered.shutdown, s.settled(), s.delivered),
        (1, 1, 1)
    );
    let letter = &bus.dead_letters().unwrap().all()[0];
    assert_eq!(
        (letter.reason, letter.attempts),
        (DeadLetterReason::Shutdown, 1)
    );
    assert_eq!(letter.error.as_ref().unwrap().message, "down");
}

#[test]
fn dead_letters_are_bounded_queried_and_replayed() {
    let clock = ManualClock::shared();
    let stored = Arc::new(AtomicUsize::new(0));
    struct Count(Arc<AtomicUsize>);
    impl topicbus::DeadLetterSink<u32> for Count {
        fn store(&self, _l: &DeadLetter<u32>) -> Result<(), topicbus::BoxError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    let bus = on_clock(&clock)
        .dead_letters(5)
        .dead_letter_sink(Arc::new(Count(Arc::clone(&stored))))
        .build()
        .unwrap();
    let fixed = Arc::new(AtomicU32::new(u32::MAX));
    let fx = Arc::clone(&fixed);
    let a = bus
        .subscribe("a.*", move |m: &Message<u32>| {
            if *m.payload() >= fx.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(Permanent::new(format!("no {}", m.payload())))
            }
        })
        .unwrap();
    let b = bus
        .subscribe("b", |_m: &Message<u32>| -> Result<(), &str> {
            panic!("b breaks")
        })
        .unwrap();
    let t0 = clock.wall();
    let dlq = bus.dead_letters().unwrap();
    for i in 0..6 {
        let parent = Message::builder(topic("a.x"), 0).build();
        bus.publish_message(
            Message::builder(topic(if i % 2 == 0 { "a.x" } else { "a.y" }), i).caused_by(&parent),
        )
        .unwrap();
        // Letter i is given up at t0 + i s.
        wait_until("the letter", || dlq.stats().inserted == u64::from(i) + 1);
        clock.advance(Duration::from_secs(1));
    }
    bus.publish_confirmed("b", 100, LONG).unwrap();
    wait_until("the letters", || dlq.stats().inserted == 7);
    let st = dlq.stats();
    assert_eq!(
        (st.len, st.evicted, st.inserted),
        (5, 2, 7),
        "bounded, eviction counted"
    );
    assert_eq!(stored.load(Ordering::SeqCst), 7);
    let payloads = |q: &DeadLetterQuery| -> Vec<u32> {
        dlq.query(q).iter().map(|l| *l.message.payload()).collect()
    };
    assert_eq!(payloads(&DeadLetterQuery::new()), [2, 3, 4, 5, 100]);
    assert_eq!(
        payloads(&DeadLetterQuery::new().topic(Pattern::parse("a.y").unwrap())),
        [3, 5]
    );
    assert_eq!(
        payloads(&DeadLetterQuery::new().subscription(b.id())),
        [100]
    );
    assert_eq!(
        payloads(&DeadLetterQuery::new().error_kind(ErrorKind::Panic)),
        [100]
    );
    assert_eq!(
        payloads(
            &DeadLetterQuery::new()
                .since(t0 + Duration::from_secs(3))
                .until(t0 + Duration::from_secs(5))
        ),
        [3, 4]
    );
    assert_eq!(
        payloads(&DeadLetterQuery::new().subscription(a.id()).limit(2)),
        [2, 3]
    );

    // Replay one: same message (id, causation), handled now.
    fixed.store(0, Ordering::SeqCst);
    let first = dlq.query(&DeadLetterQuery::new())[0].clone();
    let receipt = dlq.replay(first.id).unwrap();
    assert_eq!((receipt.id, receipt.enqueued), (first.message.id(), 1));
    assert_eq!(dlq.replay(first.id), Err(ReplayError::NotFound(first.id)));
    // Replay a filter, then what is left of subscription a.
    let summary = dlq.replay_where(&DeadLetterQuery::new().topic(Pattern::parse("a.y").unwrap()));
    assert_eq!((summary.replayed, summary.failed.len()), (2, 0));
    // b is gone: its letter stays, and can be republished instead.
    b.unsubscribe();
    let summary = dlq.replay_all();
    assert_eq!(summary.replayed, 1);
    assert!(matches!(
        summary.failed[..],
        [(_, ReplayError::SubscriptionGone { .. })]
    ));
    assert_eq!(dlq.len(), 1);
    let last = dlq.all()[0].id;
    assert_eq!(
        dlq.republish(last).unwrap().matched,
        0,
        "nobody matches b now"
    );
    bus.shutdown(LONG).unwrap();
    let st = dlq.stats();
    assert_eq!((st.replayed, st.len), (5, 0));
    assert_eq!(
        st.inserted,
        st.len as u64 + st.evicted + st.replayed + st.removed
    );
    let s = a.stats();
    assert_eq!(s.handled, 4);
    assert_eq!(
        s.delivered,
        s.settled(),
        "replays are new deliveries, each settled"
    );
}

#[test]
fn hooks_see_the_lifecycle_and_their_panics_are_contained() {
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let (e1, e2, e3, e4) = (
        Arc::clone(&events),
        Arc::clone(&events),
        Arc::clone(&events),
        Arc::clone(&events),
    );
    let bus = Bus::<u32>::builder()
        .workers(1)
        .dead_letters(10)
        .on_publish(move |m, r| {
            e1.lock()
                .unwrap()
                .push(format!("publish {} {}", m.payload(), r.matched))
        })
        .on_deliver(move |m, _s| {
            e2.lock().unwrap().push(format!("deliver {}", m.payload()));
            if *m.payload() == 2 {
                panic!("a broken hook");
            }
        })
        .on_error(move |m, _s, f| {
            e3.lock()
                .unwrap()
                .push(format!("error {} {}", m.payload(), f))
        })
        .on_dead_letter(move |l| e4.lock().unwrap().push(format!("dead {:?}", l.reason)))
        .build()
        .unwrap();
    let sub = bus
        .subscribe("h", |m: &Message<u32>| {
            if *m.payload() == 1 {
                Err("one")
            } else {
                Ok(())
            }
        })
        .unwrap();
    bus.publish_confirmed("h", 1, LONG).unwrap();
    bus.publish_confirmed("h", 2, LONG).unwrap();
    // `on_publish` runs after routing, so a worker may deliver first: the
    // order holds per stage, not across the publisher and the worker.
    let mut got = events.lock().unwrap().clone();
    let worker_side: Vec<_> = got
        .iter()
        .filter(|e| !e.starts_with("publish"))
        .cloned()
        .collect();
    assert_eq!(
        worker_side,
        [
            "deliver 1",
            "error 1 transient: one",
            "dead RetriesExhausted",
            "deliver 2"
        ]
    );
    got.retain(|e| e.starts_with("publish"));
    assert_eq!(got, ["publish 1 1", "publish 2 1"]);
    assert_eq!(sub.stats().handled, 1, "the message went on past the hook");
    assert_eq!(bus.stats().hook_panics, 1);
}

#[test]
fn inline_and_pull_subscriptions_refuse_retries() {
    let bus = Bus::<u32>::builder().workers(1).build().unwrap();
    let err = bus
        .receiver_with(
            SubscribeOptions::new()
                .pattern("a")
                .retry(RetryPolicy::new(2)),
        )
        .unwrap_err();
    assert!(matches!(err, topicbus::SubscribeError::Options(_)));
    let err = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("a")
                .inline(true)
                .circuit_breaker(CircuitBreaker::new()),
            |_m: &Message<u32>| (),
        )
        .unwrap_err();
    assert!(matches!(err, topicbus::SubscribeError::Options(_)));
}

#[test]
fn a_manual_clock_reads_both_clocks_together() {
    let clock = ManualClock::new();
    let (n, w) = (clock.now(), clock.wall());
    clock.advance(Duration::from_secs(2));
    assert_eq!(clock.now() - n, Duration::from_secs(2));
    assert_eq!(
        clock.wall().duration_since(w).unwrap(),
        Duration::from_secs(2)
    );
}

#[test]
fn plain_publishes_are_stamped_by_the_bus_clock_with_fresh_ids() {
    let clock = ManualClock::shared();
    let bus = on_clock(&clock).build().unwrap();
    let rx = bus.receiver("a").unwrap();
    let first = bus.publish("a", 1).unwrap();
    clock.advance(Duration::from_secs(5));
    let second = bus.publish("a", 2).unwrap();
    let (m1, m2) = (rx.recv().unwrap(), rx.recv().unwrap());
    assert_eq!((m1.id(), m2.id()), (first.id, second.id));
    assert!(m1.id() < m2.id());
    assert_eq!(
        m2.timestamp().duration_since(m1.timestamp()).unwrap(),
        Duration::from_secs(5)
    );
    assert_eq!(m2.timestamp(), clock.wall());
    assert_eq!(
        (m1.attempt(), m1.expires_at(), m1.headers().len()),
        (1, None, 0)
    );

    // On the system clock the stamp is the time of publishing.
    let bus = Bus::<u32>::builder().workers(1).build().unwrap();
    let rx = bus.receiver("a").unwrap();
    let before = SystemTime::now();
    bus.publish("a", 3).unwrap();
    let after = SystemTime::now();
    let m = rx.recv().unwrap();
    assert!(before <= m.timestamp() && m.timestamp() <= after);
}
