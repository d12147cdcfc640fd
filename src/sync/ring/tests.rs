use super::*;
use std::collections::VecDeque;
use std::sync::{Arc, Barrier};

use proptest::prelude::*;

#[test]
fn holds_exactly_its_capacity_in_fifo_order() {
    for cap in [1, 2, 3, 7, 8, 9, 1000] {
        let r = Ring::new(cap);
        assert_eq!(r.capacity(), cap);
        for v in 0..cap {
            assert_eq!(r.push(v), Ok(()), "cap {cap}");
            assert_eq!(r.len(), v + 1);
        }
        assert_eq!(r.push(usize::MAX), Err(usize::MAX), "cap {cap}: full");
        assert_eq!(r.len(), cap);
        for v in 0..cap {
            assert!(r.ready());
            assert_eq!(r.pop(), Some(v), "cap {cap}");
        }
        assert_eq!(r.pop(), None);
        assert!(r.is_empty() && !r.ready());
    }
}

#[test]
fn force_push_evicts_the_oldest_only_when_full() {
    let r = Ring::new(3);
    assert_eq!(r.force_push(1), None);
    assert_eq!(r.force_push(2), None);
    assert_eq!(r.force_push(3), None);
    assert_eq!(r.force_push(4), Some(1));
    assert_eq!(r.force_push(5), Some(2));
    assert_eq!(r.len(), 3);
    assert_eq!(
        std::iter::from_fn(|| r.pop()).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    let one = Ring::new(1);
    assert_eq!(one.force_push('a'), None);
    assert_eq!(one.force_push('b'), Some('a'));
    assert_eq!(one.pop(), Some('b'));
    assert_eq!(one.pop(), None);
}

#[test]
fn values_are_dropped_exactly_once() {
    let token = Arc::new(());
    {
        let r = Ring::new(4);
        for _ in 0..4 {
            r.push(Arc::clone(&token)).expect("room");
        }
        // Evicted and popped values come back to us; the rest stay queued.
        drop(r.force_push(Arc::clone(&token)));
        drop(r.pop());
        assert_eq!(Arc::strong_count(&token), 1 + 3);
        let back = r.push(Arc::clone(&token));
        assert!(back.is_ok());
        assert!(r.push(Arc::clone(&token)).is_err(), "full: handed back");
        assert_eq!(Arc::strong_count(&token), 1 + 4);
    }
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "drop released what was queued"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Push(u16),
    ForcePush(u16),
    Pop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u16>().prop_map(Op::Push),
        1 => any::<u16>().prop_map(Op::ForcePush),
        3 => Just(Op::Pop),
    ]
}

proptest! {
    /// Any sequence of operations, over many laps, behaves like a bounded
    /// `VecDeque`; `ready` is exact when nothing runs concurrently.
    #[test]
    fn behaves_like_a_bounded_deque(cap in 1usize..9, ops in prop::collection::vec(op(), 0..400)) {
        let r = Ring::new(cap);
        let mut model = VecDeque::new();
        for op in ops {
            match op {
                Op::Push(v) => {
                    let want = if model.len() < cap { model.push_back(v); Ok(()) } else { Err(v) };
                    prop_assert_eq!(r.push(v), want);
                }
                Op::ForcePush(v) => {
                    let evicted = if model.len() == cap { model.pop_front() } else { None };
                    model.push_back(v);
                    prop_assert_eq!(r.force_push(v), evicted);
                }
                Op::Pop => prop_assert_eq!(r.pop(), model.pop_front()),
            }
            prop_assert_eq!(r.len(), model.len());
            prop_assert_eq!(r.is_empty(), model.is_empty());
            prop_assert_eq!(r.ready(), !model.is_empty());
        }
    }
}

/// Producers push tagged sequences while consumers pop (some through
/// `ready` first, as the worker does): every value comes out exactly once,
/// and each consumer sees each producer's values in order.
#[test]
fn threads_get_every_value_once_in_producer_order() {
    const PRODUCERS: usize = 3;
    const CONSUMERS: usize = 2;
    const EACH: usize = 20_000;
    let ring = Arc::new(Ring::new(7));
    let start = Arc::new(Barrier::new(PRODUCERS + CONSUMERS));
    let taken = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (ring, start) = (Arc::clone(&ring), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for i in 0..EACH {
                    let mut v = (p, i);
                    while let Err(back) = ring.push(v) {
                        v = back;
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let (ring, start, taken) = (Arc::clone(&ring), Arc::clone(&start), Arc::clone(&taken));
            std::thread::spawn(move || {
                start.wait();
                let mut got = Vec::new();
                while taken.load(Ordering::SeqCst) < PRODUCERS * EACH {
                    if c == 0 && !ring.ready() {
                        std::thread::yield_now();
                        continue;
                    }
                    match ring.pop() {
                        Some(v) => {
                            taken.fetch_add(1, Ordering::SeqCst);
                            got.push(v);
                        }
                        None => std::thread::yield_now(),
                    }
                }
                got
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer");
    }
    let mut seen = vec![vec![false; EACH]; PRODUCERS];
    for c in consumers {
        let got = c.join().expect("consumer");
        let mut last = [None; PRODUCERS];
        for (p, i) in got {
            assert!(last[p] < Some(i), "producer {p}'s values out of order");
            last[p] = Some(i);
            assert!(!seen[p][i], "({p}, {i}) popped twice");
            seen[p][i] = true;
        }
    }
    assert!(seen.iter().flatten().all(|&s| s), "a value was lost");
    assert!(ring.is_empty());
}

/// Forced pushes racing with plain pushes and pops: every value is either
/// popped or evicted, exactly once.
#[test]
fn forced_pushes_under_contention_lose_and_duplicate_nothing() {
    const EACH: usize = 20_000;
    let ring = Arc::new(Ring::new(3));
    let start = Arc::new(Barrier::new(3));
    let done = Arc::new(AtomicUsize::new(0));
    let spawn = |base: usize, force: bool| {
        let (ring, start, done) = (Arc::clone(&ring), Arc::clone(&start), Arc::clone(&done));
        std::thread::spawn(move || {
            start.wait();
            let mut evicted = Vec::new();
            for i in base..base + EACH {
                if force {
                    evicted.extend(ring.force_push(i));
                } else {
                    let mut v = i;
                    while let Err(back) = ring.push(v) {
                        v = back;
                        std::thread::yield_now();
                    }
                }
            }
            done.fetch_add(1, Ordering::SeqCst);
            evicted
        })
    };
    let forcing = spawn(0, true);
    let plain = spawn(EACH, false);
    let consumer = {
        let (ring, start, done) = (Arc::clone(&ring), Arc::clone(&start), Arc::clone(&done));
        std::thread::spawn(move || {
            start.wait();
            let mut got = Vec::new();
            // Until both producers finished and the ring is drained.
            loop {
                let finished = done.load(Ordering::SeqCst) == 2;
                match ring.pop() {
                    Some(v) => got.push(v),
                    None if finished => return got,
                    None => std::thread::yield_now(),
                }
            }
        })
    };
    let mut all = forcing.join().expect("forcing");
    all.extend(plain.join().expect("plain"));
    all.extend(consumer.join().expect("consumer"));
    all.sort_unstable();
    assert_eq!(all.len(), 2 * EACH, "a value was lost or duplicated");
    assert!(all.iter().enumerate().all(|(i, &v)| i == v));
    assert!(ring.is_empty());
}
