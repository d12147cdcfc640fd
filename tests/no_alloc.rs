//! Proves that matching allocates nothing, with a counting global allocator.
//!
//! The counter is per thread, so the test harness's own threads cannot add
//! noise and a missed allocation cannot hide behind another thread's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use topicbus::matcher::Matcher;
use topicbus::registry::Registry;
use topicbus::{Pattern, Topic};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` unchanged; the counter is a
// const-initialised thread-local `Cell`, which never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

fn table() -> (Matcher<u32>, Vec<Topic>) {
    let mut m = Matcher::new();
    let mut v = 0;
    let mut add = |m: &mut Matcher<u32>, s: &str| {
        m.insert(&Pattern::parse(s).unwrap(), v);
        v += 1;
    };
    for region in ["eu", "us", "ap"] {
        for event in ["created", "updated", "shipped", "cancelled"] {
            add(&mut m, &format!("orders.{region}.{event}"));
        }
        add(&mut m, &format!("orders.{region}.#"));
    }
    for i in 0..64 {
        add(&mut m, &format!("sensor.site{i}.*.temp"));
    }
    for s in [
        "orders.*.created",
        "#.cancelled",
        "#",
        "*.*.*",
        "orders.#.shipped",
    ] {
        add(&mut m, s);
    }
    // One value under several patterns exercises the dedup path.
    for s in ["orders.eu.created", "orders.*.*", "#.created"] {
        m.insert(&Pattern::parse(s).unwrap(), 9999);
    }
    let topics = [
        "orders.eu.created",
        "orders.us.cancelled",
        "sensor.site7.r3.temp",
        "unknown.topic",
        "a.b.c.d.e.f.g.h",
    ]
    .iter()
    .map(|s| Topic::parse(s).unwrap())
    .collect();
    (m, topics)
}

#[test]
fn matching_allocates_nothing() {
    let (m, topics) = table();
    for topic in &topics {
        let mut count = 0usize;
        let allocs = allocations_during(|| {
            m.for_each_match(topic, |_| count += 1);
        });
        assert!(count > 0, "{topic} should match something");
        assert_eq!(allocs, 0, "for_each_match allocated for {topic}");

        let allocs = allocations_during(|| {
            let set = m.matches(topic);
            assert!(set.len() <= 8, "stays inline");
            std::hint::black_box(set);
        });
        assert_eq!(allocs, 0, "matches allocated for {topic}");
    }
}

#[test]
fn many_states_over_many_levels_allocate_nothing() {
    // Twelve patterns `a.a.….*.….a`, one `*` each: after level d of the
    // topic `a` × 12, d + 1 literal states are live. 78 states over the walk
    // in all, never more than 12 at once: the walk must reuse its inline
    // buffer rather than grow it.
    const DEPTH: usize = 12;
    let mut m = Matcher::new();
    for star in 0..DEPTH {
        let levels: Vec<&str> = (0..DEPTH)
            .map(|i| if i == star { "*" } else { "a" })
            .collect();
        m.insert(&Pattern::parse(&levels.join(".")).unwrap(), star);
    }
    let topic = Topic::parse(&["a"; DEPTH].join(".")).unwrap();
    let mut hits = Vec::with_capacity(DEPTH);
    let allocs = allocations_during(|| m.for_each_match(&topic, |v| hits.push(*v)));
    hits.sort_unstable();
    assert_eq!(hits, (0..DEPTH).collect::<Vec<_>>());
    assert_eq!(allocs, 0);
}

#[test]
fn registry_load_and_match_allocate_nothing() {
    let reg = Registry::new();
    let patterns = [
        "orders.#",
        "orders.*.created",
        "#.created",
        "orders.eu.created",
    ];
    for s in patterns {
        reg.subscribe([Pattern::parse(s).unwrap()], s.len());
    }
    let topic = Topic::parse("orders.eu.created").unwrap();
    let mut sum = 0;
    let allocs = allocations_during(|| {
        let snap = reg.load();
        snap.for_each_match(&topic, |e| sum += *e.value());
    });
    assert_eq!(sum, patterns.iter().map(|s| s.len()).sum::<usize>());
    assert_eq!(allocs, 0);
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test itself: a counter that never counts proves nothing.
    let allocs = allocations_during(|| {
        std::hint::black_box(Box::new(1u64));
    });
    assert_eq!(allocs, 1);
}

/// Publishing with a parsed topic allocates exactly the one shared
/// `Arc<Message<T>>`, however many subscriptions it fans out to (DESIGN
/// invariant 1): the mailboxes hold clones of the `Arc`, and scheduling a
/// mailbox reuses its runner. Pull receivers and inline handlers keep every
/// allocation on this thread.
#[test]
fn publish_allocates_one_arc_message() {
    use topicbus::{Bus, Message, SubscribeOptions};

    let bus = Bus::<u64>::builder().workers(1).build().unwrap();
    let receivers: Vec<_> = ["orders.#", "orders.*.created", "orders.eu.created", "#"]
        .into_iter()
        .map(|p| bus.receiver(p).unwrap())
        .collect();
    let _inline = bus
        .subscribe_with(
            SubscribeOptions::new().pattern("orders.eu.*").inline(true),
            |m: &Message<u64>| {
                std::hint::black_box(m.payload());
            },
        )
        .unwrap();
    let topic = Topic::parse("orders.eu.created").unwrap();
    // Warm up: thread-locals, the snapshot guard's debt slot.
    for i in 0..4 {
        bus.publish(&topic, i).unwrap();
    }
    for r in &receivers {
        while r.try_recv().is_ok() {}
    }
    for i in 0..64 {
        let mut receipt = None;
        let n = allocations_during(|| receipt = Some(bus.publish(&topic, i).unwrap()));
        assert_eq!(receipt.map(|r| r.matched), Some(5));
        assert_eq!(n, 1, "publish #{i} allocated {n} times");
    }
    for r in &receivers {
        assert_eq!(r.try_iter().count(), 64);
    }
}
