//! Multi-adapter publishing: one publish routed to several adapters with a
//! strategy, and a fallback for an adapter that is down (features `redis`,
//! `postgres`).
//!
//! An adapter started with `.routable()` (or with export patterns) hands
//! out an [`Outlet`]: a direct way into its outbox, with the state of its
//! link. A [`Router`] holds [`Route`]s, each a primary outlet with
//! fallbacks in order (`Route::to(redis).or(pg_queue)`: Redis down, the
//! message goes to the PostgreSQL queue instead), and publishes each message
//! locally (unless told not to) and to its routes by a [`Strategy`]:
//!
//! | strategy | tries | succeeds when | refused before anything is published when |
//! |---|---|---|---|
//! | [`All`](Strategy::All) | every route | every route's outlet accepted it | a route has no outlet up |
//! | [`BestEffort`](Strategy::BestEffort) | every route | always (outcomes reported) | never |
//! | [`FirstSuccess`](Strategy::FirstSuccess) | routes in order, until one accepts | one accepted it | no route has an outlet up |
//!
//! "Accepted" means the outlet's link was up and its outbox took the
//! message; [`Router::publish_confirmed`] waits further, until each outlet
//! has written it to its server (`PUBLISH`/`XADD` replied, the rows
//! committed), and then "succeeds" means written. Nothing is rolled back:
//! when `All` fails halfway, what was accepted still goes out, and the
//! [`RouteReceipt`] in the error says where. A message that reaches two
//! outlets, or is sent again after a fallback, carries one id: the
//! adapters on the far side drop copies by id (the queue and the archive
//! by their keys, the Redis readers by their windows).
//!
//! An outlet is *down* once a write to its server failed and no later one
//! succeeded; a server that died while the adapter was idle is found by the
//! next write, so the message that finds it waits in that outbox (sent when
//! the server is back, or dropped by the outbox's policy, counted) and the
//! ones after it take the fallback. [`BestEffort`](Strategy::BestEffort)
//! leaves a message in a down outlet's outbox when no outlet of a route
//! is up ([`OutletOutcome::Held`]).
//!
//! # Examples
//!
//! ```no_run
//! use topicbus::envelope::Codec;
//! use topicbus::postgres::PgQueue;
//! use topicbus::redis::RedisStreams;
//! use topicbus::route::{Route, Router, Strategy};
//! use topicbus::Bus;
//!
//! let bus = Bus::<String>::builder().build()?;
//! let codec = Codec::unsigned();
//! let streams = RedisStreams::builder("redis://127.0.0.1/", codec.clone(), "orders")
//!     .routable()
//!     .start(&bus)?;
//! let queue = PgQueue::builder("host=/var/run/postgresql user=app", codec, "orders")
//!     .routable()
//!     .start(&bus)?;
//! let router = Router::builder(&bus)
//!     .route(Route::to(streams.outlet().ok_or("no outlet")?).or(queue.outlet().ok_or("no outlet")?))
//!     .strategy(Strategy::All)
//!     .build()?;
//! let receipt = router.publish("orders.eu.created", "order 42".to_string())?;
//! println!("went to {:?}", receipt.routes[0].delivered_by());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::{Condvar, Mutex};
use crate::{Bus, IntoTopic, Message, MessageId, PublishError, Receipt, Receiver};

/// What an outlet's link is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Not known to be down.
    Up,
    /// The last write to the server failed.
    Down,
    /// The adapter is shut down (or shutting down).
    Stopped,
}

impl Link {
    /// Stopped wins over down; up otherwise.
    pub(crate) fn of(stopped: bool, down: bool) -> Self {
        match (stopped, down) {
            (true, _) => Self::Stopped,
            (false, true) => Self::Down,
            (false, false) => Self::Up,
        }
    }
}

/// Messages an outlet's writer has been asked to confirm, and which of
/// them it wrote. While nobody waits it costs the writer an atomic load:
/// per batch written, and (in the Redis writer, which keeps a batch's ids
/// only when asked) per message taken.
#[derive(Default)]
pub(crate) struct Confirms {
    watched: AtomicUsize,
    /// Watched ids: true once written.
    slots: Mutex<HashMap<MessageId, bool>>,
    changed: Condvar,
}

impl Confirms {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// True while someone waits for a confirmation: the writer keeps its
    /// batches' ids then.
    pub(crate) fn watching(&self) -> bool {
        self.watched.load(Ordering::Acquire) > 0
    }

    /// Starts watching `id`; before the message is offered, so the writer
    /// that takes it sees [`watching`](Self::watching).
    fn watch(&self, id: MessageId) {
        let mut slots = self.slots.lock();
        if slots.insert(id, false).is_none() {
            self.watched.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn unwatch(&self, id: MessageId) {
        if self.slots.lock().remove(&id).is_some() {
            self.watched.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The writer wrote these messages.
    pub(crate) fn written(&self, ids: impl IntoIterator<Item = MessageId>) {
        if !self.watching() {
            return;
        }
        let mut slots = self.slots.lock();
        let mut any = false;
        for id in ids {
            if let Some(done) = slots.get_mut(&id) {
                *done = true;
                any = true;
            }
        }
        drop(slots);
        if any {
            self.changed.notify_all();
        }
    }

    /// Waits until `id` is written or `deadline`; stops watching it.
    fn wait(&self, id: MessageId, deadline: Instant) -> bool {
        let mut slots = self.slots.lock();
        let written = loop {
            match slots.get(&id) {
                Some(true) => break true,
                Some(false) => {}
                None => break false,
            }
            let (guard, timed_out) = self.changed.wait_until(slots, deadline);
            slots = guard;
            if timed_out {
                break slots.get(&id) == Some(&true);
            }
        };
        if slots.remove(&id).is_some() {
            self.watched.fetch_sub(1, Ordering::AcqRel);
        }
        written
    }
}

/// A way into one adapter's outbox, for a [`Router`]: from
/// `RedisBridge::outlet`, `RedisStreams::outlet`, `PgArchive::outlet` or
/// `PgQueue::outlet` of an adapter started with `.routable()` or with
/// export patterns. Cheap to clone.
///
/// # Examples
///
/// ```no_run
/// use topicbus::envelope::Codec;
/// use topicbus::postgres::PgArchive;
/// use topicbus::Bus;
/// let bus = Bus::<String>::builder().build()?;
/// let archive = PgArchive::builder("host=/tmp user=postgres", Codec::unsigned())
///     .routable()
///     .start(&bus)?;
/// let outlet = archive.outlet().ok_or("not routable")?.named("audit");
/// assert_eq!(outlet.name(), "audit");
/// println!("up: {}", outlet.is_up());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Outlet<T: Send + Sync + 'static> {
    name: Arc<str>,
    outbox: Arc<Receiver<T>>,
    confirms: Arc<Confirms>,
    link: Arc<dyn Fn() -> Link + Send + Sync>,
}

impl<T: Send + Sync + 'static> Clone for Outlet<T> {
    fn clone(&self) -> Self {
        Self {
            name: Arc::clone(&self.name),
            outbox: Arc::clone(&self.outbox),
            confirms: Arc::clone(&self.confirms),
            link: Arc::clone(&self.link),
        }
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Outlet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outlet")
            .field("name", &self.name)
            .field("link", &(self.link)())
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Outlet<T> {
    pub(crate) fn new(
        name: String,
        outbox: Arc<Receiver<T>>,
        confirms: Arc<Confirms>,
        link: impl Fn() -> Link + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: Arc::from(name),
            outbox,
            confirms,
            link: Arc::new(link),
        }
    }

    /// Its name in receipts (the adapter's kind and target by default,
    /// e.g. `redis streams tb:stream:orders`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisBridge;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let bridge = RedisBridge::builder("redis://127.0.0.1/", Codec::unsigned()).routable().start(&bus)?;
    /// let outlet = bridge.outlet().ok_or("not routable")?;
    /// println!("{}", outlet.name()); // e.g. "redis pubsub tb:" in receipts
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same outlet under another name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "jobs")
    ///     .routable()
    ///     .start(&bus)?;
    /// let outlet = queue.outlet().ok_or("not routable")?.named("jobs-db");
    /// assert_eq!(outlet.name(), "jobs-db");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Arc::from(name.into());
        self
    }

    /// True unless the last write to its server failed or the adapter is
    /// shut down.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders").routable().start(&bus)?;
    /// let outlet = streams.outlet().ok_or("not routable")?;
    /// assert!(outlet.is_up()); // until a write to Redis fails
    /// streams.shutdown(Duration::from_secs(5));
    /// assert!(!outlet.is_up()); // stopped
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_up(&self) -> bool {
        (self.link)() == Link::Up
    }
}

/// One destination of a [`Router`]: a primary outlet and the fallbacks
/// tried, in order, when it is down or its outbox refuses.
///
/// # Examples
///
/// ```
/// use topicbus::route::{Outlet, Route};
/// fn orders(redis: Outlet<String>, pg: Outlet<String>) -> Route<String> {
///     Route::to(redis).or(pg) // Redis down: PostgreSQL
/// }
/// # let _ = orders;
/// ```
#[must_use]
pub struct Route<T: Send + Sync + 'static> {
    outlets: Vec<Outlet<T>>,
}

impl<T: Send + Sync + 'static> Clone for Route<T> {
    fn clone(&self) -> Self {
        Self {
            outlets: self.outlets.clone(),
        }
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Route<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.outlets).finish()
    }
}

impl<T: Send + Sync + 'static> Route<T> {
    /// A route to `outlet`.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::route::{Outlet, Route, Router, RouteError};
    /// use topicbus::Bus;
    /// fn router(bus: &Bus<String>, archive: Outlet<String>) -> Result<Router<String>, RouteError> {
    ///     Router::builder(bus).route(Route::to(archive)).build() // no fallback
    /// }
    /// # let _ = router;
    /// ```
    pub fn to(outlet: Outlet<T>) -> Self {
        Self {
            outlets: vec![outlet],
        }
    }

    /// Adds `fallback`, tried after the outlets before it.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::route::{Outlet, Route};
    /// fn orders(redis: Outlet<String>, pg_queue: Outlet<String>, pg_archive: Outlet<String>) -> Route<String> {
    ///     Route::to(redis).or(pg_queue).or(pg_archive) // tried in this order
    /// }
    /// # let _ = orders;
    /// ```
    pub fn or(mut self, fallback: Outlet<T>) -> Self {
        self.outlets.push(fallback);
        self
    }

    /// True when one of its outlets is up.
    fn any_up(&self) -> bool {
        self.outlets.iter().any(Outlet::is_up)
    }
}

/// How a [`Router`] treats its routes; see the [module docs](self).
///
/// # Examples
///
/// ```
/// use topicbus::route::Strategy;
/// assert_eq!(Strategy::default(), Strategy::BestEffort);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Every route must take the message.
    All,
    /// Every route is tried; failures are reported, never an error.
    #[default]
    BestEffort,
    /// Routes in order until one takes the message.
    FirstSuccess,
}

/// What happened to a message at one outlet.
///
/// # Examples
///
/// ```
/// use topicbus::route::OutletOutcome;
/// assert!(OutletOutcome::Held.has_it()); // waits in the outbox
/// assert!(!OutletOutcome::Down.has_it());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutletOutcome {
    /// In the outbox of an outlet that is up.
    Accepted,
    /// Written to the server ([`Router::publish_confirmed`]).
    Written,
    /// Accepted, but not confirmed written before the timeout (it may
    /// still be written, or dropped by the outbox's policy, counted).
    Unconfirmed,
    /// In the outbox of an outlet that is down, for want of one that is up
    /// ([`Strategy::BestEffort`]): sent when the server is back, unless the
    /// outbox's overflow policy drops it first.
    Held,
    /// Skipped: the outlet is down.
    Down,
    /// Skipped: the adapter is shut down.
    Stopped,
    /// Its outbox was full and dropped it (counted by its policy).
    Dropped,
    /// Its outbox was full and refused it ([`OverflowPolicy::Reject`](crate::OverflowPolicy::Reject)).
    Rejected,
    /// Already expired: not sent.
    Expired,
}

impl OutletOutcome {
    /// Accepted, held or written (the outlet has the message).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::route::OutletOutcome;
    /// assert!(OutletOutcome::Accepted.has_it());
    /// assert!(OutletOutcome::Written.has_it());
    /// assert!(!OutletOutcome::Dropped.has_it());
    /// assert!(!OutletOutcome::Stopped.has_it());
    /// ```
    pub fn has_it(self) -> bool {
        matches!(
            self,
            Self::Accepted | Self::Written | Self::Unconfirmed | Self::Held
        )
    }

    /// Worth trying the next outlet of the route.
    fn falls_through(self) -> bool {
        matches!(
            self,
            Self::Down | Self::Stopped | Self::Dropped | Self::Rejected
        )
    }
}

/// One outlet tried for a route.
///
/// # Examples
///
/// ```
/// use topicbus::route::{Attempt, OutletOutcome};
/// fn failed(a: &Attempt) -> bool {
///     !a.outcome.has_it()
/// }
/// # let _ = failed;
/// # let _ = OutletOutcome::Down;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// The outlet's [name](Outlet::name).
    pub outlet: Arc<str>,
    /// What it did.
    pub outcome: OutletOutcome,
    /// Its place in the route.
    slot: usize,
}

impl Attempt {
    fn new<T: Send + Sync + 'static>(o: &Outlet<T>, slot: usize, outcome: OutletOutcome) -> Self {
        Self {
            outlet: Arc::clone(&o.name),
            outcome,
            slot,
        }
    }
}

/// What one route did with a message: the outlets tried, in order.
///
/// # Examples
///
/// ```
/// use topicbus::route::RouteReport;
/// let untried = RouteReport::default();
/// assert!(!untried.tried() && untried.delivered_by().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RouteReport {
    /// Every outlet tried; empty when the route was not tried
    /// ([`Strategy::FirstSuccess`] after an earlier route took it).
    pub attempts: Vec<Attempt>,
}

impl RouteReport {
    /// The outlet that has the message, if one does.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::route::{RouteReceipt, RouteReport};
    /// fn log(receipt: &RouteReceipt) {
    ///     for route in &receipt.routes {
    ///         match route.delivered_by() {
    ///             Some(outlet) => println!("{} went to {outlet}", receipt.id),
    ///             None => eprintln!("{} missed a route: {:?}", receipt.id, route.outcome()),
    ///         }
    ///     }
    /// }
    /// # let _ = log;
    /// assert_eq!(RouteReport::default().delivered_by(), None);
    /// ```
    pub fn delivered_by(&self) -> Option<&str> {
        self.attempts
            .iter()
            .find(|a| a.outcome.has_it())
            .map(|a| &*a.outlet)
    }

    /// The outcome at the outlet that has it, or the last one tried.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::route::{OutletOutcome, RouteReport};
    /// fn was_held(r: &RouteReport) -> bool {
    ///     r.outcome() == Some(OutletOutcome::Held) // waits in a down outlet's outbox
    /// }
    /// assert!(!was_held(&RouteReport::default()));
    /// assert_eq!(RouteReport::default().outcome(), None); // not tried
    /// ```
    pub fn outcome(&self) -> Option<OutletOutcome> {
        self.attempts
            .iter()
            .find(|a| a.outcome.has_it())
            .or(self.attempts.last())
            .map(|a| a.outcome)
    }

    /// True when an outlet other than the primary has it.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::route::RouteReceipt;
    /// fn count_fallbacks(receipts: &[RouteReceipt]) -> usize {
    ///     receipts.iter().flat_map(|r| &r.routes).filter(|route| route.fell_back()).count()
    /// }
    /// assert_eq!(count_fallbacks(&[]), 0);
    /// ```
    pub fn fell_back(&self) -> bool {
        self.attempts.len() > 1 && self.delivered_by().is_some()
    }

    /// False when the route was not tried.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::route::RouteReport;
    /// assert!(!RouteReport::default().tried()); // FirstSuccess leaves later routes untried
    /// ```
    pub fn tried(&self) -> bool {
        !self.attempts.is_empty()
    }

    fn ok(&self, confirmed: bool) -> bool {
        match self.outcome() {
            Some(OutletOutcome::Written) => true,
            Some(OutletOutcome::Accepted) => !confirmed,
            _ => false,
        }
    }
}

/// What a [`Router`] did with a message.
///
/// # Examples
///
/// ```
/// use topicbus::route::RouteReceipt;
/// fn show(r: &RouteReceipt) {
///     for (i, route) in r.routes.iter().enumerate() {
///         println!("route {i}: {:?} via {:?}", route.outcome(), route.delivered_by());
///     }
/// }
/// # let _ = show;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteReceipt {
    /// The message's id.
    pub id: MessageId,
    /// The local publish, when the router publishes locally and the
    /// message was published.
    pub local: Option<Receipt>,
    /// One report per route, in the router's order.
    pub routes: Vec<RouteReport>,
}

/// Why a [`Router`] refused or failed a publish.
///
/// # Examples
///
/// ```
/// use topicbus::route::{RouteError, RouteReceipt};
/// fn explain(e: &RouteError) -> String {
///     match e {
///         RouteError::Unavailable { route, .. } => format!("route {route}: nothing up, nothing sent"),
///         RouteError::Incomplete(r) => format!("partly sent: {:?}", r.routes),
///         other => other.to_string(),
///     }
/// }
/// assert_eq!(explain(&RouteError::NoRoutes), "a router needs at least one route");
/// # let _: Option<RouteReceipt> = None;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The bus refused it (closed, a bad topic, a payload too large, …):
    /// nothing was published anywhere.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The message is delayed; routers send at once. Publish it on the bus,
    /// or into the durable queue (which keeps the delay).
    #[error("a delayed message cannot be routed: publish it on the bus or into the durable queue")]
    Delayed,
    /// No outlet was up where the strategy needs one (a route under
    /// [`Strategy::All`], every route under [`Strategy::FirstSuccess`]):
    /// nothing was published, locally or anywhere. Retry later, or route
    /// with [`Strategy::BestEffort`] to hold messages in the outboxes.
    #[error("no outlet is up for route {route}: nothing was published")]
    Unavailable {
        /// The first route without an outlet that is up.
        route: usize,
        /// The outlets as they were found (all skipped).
        receipt: Box<RouteReceipt>,
    },
    /// Published, but the strategy's condition was not met (an outbox
    /// full, not confirmed in time): the receipt says what each route did.
    /// What was accepted still goes out.
    #[error("the routing strategy was not met: see the receipt for each route")]
    Incomplete(Box<RouteReceipt>),
    /// A router needs at least one route.
    #[error("a router needs at least one route")]
    NoRoutes,
    /// The outlet belongs to an adapter of another bus.
    #[error("outlet {0} belongs to an adapter of another bus")]
    ForeignOutlet(String),
    /// The same adapter's outlet is in two routes: each message would go
    /// to it twice.
    #[error("outlet {0} is in two routes")]
    DuplicateOutlet(String),
}

/// Settings of a [`Router`], from [`Router::builder`].
///
/// # Examples
///
/// ```
/// use topicbus::route::{RouteError, Router, Strategy};
/// use topicbus::Bus;
/// let bus = Bus::<String>::builder().workers(1).build()?;
/// let refused = Router::builder(&bus).strategy(Strategy::All).local(false).build();
/// assert!(matches!(refused, Err(RouteError::NoRoutes)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct RouterBuilder<T: Send + Sync + 'static> {
    bus: Bus<T>,
    routes: Vec<Route<T>>,
    strategy: Strategy,
    local: bool,
}

impl<T: Send + Sync + 'static> fmt::Debug for RouterBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("routes", &self.routes)
            .field("strategy", &self.strategy)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> RouterBuilder<T> {
    /// Adds a route.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::{PgArchive, PgQueue};
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::route::{Route, Router};
    /// use topicbus::Bus;
    /// let (redis, db) = ("redis://127.0.0.1/", "host=/var/run/postgresql user=app");
    /// let bus = Bus::<String>::builder().build()?;
    /// let streams = RedisStreams::builder(redis, Codec::unsigned(), "orders").routable().start(&bus)?;
    /// let queue = PgQueue::builder(db, Codec::unsigned(), "orders").routable().start(&bus)?;
    /// let archive = PgArchive::builder(db, Codec::unsigned()).routable().start(&bus)?;
    /// let router = Router::builder(&bus)
    ///     .route(Route::to(streams.outlet().ok_or("no outlet")?).or(queue.outlet().ok_or("no outlet")?))
    ///     .route(Route::to(archive.outlet().ok_or("no outlet")?))
    ///     .build()?;
    /// # let _ = router;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn route(mut self, route: Route<T>) -> Self {
        self.routes.push(route);
        self
    }

    /// Adds a route to `outlet` alone.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgArchive;
    /// use topicbus::route::Router;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let archive = PgArchive::builder("host=/var/run/postgresql user=app", Codec::unsigned()).routable().start(&bus)?;
    /// let router = Router::builder(&bus).to(archive.outlet().ok_or("no outlet")?).build()?;
    /// # let _ = router;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to(self, outlet: Outlet<T>) -> Self {
        self.route(Route::to(outlet))
    }

    /// The strategy (default [`Strategy::BestEffort`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::route::{RouteError, Router, Strategy};
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().workers(1).build()?;
    /// let builder = Router::builder(&bus).strategy(Strategy::FirstSuccess);
    /// assert!(matches!(builder.build(), Err(RouteError::NoRoutes))); // routes still to add
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Whether each message is also published on the bus (default true).
    /// Turn it off when the outlets' adapters also export the topics from
    /// the bus, or the local subscribers should not see routed messages.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisBridge;
    /// use topicbus::route::Router;
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let _local = bus.receiver("orders.#")?;
    /// let bridge = RedisBridge::builder("redis://127.0.0.1/", Codec::unsigned()).routable().start(&bus)?;
    /// let remote_only = Router::builder(&bus).to(bridge.outlet().ok_or("no outlet")?).local(false).build()?;
    /// let r = remote_only.publish("orders.created", "o-1".to_string())?;
    /// assert!(r.local.is_none()); // local subscribers did not see it
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local(mut self, local: bool) -> Self {
        self.local = local;
        self
    }

    /// The router.
    ///
    /// # Errors
    ///
    /// [`RouteError::NoRoutes`]; [`RouteError::ForeignOutlet`] for an
    /// outlet of an adapter started on another bus;
    /// [`RouteError::DuplicateOutlet`] for an adapter in two routes.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::route::{RouteError, Router};
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// assert!(matches!(Router::builder(&bus).build(), Err(RouteError::NoRoutes)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<Router<T>, RouteError> {
        if self.routes.is_empty() {
            return Err(RouteError::NoRoutes);
        }
        for (i, route) in self.routes.iter().enumerate() {
            for o in &route.outlets {
                if !self.bus.same_bus(o.outbox.bus()) {
                    return Err(RouteError::ForeignOutlet(o.name().to_owned()));
                }
                let elsewhere = self.routes[i + 1..]
                    .iter()
                    .flat_map(|r| &r.outlets)
                    .any(|other| Arc::ptr_eq(&other.confirms, &o.confirms));
                if elsewhere {
                    return Err(RouteError::DuplicateOutlet(o.name().to_owned()));
                }
            }
        }
        Ok(Router {
            bus: self.bus,
            routes: self.routes,
            strategy: self.strategy,
            local: self.local,
        })
    }
}

/// Publishes each message to several adapters by a [`Strategy`]; see the
/// [module docs](self). Holds a handle of its bus.
///
/// # Examples
///
/// ```no_run
/// use topicbus::envelope::Codec;
/// use topicbus::postgres::{PgArchive, PgQueue};
/// use topicbus::route::{Router, Strategy};
/// use topicbus::Bus;
///
/// let db = "host=/var/run/postgresql user=app";
/// let bus = Bus::<String>::builder().build()?;
/// let queue = PgQueue::builder(db, Codec::unsigned(), "jobs").routable().start(&bus)?;
/// let archive = PgArchive::builder(db, Codec::unsigned()).routable().start(&bus)?;
/// let router = Router::builder(&bus)
///     .to(queue.outlet().ok_or("no outlet")?)
///     .to(archive.outlet().ok_or("no outlet")?)
///     .strategy(Strategy::All)
///     .local(false)
///     .build()?;
/// // Both written, or an error saying which was not.
/// let r = router.publish_confirmed("jobs.render", "page 1".to_string(), std::time::Duration::from_secs(5))?;
/// assert!(r.routes.iter().all(|route| route.delivered_by().is_some()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Router<T: Send + Sync + 'static> {
    bus: Bus<T>,
    routes: Vec<Route<T>>,
    strategy: Strategy,
    local: bool,
}

impl<T: Send + Sync + 'static> fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes)
            .field("strategy", &self.strategy)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Router<T> {
    /// A router publishing on `bus`, with no routes yet.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::route::{Router, Strategy};
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().workers(1).build()?;
    /// let builder = Router::builder(&bus).strategy(Strategy::All); // then .route(…) for each destination
    /// # let _ = builder;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(bus: &Bus<T>) -> RouterBuilder<T> {
        RouterBuilder {
            bus: bus.clone(),
            routes: Vec::new(),
            strategy: Strategy::default(),
            local: true,
        }
    }

    /// The strategy.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::route::{Router, Strategy};
    /// fn describe(router: &Router<String>) -> &'static str {
    ///     match router.strategy() {
    ///         Strategy::All => "every route must take it",
    ///         Strategy::FirstSuccess => "one route is enough",
    ///         _ => "best effort",
    ///     }
    /// }
    /// # let _ = describe;
    /// ```
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Publishes `payload` to `topic`, locally and to the routes. Never
    /// blocks on I/O (an outbox with a blocking overflow policy may make it
    /// wait for room).
    ///
    /// # Errors
    ///
    /// [`RouteError::Publish`] when the bus refuses it;
    /// [`RouteError::Unavailable`] when the strategy finds no outlet up
    /// (nothing published); [`RouteError::Incomplete`] when it was
    /// published but the strategy's condition was not met.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgQueue;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::route::{Route, RouteError, Router, Strategy};
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "orders").routable().start(&bus)?;
    /// let queue = PgQueue::builder("host=/var/run/postgresql user=app", Codec::unsigned(), "orders").routable().start(&bus)?;
    /// let router = Router::builder(&bus)
    ///     .route(Route::to(streams.outlet().ok_or("no outlet")?).or(queue.outlet().ok_or("no outlet")?))
    ///     .strategy(Strategy::All)
    ///     .build()?;
    /// match router.publish("orders.eu.created", "order 42".to_string()) {
    ///     Ok(r) if r.routes[0].fell_back() => println!("Redis down: queued in PostgreSQL"),
    ///     Ok(_) => println!("sent through Redis"),
    ///     Err(RouteError::Unavailable { .. }) => println!("both down: nothing sent, retry later"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish(&self, topic: impl IntoTopic, payload: T) -> Result<RouteReceipt, RouteError> {
        let message = self.bus.plain_message(topic, payload)?;
        self.send(message, None)
    }

    /// As [`publish`](Self::publish), for a built message (headers,
    /// priority, expiry, …; not delayed).
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), and [`RouteError::Delayed`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisBridge;
    /// use topicbus::route::Router;
    /// use topicbus::{Bus, Message, Priority};
    /// let bus = Bus::<String>::builder().build()?;
    /// let bridge = RedisBridge::builder("redis://127.0.0.1/", Codec::unsigned()).routable().start(&bus)?;
    /// let router = Router::builder(&bus).to(bridge.outlet().ok_or("no outlet")?).build()?;
    /// let alert = Message::builder("alerts.disk".parse()?, "93 %".to_string())
    ///     .priority(Priority::High)
    ///     .ttl(Duration::from_secs(30));
    /// router.publish_message(alert)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_message(
        &self,
        message: impl Into<Message<T>>,
    ) -> Result<RouteReceipt, RouteError> {
        self.send(message.into(), None)
    }

    /// As [`publish_message`](Self::publish_message), then waits up to
    /// `timeout` until every outlet that accepted the message has written
    /// it to its server; the strategy then counts a route as done only when
    /// written ([`OutletOutcome::Written`]). Blocks.
    ///
    /// # Errors
    ///
    /// As [`publish_message`](Self::publish_message); an outlet that did
    /// not confirm in time makes it [`RouteError::Incomplete`] under
    /// [`Strategy::All`] and [`Strategy::FirstSuccess`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::postgres::PgArchive;
    /// use topicbus::route::{OutletOutcome, Router};
    /// use topicbus::Bus;
    /// let bus = Bus::<String>::builder().build()?;
    /// let archive = PgArchive::builder("host=/var/run/postgresql user=app", Codec::unsigned()).routable().start(&bus)?;
    /// let router = Router::builder(&bus).to(archive.outlet().ok_or("no outlet")?).build()?;
    /// let r = router.publish_confirmed("audit.login", "alice".to_string(), Duration::from_secs(5))?;
    /// assert_eq!(r.routes[0].outcome(), Some(OutletOutcome::Written)); // committed in PostgreSQL
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_confirmed(
        &self,
        topic: impl IntoTopic,
        payload: T,
        timeout: Duration,
    ) -> Result<RouteReceipt, RouteError> {
        let message = self.bus.plain_message(topic, payload)?;
        self.send(message, Some(timeout))
    }

    /// As [`publish_confirmed`](Self::publish_confirmed), for a built
    /// message.
    ///
    /// # Errors
    ///
    /// As [`publish_confirmed`](Self::publish_confirmed), and
    /// [`RouteError::Delayed`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use topicbus::envelope::Codec;
    /// use topicbus::redis::RedisStreams;
    /// use topicbus::route::{Router, Strategy};
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<String>::builder().build()?;
    /// let streams = RedisStreams::builder("redis://127.0.0.1/", Codec::unsigned(), "payments").routable().start(&bus)?;
    /// let router = Router::builder(&bus).to(streams.outlet().ok_or("no outlet")?).strategy(Strategy::All).build()?;
    /// let m = Message::builder("payments.settled".parse()?, "p-7".to_string()).header("currency", "EUR");
    /// let r = router.publish_message_confirmed(m, Duration::from_secs(5))?; // XADD replied
    /// println!("{} is in the stream", r.id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_message_confirmed(
        &self,
        message: impl Into<Message<T>>,
        timeout: Duration,
    ) -> Result<RouteReceipt, RouteError> {
        self.send(message.into(), Some(timeout))
    }

    fn send(
        &self,
        message: Message<T>,
        confirm: Option<Duration>,
    ) -> Result<RouteReceipt, RouteError> {
        if message.deliver_at().is_some() {
            return Err(RouteError::Delayed);
        }
        let deadline = confirm.map(|t| crate::sync::wait_deadline(Instant::now().checked_add(t)));
        if let Some(route) = self.unavailable() {
            let routes = self.routes.iter().map(skipped).collect();
            return Err(RouteError::Unavailable {
                route,
                receipt: Box::new(RouteReceipt {
                    id: message.id(),
                    local: None,
                    routes,
                }),
            });
        }
        let (local, mut routes) =
            self.bus
                .publish_routed(message, self.local, |msg| -> Vec<RouteReport> {
                    let mut taken = false;
                    self.routes
                        .iter()
                        .map(|route| {
                            if taken && self.strategy == Strategy::FirstSuccess {
                                return RouteReport::default();
                            }
                            let report = self.offer(route, msg, deadline.is_some());
                            taken |= report.delivered_by().is_some();
                            report
                        })
                        .collect()
                })?;
        let id = local.id;
        if let Some(deadline) = deadline {
            for (route, report) in self.routes.iter().zip(&mut routes) {
                confirm_route(route, report, id, deadline);
            }
        }
        let confirmed = deadline.is_some();
        let met = match self.strategy {
            Strategy::All => routes.iter().all(|r| r.ok(confirmed)),
            Strategy::BestEffort => true,
            Strategy::FirstSuccess => routes.iter().any(|r| r.ok(confirmed)),
        };
        let receipt = RouteReceipt {
            id,
            local: self.local.then_some(local),
            routes,
        };
        if met {
            Ok(receipt)
        } else {
            Err(RouteError::Incomplete(Box::new(receipt)))
        }
    }

    /// The route the strategy finds no outlet up for, before publishing.
    fn unavailable(&self) -> Option<usize> {
        match self.strategy {
            Strategy::All => self.routes.iter().position(|r| !r.any_up()),
            Strategy::FirstSuccess if !self.routes.iter().any(Route::any_up) => Some(0),
            _ => None,
        }
    }

    /// Offers `msg` to the route's outlets in order until one takes it;
    /// under best effort, to the primary's outbox when none is up.
    fn offer(&self, route: &Route<T>, msg: &Arc<Message<T>>, confirm: bool) -> RouteReport {
        let mut attempts = Vec::with_capacity(route.outlets.len());
        for (slot, o) in route.outlets.iter().enumerate() {
            let outcome = match (o.link)() {
                Link::Stopped => OutletOutcome::Stopped,
                Link::Down => OutletOutcome::Down,
                Link::Up => put(o, msg, confirm, OutletOutcome::Accepted),
            };
            attempts.push(Attempt::new(o, slot, outcome));
            if !outcome.falls_through() {
                return RouteReport { attempts };
            }
        }
        if self.strategy == Strategy::BestEffort {
            if let Some(primary) = route.outlets.first() {
                if (primary.link)() == Link::Down {
                    let outcome = put(primary, msg, confirm, OutletOutcome::Held);
                    attempts.push(Attempt::new(primary, 0, outcome));
                }
            }
        }
        RouteReport { attempts }
    }
}

/// Every outlet of `route` as its link stands, none tried.
fn skipped<T: Send + Sync + 'static>(route: &Route<T>) -> RouteReport {
    RouteReport {
        attempts: route
            .outlets
            .iter()
            .enumerate()
            .map(|(slot, o)| {
                let outcome = match (o.link)() {
                    Link::Stopped => OutletOutcome::Stopped,
                    Link::Up | Link::Down => OutletOutcome::Down,
                };
                Attempt::new(o, slot, outcome)
            })
            .collect(),
    }
}

/// Puts `msg` into `o`'s outbox; `taken` is the outcome when it is taken.
fn put<T: Send + Sync + 'static>(
    o: &Outlet<T>,
    msg: &Arc<Message<T>>,
    confirm: bool,
    taken: OutletOutcome,
) -> OutletOutcome {
    if confirm {
        o.confirms.watch(msg.id());
    }
    let outcome = match o.outbox.offer(msg) {
        Some(crate::bus::Offered::Enqueued) => taken,
        Some(crate::bus::Offered::Dropped) => OutletOutcome::Dropped,
        Some(crate::bus::Offered::Rejected) => OutletOutcome::Rejected,
        Some(crate::bus::Offered::Expired) => OutletOutcome::Expired,
        None => OutletOutcome::Stopped,
    };
    if confirm && !outcome.has_it() {
        o.confirms.unwatch(msg.id());
    }
    outcome
}

/// Waits for the outlet that has the message to confirm it.
fn confirm_route<T: Send + Sync + 'static>(
    route: &Route<T>,
    report: &mut RouteReport,
    id: MessageId,
    deadline: Instant,
) {
    let Some(attempt) = report.attempts.iter_mut().find(|a| a.outcome.has_it()) else {
        return;
    };
    let written = route
        .outlets
        .get(attempt.slot)
        .is_some_and(|o| o.confirms.wait(id, deadline));
    attempt.outcome = if written {
        OutletOutcome::Written
    } else {
        OutletOutcome::Unconfirmed
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmation_is_seen_only_for_watched_ids_and_ends_the_watch() {
        let c = Confirms::new();
        let (a, b) = (MessageId::new(), MessageId::new());
        assert!(!c.watching());
        c.written([a]);
        c.watch(a);
        assert!(c.watching());
        let soon = Instant::now() + Duration::from_millis(1);
        assert!(!c.wait(a, soon), "not written yet");
        assert!(!c.watching(), "a timed-out wait ends the watch");
        c.watch(a);
        c.watch(b);
        c.written([b]);
        let c2 = Arc::clone(&c);
        let t = std::thread::spawn(move || c2.wait(a, Instant::now() + Duration::from_secs(600)));
        c.written([a]);
        assert!(t.join().unwrap());
        assert!(c.wait(b, Instant::now()));
        assert!(!c.watching());
    }
}
