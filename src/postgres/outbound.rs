//! What the archive and the queue's producing side share: the outbound
//! settings and their setters, the outbox subscription, taking batches
//! from it, and the stop / deadline / last-error control of the threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::PgError;
use crate::adapter::{Backoff, Stop};
use crate::bus::{HealthCheck, HealthIssue};
use crate::envelope::Codec;
use crate::route::{Confirms, Link, Outlet};
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::Mutex;
use crate::{Bus, Message, OverflowPolicy, Pattern, Receiver, RecvTimeoutError, SubscribeOptions};

/// How often idle threads look at their stop flag.
pub(super) const POLL: Duration = Duration::from_millis(50);

/// The outbound settings of a builder.
pub(super) struct Outbound {
    pub(super) conninfo: String,
    pub(super) codec: Codec,
    pub(super) schema: String,
    pub(super) export: Vec<String>,
    pub(super) node: String,
    pub(super) batch: usize,
    pub(super) linger: Duration,
    pub(super) outbox: usize,
    pub(super) overflow: OverflowPolicy,
    pub(super) backoff: Backoff,
    pub(super) routable: bool,
}

impl Outbound {
    pub(super) fn new(
        conninfo: String,
        codec: Codec,
        linger: Duration,
        overflow: OverflowPolicy,
    ) -> Self {
        Self {
            conninfo,
            codec,
            schema: "topicbus".into(),
            export: Vec::new(),
            node: format!("node-{:016x}", fastrand::u64(..)),
            batch: 1_000,
            linger,
            outbox: 100_000,
            overflow,
            backoff: Backoff {
                base: Duration::from_millis(50),
                cap: Duration::from_secs(5),
            },
            routable: false,
        }
    }

    /// Checks the shared settings.
    pub(super) fn check(&self) -> Result<(), PgError> {
        super::check_schema(&self.schema)?;
        if self.batch == 0
            || self.outbox == 0
            || self.linger.is_zero()
            || self.backoff.cap.is_zero()
        {
            return Err(PgError::Invalid(
                "batch rows, linger, outbox capacity and backoff cap must be positive",
            ));
        }
        Ok(())
    }

    /// The export patterns, parsed.
    pub(super) fn patterns(&self) -> Result<Vec<Pattern>, PgError> {
        Ok(self
            .export
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The outbox: a bounded pull subscription to the export patterns
    /// (none without patterns, unless routable), narrowed by `filter`.
    pub(super) fn outbox<T: Send + Sync + 'static>(
        &self,
        bus: &Bus<T>,
        patterns: Vec<Pattern>,
        filter: Option<fn(&Message<T>) -> bool>,
    ) -> Result<Option<Arc<Receiver<T>>>, PgError> {
        if patterns.is_empty() && !self.routable {
            return Ok(None);
        }
        let mut options = SubscribeOptions::new()
            .capacity(self.outbox)
            .overflow(self.overflow)
            .direct();
        if let Some(f) = filter {
            options = options.filter(f);
        }
        for p in patterns {
            options = options.pattern(p);
        }
        Ok(Some(Arc::new(bus.receiver_with(options)?)))
    }
}

/// The setters of [`Outbound`] on a builder with a field `out`; the
/// arguments are the defaults the docs state.
macro_rules! outbound_setters {
    (batch: $batch:literal, outbox: $outbox:literal, new: $new:literal) => {
        /// The schema of the tables (default `topicbus`), created and
        /// migrated on start.
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse topicbus::envelope::Codec;\nuse topicbus::postgres::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet _adapter = ",
            $new,
            "\n    .schema(\"billing\") // tables in schema \"billing\", migrated on start\n    .export(\"invoices.#\")\n    .start(&bus)?;\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn schema(mut self, schema: &str) -> Self {
            schema.clone_into(&mut self.out.schema);
            self
        }

        /// Takes local messages whose topic matches `pattern` (call once
        /// per pattern), through a bounded outbox drained by one writer
        /// thread.
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse topicbus::envelope::Codec;\nuse topicbus::postgres::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet _adapter = ",
            $new,
            "\n    .export(\"orders.#\")\n    .export(\"payments.*.settled\")\n    .start(&bus)?;\nbus.publish(\"orders.eu.created\", \"o-1\".to_string())?; // written to PostgreSQL\nbus.publish(\"users.signup\", \"u-1\".to_string())?; // not taken\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn export(mut self, pattern: impl Into<String>) -> Self {
            self.out.export.push(pattern.into());
            self
        }

        /// Gives the adapter an outbox and its writer even without export
        /// patterns, for a [`Router`](crate::route::Router): see `outlet`.
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse topicbus::envelope::Codec;\nuse topicbus::postgres::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet adapter = ",
            $new,
            "\n    .routable() // no exports: only what a router sends\n    .start(&bus)?;\nassert!(adapter.outlet().is_some());\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn routable(mut self) -> Self {
            self.out.routable = true;
            self
        }

        /// The node id written in each envelope and row (default: random).
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse topicbus::envelope::Codec;\nuse topicbus::postgres::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet _adapter = ",
            $new,
            "\n    .node_id(\"billing-1\") // recorded with every row\n    .export(\"invoices.#\")\n    .start(&bus)?;\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn node_id(mut self, id: impl Into<String>) -> Self {
            self.out.node = id.into();
            self
        }

        #[doc = concat!(
                            "A batch is written when it has `rows` messages or its first ",
                            "message waited `linger`, whichever comes first (default ",
                            $batch,
                            ")."
                        )]
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse std::time::Duration;\nuse topicbus::envelope::Codec;\nuse topicbus::postgres::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet adapter = ",
            $new,
            "\n    .export(\"clicks.#\")\n    .batch(5_000, Duration::from_millis(200)) // bigger, rarer writes\n    .start(&bus)?;\nprintln!(\"waiting to be written: {}\", adapter.stats().outbox_depth);\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn batch(mut self, rows: usize, linger: std::time::Duration) -> Self {
            self.out.batch = rows;
            self.out.linger = linger;
            self
        }

        #[doc = concat!(
                            "The outbox: how many messages wait while the database is slow ",
                            "or down (default 100,000), and what happens past that ",
                            $outbox
                        )]
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse topicbus::envelope::Codec;\nuse topicbus::postgres::*;\nuse topicbus::{Bus, OverflowPolicy};\nlet bus = Bus::<String>::builder().build()?;\nlet adapter = ",
            $new,
            "\n    .export(\"orders.#\")\n    .outbox(1_000_000, OverflowPolicy::DropOldest) // ride out a long outage\n    .start(&bus)?;\nprintln!(\"waiting: {}, dropped: {}\", adapter.stats().outbox_depth, adapter.stats().outbox_dropped);\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn outbox(mut self, capacity: usize, overflow: $crate::OverflowPolicy) -> Self {
            self.out.outbox = capacity;
            self.out.overflow = overflow;
            self
        }

        /// Reconnect backoff: full jitter, from `base` doubling up to `cap`
        /// (default 50 ms to 5 s).
        ///
        /// # Examples
        ///
        #[doc = concat!(
            "```no_run\nuse std::time::Duration;\nuse topicbus::envelope::Codec;\nuse topicbus::postgres::*;\nuse topicbus::Bus;\nlet bus = Bus::<String>::builder().build()?;\nlet _adapter = ",
            $new,
            "\n    .export(\"orders.#\")\n    .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(30))\n    .start(&bus)?;\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )]
        pub fn reconnect_backoff(
            mut self,
            base: std::time::Duration,
            cap: std::time::Duration,
        ) -> Self {
            self.out.backoff = $crate::adapter::Backoff { base, cap };
            self
        }
    };
}
pub(super) use outbound_setters;

/// Takes a batch from `rx` into `take`: waits up to [`POLL`] for the first
/// message, then until `batch` messages or `linger` has passed. True when
/// the outbox is closed for good (the bus shut down, or stopping and
/// empty).
pub(super) fn fill<T: Send + Sync + 'static>(
    rx: &Receiver<T>,
    batch: usize,
    linger: Duration,
    stopping: bool,
    mut take: impl FnMut(Arc<Message<T>>),
) -> bool {
    let wait = if stopping { Duration::ZERO } else { POLL };
    let first = match rx.recv_timeout(wait) {
        Ok(m) => m,
        Err(RecvTimeoutError::Timeout) => return stopping,
        Err(RecvTimeoutError::Closed) => return true,
    };
    take(first);
    let until = Instant::now() + linger;
    for _ in 1..batch {
        let left = if stopping {
            Duration::ZERO
        } else {
            until.saturating_duration_since(Instant::now())
        };
        match rx.recv_timeout(left) {
            Ok(m) => take(m),
            Err(_) => break,
        }
    }
    false
}

/// Empties `rx` at the end; returns how many it held.
pub(super) fn drain<T: Send + Sync + 'static>(rx: &Receiver<T>) -> u64 {
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    n
}

/// Adds `n` to a counter.
pub(super) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What an adapter's threads and its handle share: its counters and the
/// control.
pub(super) struct Shared<C> {
    pub(super) counts: C,
    pub(super) control: Control,
}

impl<C: Default> Shared<C> {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            counts: C::default(),
            control: Control::default(),
        })
    }
}

/// The outbox as a router's outlet: stopped once shutdown began, down
/// while `down` says so.
pub(super) fn outlet<T: Send + Sync + 'static, C: Send + Sync + 'static>(
    name: String,
    outbox: Option<&Arc<Receiver<T>>>,
    confirms: &Arc<Confirms>,
    shared: &Arc<Shared<C>>,
    down: fn(&C) -> bool,
) -> Option<Outlet<T>> {
    let shared = Arc::clone(shared);
    Some(Outlet::new(
        name,
        Arc::clone(outbox?),
        Arc::clone(confirms),
        move || {
            Link::of(
                shared.control.stop.is_stopped() || shared.control.is_done(),
                down(&shared.counts),
            )
        },
    ))
}

/// An adapter in [`Bus::health`]: degraded while `down` names a link that
/// is down, until it is shut down.
pub(super) struct Health<C> {
    pub(super) shared: Arc<Shared<C>>,
    pub(super) component: String,
    pub(super) down: fn(&C) -> Option<&'static str>,
}

impl<C: Send + Sync + 'static> HealthCheck for Health<C> {
    fn check(&self) -> Option<HealthIssue> {
        let s = &self.shared;
        if s.control.is_done() {
            return None;
        }
        let what = (self.down)(&s.counts)?;
        Some(crate::adapter::disconnected(
            self.component.clone(),
            what,
            &s.control.last_error,
        ))
    }
}

/// The stop flag, shutdown deadline and last error an adapter's threads
/// and its handle share.
#[derive(Default)]
pub(super) struct Control {
    pub(super) stop: Stop,
    deadline: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    /// Shut down: nothing to report any more.
    done: AtomicBool,
}

impl Control {
    /// Stopping, and the shutdown deadline has passed.
    pub(super) fn past_deadline(&self) -> bool {
        self.deadline.lock().is_none_or(|d| Instant::now() >= d)
    }

    /// Starts the shutdown: the threads have until `timeout` from now.
    pub(super) fn begin_stop(&self, timeout: Duration) {
        *self.deadline.lock() = Some(Instant::now() + timeout);
        self.stop.stop();
    }

    /// The threads are joined.
    pub(super) fn finished(&self) {
        self.done.store(true, Ordering::Release);
    }

    pub(super) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// A link failed: note why, back off (no longer than the deadline
    /// allows once stopping).
    pub(super) fn failed(&self, what: &str, e: &PgError, failures: &mut u32, backoff: Backoff) {
        *self.last_error.lock() = Some(e.to_string());
        #[cfg(feature = "tracing")]
        tracing::warn!(target: "topicbus", error = %e, "postgres {what}: failed");
        #[cfg(not(feature = "tracing"))]
        let _ = what;
        *failures = failures.saturating_add(1);
        let d = backoff.delay(*failures);
        if self.stop.wait(d) {
            let until = self.deadline.lock().unwrap_or_else(Instant::now);
            std::thread::sleep(d.min(until.saturating_duration_since(Instant::now())));
        }
    }
}
