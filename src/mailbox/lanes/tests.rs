use super::*;
use std::sync::Arc;

fn lanes(cap: usize) -> Lanes<u32> {
    Lanes::new(NonZeroUsize::new(cap).unwrap())
}

fn drain(l: &Lanes<u32>) -> Vec<u32> {
    std::iter::from_fn(|| l.pop()).collect()
}

const REJECT: OverflowPolicy = OverflowPolicy::Reject;

#[test]
fn higher_lanes_first_fifo_within_a_lane() {
    let l = lanes(8);
    for (p, v) in [
        (Priority::Low, 1),
        (Priority::Normal, 2),
        (Priority::High, 3),
        (Priority::Low, 4),
        (Priority::High, 5),
    ] {
        assert_eq!(l.push(p, v, REJECT), Push::Enqueued);
    }
    assert_eq!(l.depths(), [2, 1, 2]);
    assert_eq!(drain(&l), [3, 5, 2, 1, 4]);
    assert!(l.is_empty());
}

#[test]
fn the_guard_serves_both_lower_lanes_under_sustained_high_traffic() {
    let l = lanes(1024);
    for v in 0..500 {
        assert_eq!(l.push(Priority::High, v, REJECT), Push::Enqueued);
    }
    for v in 0..3 {
        assert_eq!(l.push(Priority::Normal, 1000 + v, REJECT), Push::Enqueued);
        assert_eq!(l.push(Priority::Low, 2000 + v, REJECT), Push::Enqueued);
    }
    let order = drain(&l);
    let first_normal = order.iter().position(|v| (1000..2000).contains(v)).unwrap();
    let first_low = order.iter().position(|v| *v >= 2000).unwrap();
    assert!(
        first_normal <= STARVATION_LIMIT as usize,
        "normal waited {first_normal}"
    );
    assert!(
        first_low <= 2 * (STARVATION_LIMIT as usize + 1),
        "low waited {first_low}"
    );
    // All six lower messages come out long before the 500 high ones finish.
    let last_lower = order.iter().rposition(|v| *v >= 1000).unwrap();
    assert!(
        last_lower < 6 * (STARVATION_LIMIT as usize + 1),
        "{last_lower}"
    );
    assert_eq!(order.len(), 506);
}

#[test]
fn without_competition_no_guard_reordering() {
    let l = lanes(64);
    for v in 0..40 {
        assert_eq!(l.push(Priority::High, v, REJECT), Push::Enqueued);
    }
    assert_eq!(drain(&l), (0..40).collect::<Vec<_>>());
}

#[test]
fn every_overflow_policy() {
    let full = || {
        let l = lanes(2);
        for v in [1, 2] {
            assert_eq!(l.push(Priority::Normal, v, REJECT), Push::Enqueued);
        }
        l
    };
    let l = full();
    assert_eq!(
        l.push(Priority::Normal, 3, OverflowPolicy::DropNewest),
        Push::DroppedNewest(3)
    );
    assert_eq!(drain(&l), [1, 2]);

    let l = full();
    assert_eq!(
        l.push(Priority::Normal, 3, OverflowPolicy::DropOldest),
        Push::EvictedOldest(1)
    );
    assert_eq!(drain(&l), [2, 3]);

    let l = full();
    assert_eq!(l.push(Priority::Normal, 3, REJECT), Push::Rejected(3));
    assert_eq!(drain(&l), [1, 2]);

    // Lanes are bounded separately: another lane still has room.
    let l = full();
    assert_eq!(l.push(Priority::High, 3, REJECT), Push::Enqueued);

    let l = full();
    let timeout = Duration::from_millis(20);
    let started = Instant::now();
    assert_eq!(
        l.push(Priority::Normal, 3, OverflowPolicy::Block { timeout }),
        Push::TimedOut(3)
    );
    assert!(started.elapsed() >= timeout);
    assert_eq!(drain(&l), [1, 2]);
}

#[test]
fn a_blocked_publisher_proceeds_when_a_slot_frees() {
    let l = Arc::new(lanes(1));
    assert_eq!(l.push(Priority::Normal, 1, REJECT), Push::Enqueued);
    let publisher = {
        let l = l.clone();
        std::thread::spawn(move || {
            let policy = OverflowPolicy::Block {
                timeout: Duration::from_secs(60),
            };
            l.push(Priority::Normal, 2, policy)
        })
    };
    // Wait (with a generous bound) until the publisher is registered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while l.waiters.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "publisher never blocked");
        std::thread::yield_now();
    }
    assert_eq!(l.pop(), Some(1));
    assert_eq!(publisher.join().unwrap(), Push::Enqueued);
    assert_eq!(drain(&l), [2]);
    assert_eq!(l.waiters.load(Ordering::SeqCst), 0);
}

/// Conservation under concurrency: every message published is popped or
/// handed back in a `Push` variant, exactly once.
#[test]
fn every_message_is_accounted_for_under_contention() {
    const PUBLISHERS: u32 = 4;
    const EACH: u32 = 5_000;
    let l = Arc::new(lanes(16));
    let policies = [
        OverflowPolicy::DropNewest,
        OverflowPolicy::DropOldest,
        OverflowPolicy::Reject,
        OverflowPolicy::Block {
            timeout: Duration::from_millis(1),
        },
    ];
    let done = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (l, done) = (l.clone(), done.clone());
            std::thread::spawn(move || {
                let mut returned = Vec::new();
                for i in 0..EACH {
                    let v = p * EACH + i;
                    let prio = Priority::ALL[(v % 3) as usize];
                    match l.push(prio, v, policies[(v % 4) as usize]) {
                        Push::Enqueued => {}
                        Push::EvictedOldest(x)
                        | Push::DroppedNewest(x)
                        | Push::Rejected(x)
                        | Push::TimedOut(x) => returned.push(x),
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
                returned
            })
        })
        .collect();
    let mut seen = Vec::new();
    while done.load(Ordering::SeqCst) < PUBLISHERS as usize || !l.is_empty() {
        match l.pop() {
            Some(v) => seen.push(v),
            None => std::thread::yield_now(),
        }
    }
    for p in publishers {
        seen.extend(p.join().unwrap());
    }
    seen.sort_unstable();
    let want: Vec<u32> = (0..PUBLISHERS * EACH).collect();
    assert_eq!(seen.len(), want.len(), "lost or duplicated messages");
    assert_eq!(seen, want);
}
