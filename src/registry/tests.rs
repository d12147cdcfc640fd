use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Barrier;
use std::time::Duration;

fn p(s: &str) -> Pattern {
    Pattern::parse(s).unwrap()
}

fn t(s: &str) -> Topic {
    Topic::parse(s).unwrap()
}

#[test]
fn subscribe_and_unsubscribe_change_what_matches() {
    let reg = Registry::new();
    let a = reg.subscribe([p("orders.*"), p("orders.#"), p("orders.*")], 'a');
    let b = reg.subscribe([p("#.created")], 'b');
    let snap = reg.load();
    assert_eq!(
        snap.get(a).unwrap().patterns().len(),
        2,
        "duplicate pattern dropped"
    );
    let mut hits = snap.matches(&t("orders.created"));
    hits.sort();
    assert_eq!(hits, [a, b]);

    let removed = reg.unsubscribe(a).unwrap();
    assert_eq!((removed.id(), *removed.value()), (a, 'a'));
    assert!(
        reg.unsubscribe(a).is_none(),
        "second unsubscribe is a no-op"
    );
    assert_eq!(reg.load().matches(&t("orders.created")), [b]);
    // The old snapshot is untouched.
    assert_eq!(snap.len(), 2);
}

#[test]
fn no_pattern_registration_matches_nothing() {
    let reg = Registry::new();
    let id = reg.subscribe(std::iter::empty(), ());
    assert_eq!(reg.load().len(), 1);
    assert!(reg.load().matches(&t("a")).is_empty());
    assert!(reg.unsubscribe(id).is_some());
}

#[test]
fn a_batch_is_one_swap_and_a_no_op_is_none() {
    let reg = Registry::new();
    let v0 = reg.load().version();
    let ids = reg.update(|b| {
        let x = b.subscribe([p("a")], 1);
        let y = b.subscribe([p("a")], 2);
        assert_eq!(b.snapshot().len(), 2);
        b.unsubscribe(x);
        vec![x, y]
    });
    assert_eq!(reg.load().version(), v0 + 1);
    assert_eq!(reg.load().matches(&t("a")), [ids[1]]);
    reg.update(|b| assert!(b.unsubscribe(ids[0]).is_none()));
    assert_eq!(reg.load().version(), v0 + 1, "no change, no swap");
}

#[test]
fn ids_are_unique_and_never_reused() {
    let reg = Registry::new();
    let a = reg.subscribe([p("a")], ());
    reg.unsubscribe(a);
    let b = reg.subscribe([p("a")], ());
    assert!(b > a);
}

/// The visibility rule, checked across threads without sleeps: the writer
/// hands each change to a reader through a channel right after the call
/// returns; the reader's next load must reflect it. Meanwhile publisher
/// threads match continuously and check that every result is consistent
/// with the snapshot it came from, and that a permanent subscription is
/// never missed.
#[test]
fn visibility_rule_under_concurrent_matching() {
    const ROUNDS: usize = 2_000;
    let reg = Arc::new(Registry::new());
    let permanent = reg.subscribe([p("orders.#")], 0u64);
    let topic = t("orders.eu.created");

    let stop = Arc::new(AtomicBool::new(false));
    let matched = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(4));
    let publishers: Vec<_> = (0..2)
        .map(|_| {
            let (reg, stop, matched, start, topic) = (
                reg.clone(),
                stop.clone(),
                matched.clone(),
                start.clone(),
                topic.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                let mut last_version = 0;
                while !stop.load(Ordering::Relaxed) {
                    let snap = reg.load();
                    assert!(snap.version() >= last_version, "versions go backwards");
                    last_version = snap.version();
                    let mut saw_permanent = false;
                    snap.for_each_match(&topic, |e| {
                        assert!(e.patterns().iter().any(|p| p.matches(&topic)));
                        assert!(snap.get(e.id()).is_some(), "match not in its snapshot");
                        saw_permanent |= e.id() == permanent;
                        matched.fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(saw_permanent, "a permanent subscription was missed");
                }
            })
        })
        .collect();

    let (to_reader, changes) = mpsc::channel::<(SubscriptionId, bool)>();
    let (to_writer, acks) = mpsc::channel::<()>();
    let reader = {
        let (reg, start, topic) = (reg.clone(), start.clone(), topic.clone());
        std::thread::spawn(move || {
            start.wait();
            while let Ok((id, subscribed)) = changes.recv() {
                let ids = reg.load().matches(&topic);
                assert_eq!(
                    ids.contains(&id),
                    subscribed,
                    "{id} subscribed={subscribed}"
                );
                to_writer.send(()).unwrap();
            }
        })
    };

    start.wait();
    let patterns = ["orders.*.created", "#.created", "orders.eu.created", "*.#"];
    for round in 0..ROUNDS {
        let id = reg.subscribe([p(patterns[round % patterns.len()])], round as u64 + 1);
        to_reader.send((id, true)).unwrap();
        acks.recv_timeout(Duration::from_secs(30)).unwrap();
        reg.unsubscribe(id).unwrap();
        to_reader.send((id, false)).unwrap();
        acks.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    drop(to_reader);
    reader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for h in publishers {
        h.join().unwrap();
    }
    assert!(matched.load(Ordering::Relaxed) > 0);
    assert_eq!(reg.load().len(), 1);
}

#[test]
fn registry_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Registry<String>>();
    assert_send_sync::<Snapshot<String>>();
    assert_send_sync::<crate::matcher::Matcher<String>>();
}
