//! Registry swap vs readers, and writer vs writer, under every interleaving.
//!
//! Under `--cfg topicbus_loom` the registry's atomic `Arc` cell and writer
//! mutex are loom's, so loom explores every order of loads, stores and locks.
#![cfg(topicbus_loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use topicbus::registry::Registry;
use topicbus::{Pattern, Topic};

fn pattern(s: &str) -> Pattern {
    Pattern::parse(s).expect("valid pattern")
}

/// A reader that learns (through a release/acquire flag) that `subscribe`
/// returned must see the subscription in its next load.
#[test]
fn subscribe_is_visible_to_every_later_load() {
    loom::model(|| {
        let reg = Arc::new(Registry::new());
        let returned = Arc::new(AtomicBool::new(false));
        let writer = {
            let (reg, returned) = (reg.clone(), returned.clone());
            thread::spawn(move || {
                let id = reg.subscribe([pattern("a.#")], 1u8);
                returned.store(true, Ordering::Release);
                id
            })
        };
        let topic = Topic::parse("a.b").expect("valid topic");
        let saw_return = returned.load(Ordering::Acquire);
        let hits = reg.load().matches(&topic);
        if saw_return {
            assert_eq!(
                hits.len(),
                1,
                "subscribe returned but a later load missed it"
            );
        }
        let id = writer.join().expect("writer");
        assert_eq!(reg.load().matches(&topic), [id]);
    });
}

/// A reader that learns that `unsubscribe` returned never matches the
/// subscription again.
#[test]
fn unsubscribe_is_invisible_to_every_later_load() {
    loom::model(|| {
        let reg = Arc::new(Registry::new());
        let id = reg.subscribe([pattern("a.*")], 1u8);
        let returned = Arc::new(AtomicBool::new(false));
        let writer = {
            let (reg, returned) = (reg.clone(), returned.clone());
            thread::spawn(move || {
                assert!(reg.unsubscribe(id).is_some());
                returned.store(true, Ordering::Release);
            })
        };
        let topic = Topic::parse("a.b").expect("valid topic");
        let saw_return = returned.load(Ordering::Acquire);
        let hits = reg.load().matches(&topic);
        if saw_return {
            assert!(
                hits.is_empty(),
                "unsubscribe returned but a later load matched"
            );
        }
        writer.join().expect("writer");
        assert!(reg.load().matches(&topic).is_empty());
    });
}

/// Two writers racing: both changes land (no lost update from building on a
/// stale snapshot), ids differ, and versions count every swap.
#[test]
fn concurrent_writers_lose_no_update() {
    loom::model(|| {
        let reg = Arc::new(Registry::new());
        let spawn = |p: &'static str| {
            let reg = reg.clone();
            thread::spawn(move || reg.subscribe([pattern(p)], 0u8))
        };
        let a = spawn("x.*");
        let b = spawn("#");
        let (a, b) = (a.join().expect("a"), b.join().expect("b"));
        assert_ne!(a, b);
        let snap = reg.load();
        assert_eq!((snap.len(), snap.version()), (2, 2));
        let mut hits = snap.matches(&Topic::parse("x.y").expect("valid topic"));
        hits.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(hits, want);
    });
}
