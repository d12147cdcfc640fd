//! `Bus::health`: each check reaches its verdict, and the overall status is
//! the worst issue's.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{on_clock, wait_until, Gate, LONG};
use topicbus::{
    BreakerWindow, Bus, CircuitBreaker, HealthCheck, HealthIssue, HealthStatus, HealthThresholds,
    ManualClock, Message, SubscribeOptions, WhenOpen,
};

#[test]
fn a_fresh_bus_is_healthy_and_a_shut_down_one_unhealthy() {
    let bus = Bus::<u32>::builder().workers(2).build().unwrap();
    let _s = bus.subscribe("a", |_m: &Message<u32>| ()).unwrap();
    let h = bus.health();
    assert_eq!(
        (h.status, h.issues.len()),
        (HealthStatus::Healthy, 0),
        "{h:?}"
    );
    bus.shutdown(LONG).unwrap();
    let h = bus.health();
    assert_eq!(h.status, HealthStatus::Unhealthy);
    assert_eq!(h.issues[0].component, "bus");
}

#[test]
fn a_lane_past_the_threshold_degrades_its_subscription_only() {
    let bus = Bus::<u32>::builder().workers(1).build().unwrap();
    let full = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("jobs")
                .capacity(10)
                .paused(true),
            |_m: &Message<u32>| (),
        )
        .unwrap();
    let _fine = bus.subscribe("other", |_m: &Message<u32>| ()).unwrap();
    for i in 0..7 {
        bus.publish("jobs", i).unwrap();
    }
    let t = HealthThresholds::default().mailbox_fill(0.8);
    assert_eq!(bus.health_with(&t).status, HealthStatus::Healthy, "7 of 10");
    bus.publish("jobs", 7).unwrap();
    let h = bus.health_with(&t);
    assert_eq!(h.status, HealthStatus::Degraded, "8 of 10: {h:?}");
    assert_eq!(h.issues.len(), 1);
    assert_eq!(h.issues[0].component, full.id().to_string());
    assert!(h.issues[0].reason.contains("normal lane 8 of 10"), "{h:?}");
    full.resume();
    wait_until("drained", || {
        bus.health_with(&t).status == HealthStatus::Healthy
    });
}

#[test]
fn an_open_breaker_degrades_and_a_closed_one_does_not() {
    let clock = ManualClock::shared();
    let bus = on_clock(&clock).build().unwrap();
    let s = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("flaky").circuit_breaker(
                CircuitBreaker::new()
                    .window(BreakerWindow::Calls(4))
                    .min_calls(4)
                    .failure_rate(0.5)
                    .open_for(Duration::from_secs(60), 0.0)
                    .when_open(WhenOpen::Drop),
            ),
            |_m: &Message<u32>| Err::<(), _>("down"),
        )
        .unwrap();
    assert_eq!(bus.health().status, HealthStatus::Healthy);
    for i in 0..4 {
        bus.publish("flaky", i).unwrap();
    }
    wait_until("the breaker opens", || {
        s.stats().circuit == Some(topicbus::CircuitState::Open)
    });
    let h = bus.health();
    assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
    assert_eq!(h.issues[0].component, s.id().to_string());
    assert!(h.issues[0].reason.contains("Open"), "{h:?}");
}

#[test]
fn a_timer_behind_its_jobs_degrades() {
    // The timer routes delayed messages on its own thread; an inline
    // handler that blocks there holds the timer up while the clock moves.
    let clock = ManualClock::shared();
    let bus = on_clock(&clock).build().unwrap();
    let (gate, handler) = Gate::new();
    let _blocker = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("block").inline(true),
            handler,
        )
        .unwrap();
    let rx = bus.receiver("later").unwrap();
    let delayed = |topic: &str, secs| {
        bus.publish_message(
            Message::builder(topic.parse().unwrap(), 1)
                .timestamp(topicbus::Clock::wall(&*clock))
                .delay(Duration::from_secs(secs)),
        )
        .unwrap();
    };
    delayed("block", 1);
    delayed("later", 2);
    assert_eq!(bus.health().status, HealthStatus::Healthy, "nothing due");
    clock.advance(Duration::from_secs(1));
    gate.entered();
    // The timer is stuck in the handler; "later" falls due and waits.
    clock.advance(Duration::from_secs(10));
    let h = bus.health();
    assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
    assert_eq!(h.issues[0].component, "timer");
    assert!(h.issues[0].reason.contains("9s"), "{h:?}");
    gate.release(1);
    rx.recv_timeout(LONG).unwrap();
    wait_until("the timer caught up", || {
        bus.health().status == HealthStatus::Healthy
    });
}

/// A check whose verdict the test sets.
struct Switch(AtomicU8);

impl HealthCheck for Switch {
    fn check(&self) -> Option<HealthIssue> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            1 => Some(HealthIssue::new(
                HealthStatus::Degraded,
                "redis",
                "reconnecting",
            )),
            _ => Some(HealthIssue::new(HealthStatus::Unhealthy, "redis", "down")),
        }
    }
}

#[test]
fn registered_checks_count_and_the_worst_issue_wins() {
    let bus = Bus::<u32>::builder().workers(1).build().unwrap();
    let switch = Arc::new(Switch(AtomicU8::new(0)));
    bus.add_health_check(switch.clone());
    assert_eq!(bus.health().status, HealthStatus::Healthy);
    switch.0.store(1, Ordering::SeqCst);
    assert_eq!(bus.health().status, HealthStatus::Degraded);
    switch.0.store(2, Ordering::SeqCst);
    // With a degraded mailbox as well, the adapter's unhealthy comes first.
    let _s = bus
        .subscribe_with(
            SubscribeOptions::new()
                .pattern("jobs")
                .capacity(1)
                .paused(true),
            |_m: &Message<u32>| (),
        )
        .unwrap();
    bus.publish("jobs", 1).unwrap();
    let h = bus.health();
    assert_eq!(h.status, HealthStatus::Unhealthy);
    assert_eq!(h.issues.len(), 2, "{h:?}");
    assert_eq!(h.issues[0].to_string(), "unhealthy: redis: down");
    assert_eq!(h.issues[1].status, HealthStatus::Degraded);
}
