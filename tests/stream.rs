//! The `async` feature: a pull receiver as a `futures_core::Stream`, driven
//! by hand with a waker that records wake-ups (no runtime needed).
#![cfg(feature = "async")]

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_core::Stream;
use topicbus::Bus;

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_receiver_stream_wakes_on_publish_and_ends_after_shutdown() {
    let bus = Bus::<u32>::builder().workers(1).build().unwrap();
    let mut rx = bus.receiver("s.*").unwrap();
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);

    assert!(Pin::new(&mut rx).poll_next(&mut cx).is_pending());
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    bus.publish("s.a", 7).unwrap();
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        1,
        "the publish woke the task"
    );
    match Pin::new(&mut rx).poll_next(&mut cx) {
        Poll::Ready(Some(m)) => assert_eq!(*m.payload(), 7),
        other => panic!("expected the message, got {other:?}"),
    }

    bus.publish("s.b", 8).unwrap();
    assert!(matches!(
        Pin::new(&mut rx).poll_next(&mut cx),
        Poll::Ready(Some(_))
    ));
    assert!(Pin::new(&mut rx).poll_next(&mut cx).is_pending());
    bus.shutdown(Duration::from_secs(5)).unwrap();
    assert!(
        counter.0.load(Ordering::SeqCst) >= 2,
        "shutdown woke the task"
    );
    assert!(matches!(
        Pin::new(&mut rx).poll_next(&mut cx),
        Poll::Ready(None)
    ));
}
