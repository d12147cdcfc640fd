//! `Bus::metrics`: latency histograms against a known distribution on a
//! manual clock, exact sampling, worker states.

use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{wait_until, Gate, LONG};
use topicbus::{Bus, ManualClock, Message, SubscribeOptions};

/// At least `want`, to the histograms' 3 significant digits.
fn at_least(got: Duration, want: Duration) -> bool {
    got.as_nanos() as f64 >= want.as_nanos() as f64 * 0.999
}

/// Within `rel` of `want` (and a nanosecond).
fn within(got: Duration, want: Duration, rel: f64) -> bool {
    let (g, w) = (got.as_nanos() as f64, want.as_nanos() as f64);
    (g - w).abs() <= w * rel + 1.0
}

/// Within the histograms' 3 significant digits (0.1 %).
fn close(got: Duration, want: Duration) -> bool {
    within(got, want, 0.001)
}

/// A one-worker bus on a manual clock that samples every run.
fn manual_bus() -> (Arc<ManualClock>, Bus<u64>) {
    let clock = ManualClock::shared();
    let bus = Bus::<u64>::builder()
        .workers(1)
        .clock(clock.clone())
        .latency_sampling(1)
        .build()
        .unwrap();
    (clock, bus)
}

#[test]
fn handler_delays_of_a_known_distribution_come_out_with_the_right_percentiles() {
    let (clock, bus) = manual_bus();
    // Each handler run takes `payload` milliseconds of the manual clock.
    let c = Arc::clone(&clock);
    let sub = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("work")
                .capacity(1_000)
                .paused(true),
            move |m: &Message<u64>| c.advance(Duration::from_millis(*m.payload())),
        )
        .unwrap();
    // 1..=1000 ms (7,919 is prime to 1,000), published in a scrambled order
    // while paused; then ten
    // seconds pass before the first run.
    for i in 0..1_000u64 {
        bus.publish("work", 1 + (i * 7_919) % 1_000).unwrap();
    }
    clock.advance(Duration::from_secs(10));
    sub.resume();
    wait_until("every run", || bus.stats().total.handled == 1_000);
    let m = bus.metrics();

    assert_eq!(m.sampling, 1);
    assert_eq!(m.handler.count(), 1_000);
    let ms = Duration::from_millis;
    for (q, got, want) in [
        (0.5, m.handler.p50(), ms(500)),
        (0.95, m.handler.p95(), ms(950)),
        (0.99, m.handler.p99(), ms(990)),
        (0.999, m.handler.p999(), ms(999)),
        (1.0, m.handler.max(), ms(1_000)),
        (0.0, m.handler.min(), ms(1)),
    ] {
        assert!(close(got, want), "q{q}: {got:?}, want {want:?}");
    }
    assert!(close(m.handler.mean(), Duration::from_micros(500_500)));
    assert_eq!(m.handler.count_at_most(ms(100)), 100);
    // Runs are in publish order: message k waits the ten seconds plus the
    // runs before it; the last one waits for all but itself.
    let delays: Vec<u64> = (0..1_000u64).map(|i| 1 + (i * 7_919) % 1_000).collect();
    let all: u64 = delays.iter().sum();
    assert!(at_least(m.queue_wait.min(), Duration::from_secs(10)));
    assert!(close(
        m.queue_wait.max(),
        Duration::from_secs(10) + ms(all - delays[999])
    ));
    assert!(at_least(
        m.end_to_end.min(),
        Duration::from_secs(10) + ms(1)
    ));
    assert!(close(
        m.end_to_end.max(),
        Duration::from_secs(10) + ms((1..=1_000).sum::<u64>())
    ));
}

#[test]
fn subscriptions_that_ask_keep_their_own_latency_histograms() {
    let (clock, bus) = manual_bus();
    // Runs of `fast` take `payload` ms of the manual clock, runs of `slow`
    // ten times that; `plain` takes none and keeps no histograms of its own.
    let watched = |scale: u64| {
        let c = Arc::clone(&clock);
        bus.subscribe_with(
            SubscribeOptions::new()
                .pattern("work")
                .capacity(1_000)
                .paused(true)
                .latency(true),
            move |m: &Message<u64>| c.advance(Duration::from_millis(*m.payload() * scale)),
        )
        .unwrap()
    };
    let (fast, slow) = (watched(1), watched(10));
    let plain = bus.subscribe("work", |_m: &Message<u64>| ()).unwrap();
    let pulled = bus
        .receiver_with(SubscribeOptions::new().pattern("work").latency(true))
        .unwrap();
    for i in 0..100u64 {
        bus.publish("work", 1 + (i * 37) % 100).unwrap();
    }
    fast.resume();
    slow.resume();
    wait_until("every run", || bus.stats().total.handled == 300);
    let m = bus.metrics();

    assert_eq!(m.handler.count(), 300);
    let ids: Vec<_> = m.subscriptions.iter().map(|s| s.id).collect();
    assert_eq!(ids, [fast.id(), slow.id()], "{ids:?}");
    let ms = Duration::from_millis;
    for (own, scale) in m.subscriptions.iter().zip([1u64, 10]) {
        assert_eq!(own.handler.count(), 100);
        assert_eq!(own.queue_wait.count(), 100);
        assert_eq!(own.end_to_end.count(), 100);
        for (q, got, want) in [
            (0.5, own.handler.p50(), ms(50 * scale)),
            (0.99, own.handler.p99(), ms(99 * scale)),
            (1.0, own.handler.max(), ms(100 * scale)),
            (0.0, own.handler.min(), ms(scale)),
        ] {
            // A subscription's own histograms: 2 significant digits (1 %).
            assert!(
                within(got, want, 0.01),
                "x{scale} q{q}: {got:?}, want {want:?}"
            );
        }
    }
    // The bus-wide distribution holds all three: plain's 100 zero-length
    // runs, fast's and slow's.
    assert_eq!(m.handler.count_at_most(Duration::from_micros(1)), 100);
    assert!(close(m.handler.max(), ms(1_000)));

    // Gone with the subscription.
    drop(fast);
    let left: Vec<_> = bus.metrics().subscriptions.iter().map(|s| s.id).collect();
    assert_eq!(left, [slow.id()]);
    drop((plain, pulled));
}

#[test]
fn with_sampling_off_no_subscription_keeps_histograms() {
    let bus = Bus::<u32>::builder()
        .workers(1)
        .latency_sampling(0)
        .build()
        .unwrap();
    let _s = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("t").latency(true),
            |_m: &Message<u32>| (),
        )
        .unwrap();
    bus.publish("t", 1).unwrap();
    bus.shutdown(LONG).unwrap();
    assert!(bus.metrics().subscriptions.is_empty());
}

#[test]
fn one_run_in_n_is_sampled_and_zero_turns_it_off() {
    for (every, want) in [(4u32, 250u64), (1, 1_000), (0, 0)] {
        let bus = Bus::<u32>::builder()
            .workers(1)
            .latency_sampling(every)
            .build()
            .unwrap();
        let _s = bus
            .subscribe_with(
                SubscribeOptions::new().pattern("t").capacity(1_000),
                |_m: &Message<u32>| (),
            )
            .unwrap();
        for i in 0..1_000 {
            bus.publish("t", i).unwrap();
        }
        bus.shutdown(LONG).unwrap();
        let m = bus.metrics();
        assert_eq!(m.stats.total.handled, 1_000);
        assert_eq!(
            (m.sampling, m.handler.count()),
            (every, want),
            "every {every}"
        );
        assert_eq!(m.queue_wait.count(), want);
        assert_eq!(m.end_to_end.count(), want);
        if want == 0 {
            // Empty distributions read as zero, not as garbage.
            let l = &m.handler;
            assert_eq!(
                (l.p50(), l.max(), l.min(), l.mean()),
                (
                    Duration::ZERO,
                    Duration::ZERO,
                    Duration::ZERO,
                    Duration::ZERO
                )
            );
        }
    }
}

#[test]
fn inline_handlers_are_sampled_too() {
    let bus = Bus::<u32>::builder()
        .workers(1)
        .latency_sampling(1)
        .build()
        .unwrap();
    let _s = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("t").inline(true),
            |_m: &Message<u32>| (),
        )
        .unwrap();
    for i in 0..10 {
        bus.publish("t", i).unwrap();
    }
    assert_eq!(bus.metrics().handler.count(), 10);
}

#[test]
fn worker_states_show_running_parked_and_exited_workers() {
    let bus = Bus::<u32>::builder().workers(2).build().unwrap();
    let (gate, handler) = Gate::new();
    let _s = bus.subscribe("block", handler).unwrap();
    bus.publish("block", 1).unwrap();
    gate.entered();
    // One worker is in the handler; the other runs out of work and parks.
    wait_until("one running, one parked", || {
        let w = bus.metrics().workers;
        (w.running, w.parked) == (1, 1)
    });
    gate.release(1);
    bus.shutdown(LONG).unwrap();
    let w = bus.metrics().workers;
    assert_eq!((w.running, w.idle, w.parked, w.exited), (0, 0, 0, 2));
}

#[test]
fn the_snapshot_carries_the_same_counters_as_stats() {
    let bus = Bus::<u32>::builder().workers(2).build().unwrap();
    let _s = bus
        .subscribe("a.#", |m: &Message<u32>| {
            if m.payload().is_multiple_of(3) {
                Err("every third fails")
            } else {
                Ok(())
            }
        })
        .unwrap();
    for i in 0..300 {
        bus.publish("a.b", i).unwrap();
    }
    bus.shutdown(LONG).unwrap();
    let m = bus.metrics();
    assert_eq!(m.stats, bus.stats());
    assert_eq!((m.stats.total.handled, m.stats.total.failed), (200, 100));
}
