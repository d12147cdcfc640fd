//! Confirmed publishing: wait until every matched subscription settled.

use std::time::Instant;

use crate::message::MessageId;
use crate::registry::SubscriptionId;
use crate::sync::{Condvar, Mutex};

use super::stats::Outcome;

/// One subscription's outcome for a confirmed message.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, Message, Outcome};
///
/// let bus = Bus::<&str>::builder().workers(1).build()?;
/// let _s = bus.subscribe("mail.send", |m: &Message<&str>| {
///     if m.payload().contains('@') { Ok(()) } else { Err("no @ in address") }
/// })?;
/// let c = bus.publish_confirmed("mail.send", "bob", Duration::from_secs(5))?;
/// assert_eq!(c.deliveries[0].outcome, Outcome::Failed);
/// assert_eq!(c.deliveries[0].detail.as_deref(), Some("no @ in address"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The subscription.
    pub subscription: SubscriptionId,
    /// What happened.
    pub outcome: Outcome,
    /// The handler's error text or panic message, when it failed.
    pub detail: Option<String>,
}

/// The result of [`Bus::publish_confirmed`](crate::Bus::publish_confirmed).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, Message};
///
/// let bus = Bus::<u32>::builder().workers(2).build()?;
/// let _a = bus.subscribe("n.*", |_m: &Message<u32>| ())?;
/// let _b = bus.subscribe("n.#", |_m: &Message<u32>| ())?;
/// let c = bus.publish_confirmed("n.one", 1, Duration::from_secs(5))?;
/// assert!(c.complete && c.all_succeeded());
/// assert_eq!(c.deliveries.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Confirmation {
    /// The message's id.
    pub id: MessageId,
    /// Subscriptions the message was routed to.
    pub matched: usize,
    /// The outcomes reported before the timeout, in the order they came.
    pub deliveries: Vec<Delivery>,
    /// True when every matched subscription reported in time.
    pub complete: bool,
}

impl Confirmation {
    /// Complete, and every outcome handled or received.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let _s = bus.subscribe("t", |m: &Message<u32>| if *m.payload() > 0 { Ok(()) } else { Err("zero") })?;
    /// assert!(bus.publish_confirmed("t", 1, Duration::from_secs(10))?.all_succeeded());
    /// assert!(!bus.publish_confirmed("t", 0, Duration::from_secs(10))?.all_succeeded());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn all_succeeded(&self) -> bool {
        self.complete && self.deliveries.iter().all(|d| d.outcome.is_success())
    }
}

#[derive(Debug)]
struct Progress {
    /// Outcomes still to come, plus one for the publisher until it finished
    /// routing.
    pending: usize,
    deliveries: Vec<Delivery>,
}

/// Where subscriptions report a confirmed message's outcomes.
#[derive(Debug)]
pub(crate) struct Tracker {
    progress: Mutex<Progress>,
    done: Condvar,
}

impl Tracker {
    pub(crate) fn new() -> Self {
        Self {
            progress: Mutex::new(Progress {
                pending: 1,
                deliveries: Vec::new(),
            }),
            done: Condvar::new(),
        }
    }

    /// One more outcome will come (called before the delivery is attempted).
    pub(crate) fn expect_one(&self) {
        self.progress.lock().pending += 1;
    }

    /// A subscription settled the message.
    pub(crate) fn report(
        &self,
        subscription: SubscriptionId,
        outcome: Outcome,
        detail: Option<String>,
    ) {
        let mut p = self.progress.lock();
        p.deliveries.push(Delivery {
            subscription,
            outcome,
            detail,
        });
        p.pending -= 1;
        if p.pending == 0 {
            self.done.notify_all();
        }
    }

    /// The publisher finished routing; waits for the outcomes until
    /// `deadline`.
    pub(crate) fn wait(&self, id: MessageId, matched: usize, deadline: Instant) -> Confirmation {
        self.routed();
        self.confirmation(id, matched, deadline)
    }

    /// The publisher finished routing (once per message).
    pub(crate) fn routed(&self) {
        let mut p = self.progress.lock();
        p.pending -= 1;
        if p.pending == 0 {
            self.done.notify_all();
        }
    }

    /// Waits, after [`routed`](Self::routed), for the outcomes until
    /// `deadline`; may be called again after a timeout.
    pub(crate) fn confirmation(
        &self,
        id: MessageId,
        matched: usize,
        deadline: Instant,
    ) -> Confirmation {
        let mut p = self.progress.lock();
        while p.pending > 0 {
            let (g, timed_out) = self.done.wait_until(p, deadline);
            p = g;
            if timed_out {
                break;
            }
        }
        Confirmation {
            id,
            matched,
            deliveries: p.deliveries.clone(),
            complete: p.pending == 0,
        }
    }
}
