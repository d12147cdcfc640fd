//! Helpers shared by the integration tests. Each test binary uses a
//! subset of them.
#![allow(dead_code)]

use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use topicbus::Message;

/// The generous deadline of every wait in the tests.
pub(crate) const LONG: Duration = Duration::from_secs(20);

/// Waits (yielding, never sleeping) until `cond` holds; panics after
/// [`LONG`].
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// A one-worker bus builder on `clock`.
pub(crate) fn on_clock(clock: &std::sync::Arc<topicbus::ManualClock>) -> topicbus::BusBuilder<u32> {
    topicbus::Bus::<u32>::builder()
        .workers(1)
        .clock(clock.clone())
}

/// A handler that reports each call (its payload) and then waits for a
/// release, so a test controls exactly when handlers finish. The wait is
/// bounded by [`LONG`], so a failing test ends instead of hanging in an
/// unsubscribe that waits for the call.
pub(crate) struct Gate {
    release: mpsc::Sender<()>,
    entered: mpsc::Receiver<u32>,
}

impl Gate {
    pub(crate) fn new() -> (Self, impl Fn(&Message<u32>) + Send + Sync + 'static) {
        let (release, release_rx) = mpsc::channel::<()>();
        let (entered_tx, entered) = mpsc::channel::<u32>();
        let (release_rx, entered_tx) = (Mutex::new(release_rx), Mutex::new(entered_tx));
        let handler = move |m: &Message<u32>| {
            let _ = entered_tx.lock().unwrap().send(*m.payload());
            let _ = release_rx.lock().unwrap().recv_timeout(LONG);
        };
        (Self { release, entered }, handler)
    }

    /// Waits until a call entered the handler; returns its payload.
    pub(crate) fn entered(&self) -> u32 {
        self.entered.recv_timeout(LONG).expect("a handler call")
    }

    /// Lets `n` calls finish.
    pub(crate) fn release(&self, n: usize) {
        for _ in 0..n {
            self.release.send(()).expect("handler gone");
        }
    }
}

/// The payload of the handlers' deliberate panics.
pub(crate) struct Deliberate;

/// Installs (once for the binary) a panic hook that keeps quiet about the
/// handlers' deliberate panics and reports every other one.
pub(crate) fn silence_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<Deliberate>().is_none() {
                default_hook(info);
            }
        }));
    });
}
