//! Dead letters in PostgreSQL against a real PostgreSQL 15 cluster: the
//! queue's letters queried and requeued, the bus's own persisted by the
//! sink and republished, topic patterns evaluated in the database exactly
//! as `Pattern::matches` does, forged rows rejected and purged.
#![cfg(feature = "postgres")]

#[path = "support/pg_server.rs"]
mod pg_server;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_server::PgCluster;
use topicbus::envelope::{Codec, KeyRing};
use topicbus::postgres::{LetterQuery, PgDeadLetterSink, PgDeadLetters, PgQueue};
use topicbus::{Bus, Message, Pattern, Permanent, Topic};

fn codec() -> Codec {
    Codec::signed(KeyRing::new("test", [42u8; 32]).unwrap())
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool, state: impl Fn() -> String) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}: {}",
            state()
        );
        std::thread::yield_now();
    }
}

fn message(t: &str, payload: &str) -> Message<String> {
    Message::builder(Topic::parse(t).unwrap(), payload.to_owned()).build()
}

/// A sink on `db` and a one-worker bus that keeps dead letters and hands
/// them to it.
fn sink_and_bus(db: &str) -> (Arc<PgDeadLetterSink<String>>, Bus<String>) {
    let sink = PgDeadLetterSink::<String>::start(db, codec(), "topicbus").unwrap();
    let bus = Bus::<String>::builder()
        .workers(1)
        .dead_letters(1_000)
        .dead_letter_sink(sink.clone())
        .build()
        .unwrap();
    (sink, bus)
}

#[test]
fn queue_letters_are_queried_by_filter_and_requeued() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let bus = Bus::<String>::builder().workers(2).build().unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(AtomicUsize::new(0));
    let (f, h) = (Arc::clone(&fixed), Arc::clone(&handled));
    let _s = bus
        .subscribe(
            "mail.#",
            move |_m: &Message<String>| -> Result<(), String> {
                if f.load(Ordering::SeqCst) {
                    h.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                } else {
                    Err("smtp down".into())
                }
            },
        )
        .unwrap();
    let queue = PgQueue::builder(db.as_str(), codec(), "mail")
        .export("mail.#")
        .consume()
        .max_attempts(2)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .start(&bus)
        .unwrap();
    for (t, n) in [("mail.send.eu", 3), ("mail.send.us", 2), ("mail.bounce", 1)] {
        for i in 0..n {
            bus.publish_message(message(t, &format!("{t} {i}")))
                .unwrap();
        }
    }
    wait_for(
        "six dead letters",
        || queue.stats().dead_lettered == 6,
        || format!("{:?}", queue.stats()),
    );
    let mut letters = PgDeadLetters::connect(&db, codec()).unwrap();
    let all = LetterQuery::new().queue("mail");
    assert_eq!(letters.count(&all).unwrap(), 6);
    assert_eq!(letters.count(&LetterQuery::new().bus_only()).unwrap(), 0);
    let eu = all.clone().topic(Pattern::parse("mail.*.eu").unwrap());
    let page = letters.query::<String>(&eu).unwrap();
    assert_eq!(page.letters.len(), 3);
    assert!(page.rejected.is_empty());
    let l = &page.letters[0];
    assert_eq!(
        (
            l.queue.as_deref(),
            l.reason.as_str(),
            l.error.as_deref(),
            l.attempts
        ),
        (Some("mail"), "max_attempts", Some("smtp down"), 2)
    );
    assert!(l.message.payload().starts_with("mail.send.eu"));
    // Paging: two, then the rest after the last id.
    let first = letters.query::<String>(&all.clone().limit(2)).unwrap();
    let rest = letters
        .query::<String>(&all.clone().after(first.last.unwrap()))
        .unwrap();
    assert_eq!((first.letters.len(), rest.letters.len()), (2, 4));
    assert!(first.letters[1].id < rest.letters[0].id);

    // The fix is in: the European ones go back into the queue and are
    // handled; the rest stay.
    fixed.store(true, Ordering::SeqCst);
    assert_eq!(letters.requeue::<String>(&eu).unwrap(), 3);
    wait_for(
        "three handled",
        || handled.load(Ordering::SeqCst) == 3,
        || format!("{:?}", queue.stats()),
    );
    assert_eq!(letters.count(&all).unwrap(), 3);
    assert_eq!(letters.count(&eu).unwrap(), 0);
    assert_eq!(
        letters
            .purge(&all.clone().topic(Pattern::parse("mail.bounce").unwrap()))
            .unwrap(),
        1
    );
    assert_eq!(letters.count(&all).unwrap(), 2);
    queue.shutdown(Duration::from_secs(5));
}

#[test]
fn the_bus_dead_letters_persist_and_are_republished() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let (sink, bus) = sink_and_bus(&db);
    let sub = bus
        .subscribe("pay.#", |m: &Message<String>| {
            Err(Permanent::new(format!("refused {}", m.payload())))
        })
        .unwrap();
    let sent: Vec<Message<String>> = (0..5)
        .map(|i| message("pay.card", &i.to_string()))
        .collect();
    let ids: Vec<_> = sent.iter().map(Message::id).collect();
    for m in sent {
        bus.publish_message(m).unwrap();
    }
    wait_for(
        "five letters stored",
        || sink.stats().stored == 5,
        || format!("{:?}", sink.stats()),
    );
    let mut letters = PgDeadLetters::connect(&db, codec()).unwrap();
    let page = letters
        .query::<String>(&LetterQuery::new().bus_only())
        .unwrap();
    let got: Vec<_> = page.letters.iter().map(|l| l.message.id()).collect();
    assert_eq!(got, ids, "the same messages, in order");
    let l = &page.letters[2];
    assert_eq!(
        (
            l.queue.as_deref(),
            l.reason.as_str(),
            l.error_kind.as_deref(),
            l.error.as_deref(),
            l.subscription,
            l.attempts
        ),
        (
            None,
            "permanent",
            Some("permanent"),
            Some("refused 2"),
            Some(sub.id().get()),
            1
        )
    );
    assert!(l.first_failure <= l.failed_at);
    // Republished on another bus that handles them: same ids, then gone.
    let other = Bus::<String>::builder().workers(1).build().unwrap();
    let rx = other.receiver("pay.#").unwrap();
    assert_eq!(
        letters
            .republish(&other, &LetterQuery::new().bus_only().reason("permanent"))
            .unwrap(),
        5
    );
    let again: Vec<_> = rx.try_iter().map(|m| m.id()).collect();
    assert_eq!(again, ids);
    assert_eq!(letters.count(&LetterQuery::new()).unwrap(), 0);
    bus.shutdown(Duration::from_secs(5)).unwrap();
    let s = sink.shutdown(Duration::from_secs(5));
    assert_eq!(
        (s.offered, s.stored, s.refused, s.unsent),
        (5, 5, 0, 0),
        "{s:?}"
    );
}

#[test]
fn topic_patterns_in_the_database_match_as_pattern_matches_does() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let db = cluster.database();
    let (sink, bus) = sink_and_bus(&db);
    let _s = bus
        .subscribe("#", |_m: &Message<String>| Err(Permanent::new("no")))
        .unwrap();
    let topics = [
        "a",
        "b",
        "a.b",
        "a.c",
        "a.b.c",
        "a.b.c.d",
        "x.a.b",
        "a-b.c",
        "a.b-c",
        "a.bb",
        "ab.c",
        "a.b.a.b",
        "z.z.z.z.z",
    ];
    for t in topics {
        bus.publish_message(message(t, t)).unwrap();
    }
    wait_for(
        "all stored",
        || sink.stats().stored == topics.len() as u64,
        || format!("{:?}", sink.stats()),
    );
    let mut letters = PgDeadLetters::connect(&db, codec()).unwrap();
    for p in [
        "a", "a.b", "*", "*.*", "a.*", "*.b", "#", "a.#", "#.b", "a.#.d", "#.a.#", "a.*.#",
        "#.*.b", "a-b.c", "a.b-c", "*.b.#", "#.#", "z.#.z",
    ] {
        let pattern = Pattern::parse(p).unwrap();
        let mut want: Vec<&str> = topics
            .iter()
            .copied()
            .filter(|t| pattern.matches(&Topic::parse(t).unwrap()))
            .collect();
        let page = letters
            .query::<String>(&LetterQuery::new().topic(pattern))
            .unwrap();
        let mut got: Vec<String> = page
            .letters
            .iter()
            .map(|l| l.message.topic().as_str().to_owned())
            .collect();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "pattern {p}");
    }
    // A row that does not verify is rejected, never returned, and purged
    // by id range.
    let mut client = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    client
        .execute(
            "UPDATE topicbus.dead_letters SET envelope = envelope || '\\x00'::bytea
             WHERE topic = 'a'",
            &[],
        )
        .unwrap();
    let page = letters
        .query::<String>(&LetterQuery::new().topic(Pattern::parse("a").unwrap()))
        .unwrap();
    assert!(page.letters.is_empty());
    assert_eq!(page.rejected.len(), 1);
    let forged = page.rejected[0];
    assert_eq!(
        letters
            .purge(&LetterQuery::new().after(forged - 1).limit(1))
            .unwrap(),
        1
    );
    drop(bus);
    sink.shutdown(Duration::from_secs(5));
}
