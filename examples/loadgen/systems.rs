//! The systems under test behind one interface: topicbus and the same-run
//! baselines (BENCHMARKING.md), plus the step runner that drives any of
//! them open loop (at a rate) or closed loop (as fast as it goes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Select, Sender};
use hdrhistogram::Histogram;
use topicbus::{
    Bus, GroupStrategy, Message, OverflowPolicy, Pattern, Priority, SubscribeOptions, Subscription,
    Topic,
};

use crate::measure::{self, cpu_ns, now_ns, rss_bytes, HiccupMeter, Hists, Pacer, RealClock};
use crate::measure::{Recorder, Stamp};

/// What every message carries.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// The publisher's stamps.
    pub stamp: Stamp,
    /// Lane index of the message's priority (0 high, 1 normal, 2 low).
    pub lane: u8,
    /// Whether to time this delivery (false during warm-up: counted only).
    pub timed: bool,
    /// Opaque body of the configured size.
    pub body: Vec<u8>,
}

/// What a subscriber's handler does besides recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behavior {
    /// Nothing.
    Normal,
    /// Sleeps this long per message (an I/O-bound handler).
    Slow(Duration),
    /// Returns an error for every message.
    Failing,
    /// Keeps the CPU busy this long per message (a compute-bound handler;
    /// the harness's own tests use it to overload a subscriber).
    #[cfg_attr(not(test), allow(dead_code))]
    Busy(Duration),
}

/// One subscription of a workload.
#[derive(Debug, Clone)]
pub struct SubSpec {
    /// Its pattern.
    pub pattern: Pattern,
    /// What its handler does.
    pub behavior: Behavior,
    /// Which recorder its deliveries go to (a scenario's split, e.g. the
    /// degraded subscriptions apart from the others).
    pub class: usize,
    /// Queue group name (one member of a group gets each message).
    pub group: Option<String>,
    /// Lane capacity and overflow policy, when not the run's default.
    pub mailbox: Option<(usize, OverflowPolicy)>,
}

impl SubSpec {
    /// A normal subscription in class 0.
    pub fn new(pattern: &str) -> Self {
        SubSpec {
            pattern: Pattern::parse(pattern).expect("workload patterns are valid"),
            behavior: Behavior::Normal,
            class: 0,
            group: None,
            mailbox: None,
        }
    }
}

/// Where one topic's messages go: a subscription, or one member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every message goes to this subscription.
    One(usize),
    /// Each message goes to one of these (round robin).
    Group(Vec<usize>),
}

/// A workload: topics, the publish order, priorities and subscriptions,
/// with every topic's routes resolved up front by the reference matcher
/// (`Pattern::matches`). The baselines get those routes for free: they pay
/// nothing for matching, which makes every ratio conservative.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Topics by index.
    pub topics: Vec<Topic>,
    /// Publish order (cycled): topic indices.
    pub sequence: Vec<u32>,
    /// Priority lanes (cycled beside `sequence`); empty means all normal.
    pub lanes: Vec<u8>,
    /// Subscriptions.
    pub subs: Vec<SubSpec>,
    /// Per topic, where its messages go.
    pub routes: Vec<Vec<Route>>,
    /// Recorder classes the subscriptions use.
    pub classes: usize,
}

impl Workload {
    /// Resolves the routes of `topics` for `subs`.
    pub fn new(topics: Vec<Topic>, sequence: Vec<u32>, subs: Vec<SubSpec>) -> Self {
        let routes = topics
            .iter()
            .map(|t| {
                let mut routes = Vec::new();
                let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
                for (i, s) in subs.iter().enumerate() {
                    if s.pattern.matches(t) {
                        match &s.group {
                            None => routes.push(Route::One(i)),
                            Some(g) => groups.entry(g).or_default().push(i),
                        }
                    }
                }
                let mut groups: Vec<_> = groups.into_iter().collect();
                groups.sort();
                routes.extend(groups.into_iter().map(|(_, m)| Route::Group(m)));
                routes
            })
            .collect();
        let classes = subs.iter().map(|s| s.class + 1).max().unwrap_or(1);
        Workload {
            topics,
            sequence,
            lanes: Vec::new(),
            subs,
            routes,
            classes,
        }
    }

    /// Deliveries per published message, averaged over the sequence.
    pub fn fanout(&self) -> f64 {
        let total: usize = self
            .sequence
            .iter()
            .map(|&k| self.routes[k as usize].len())
            .sum();
        total as f64 / self.sequence.len().max(1) as f64
    }
}

/// The systems a step can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum System {
    /// topicbus.
    Topicbus,
    /// An `Arc` message into one bounded crossbeam channel per subscription,
    /// worker threads `Select`ing over them; routes precomputed.
    HandRolled,
    /// One bounded crossbeam channel to one consumer: one handoff per
    /// message whatever the workload (the floor, not a bus).
    RawChannel,
    /// `tokio::sync::broadcast`, one channel per topic, a receiver task per
    /// (subscription, matching topic); losses (`Lagged`) counted.
    TokioBroadcast,
}

impl System {
    /// Short name for tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            System::Topicbus => "topicbus",
            System::HandRolled => "hand-rolled",
            System::RawChannel => "raw-channel",
            System::TokioBroadcast => "tokio-broadcast",
        }
    }
}

/// How the systems are set up for a run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Worker threads (topicbus workers, hand-rolled workers, tokio worker
    /// threads).
    pub workers: usize,
    /// Mailbox / channel capacity (topicbus: per lane).
    pub capacity: usize,
    /// topicbus's default overflow policy (the baselines block, or for
    /// tokio lose the oldest).
    pub overflow: OverflowPolicy,
    /// Pin the publisher to core 0 and worker `n` to core `n + 1`.
    pub pin: bool,
    /// Payload body size in bytes.
    pub payload: usize,
    /// topicbus only: run every handler inline on the publisher's thread
    /// (no mailbox, no worker hand-off).
    pub inline: bool,
}

/// The recorders of one step: one per subscription class, and one per
/// priority lane when the workload has lanes.
#[derive(Debug)]
pub struct Sink {
    /// By subscription class.
    pub classes: Vec<Arc<Recorder>>,
    /// By priority lane (high, normal, low).
    pub lanes: Option<[Arc<Recorder>; 3]>,
    /// Whether deliveries are timed (open loop) or only counted.
    pub timed: bool,
}

impl Sink {
    fn new(classes: usize, lanes: bool, timed: bool) -> Arc<Self> {
        Arc::new(Sink {
            classes: (0..classes).map(|_| Recorder::new()).collect(),
            lanes: lanes.then(|| [Recorder::new(), Recorder::new(), Recorder::new()]),
            timed,
        })
    }

    /// Records one delivery to a subscription of `class`.
    pub fn deliver(&self, class: usize, p: &Payload) {
        if !self.timed || !p.timed {
            self.classes[class].count();
            return;
        }
        let now = now_ns();
        std::hint::black_box(p.body.len());
        self.classes[class].delivered_at(&p.stamp, now);
        if let Some(lanes) = &self.lanes {
            lanes[usize::from(p.lane.min(2))].timed_only(&p.stamp, now);
        }
    }

    fn settled(&self) -> u64 {
        self.classes.iter().map(|r| r.settled()).sum()
    }
}

/// What a system reports when it stops.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// Deliveries dropped by an overflow policy (or lost, for tokio).
    pub dropped: u64,
    /// Handler errors.
    pub failed: u64,
    /// Publishes the system refused.
    pub refused: u64,
    /// topicbus's own books: deliveries routed, and handled by a handler
    /// (`routed = handled + failed + dropped` when nothing is lost).
    pub books: Option<(u64, u64)>,
}

/// A running system.
trait Target: Send {
    /// Publishes one message to topic `k`.
    fn publish(&mut self, k: u32, lane: u8, payload: Payload);
    /// Waits until everything published is settled; false on timeout.
    fn drain(&mut self, sink: &Sink, timeout: Duration) -> bool;
    /// Stops the system and joins its threads.
    fn stop(self: Box<Self>) -> Extra;
}

fn lane_priority(lane: u8) -> Priority {
    match lane {
        0 => Priority::High,
        1 => Priority::Normal,
        _ => Priority::Low,
    }
}

fn behave(behavior: Behavior) -> Result<(), &'static str> {
    match behavior {
        Behavior::Normal => Ok(()),
        Behavior::Slow(d) => {
            std::thread::sleep(d);
            Ok(())
        }
        Behavior::Failing => Err("injected failure"),
        Behavior::Busy(d) => {
            let until = std::time::Instant::now() + d;
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------- topicbus

struct TopicbusTarget {
    bus: Bus<Payload>,
    topics: Vec<Topic>,
    subs: Vec<Subscription>,
    refused: u64,
}

fn topicbus(w: &Workload, sink: &Arc<Sink>, cfg: &RunConfig) -> TopicbusTarget {
    let mut builder = Bus::<Payload>::builder()
        .workers(cfg.workers)
        .capacity(cfg.capacity)
        .overflow(cfg.overflow);
    if cfg.pin {
        builder = builder.on_worker_start(|n| {
            measure::pin_to(n + 1);
        });
    }
    let bus = builder.build().expect("build the bus");
    let subs = w
        .subs
        .iter()
        .map(|s| {
            let mut opts = SubscribeOptions::new()
                .pattern(s.pattern.clone())
                .inline(cfg.inline);
            if let Some(g) = &s.group {
                opts = opts.queue_group(g.clone(), GroupStrategy::RoundRobin);
            }
            if let Some((capacity, overflow)) = s.mailbox {
                opts = opts.capacity(capacity).overflow(overflow);
            }
            let (sink, class, behavior) = (Arc::clone(sink), s.class, s.behavior);
            bus.subscribe_with(opts, move |m: &Message<Payload>| {
                sink.deliver(class, m.payload());
                behave(behavior)
            })
            .expect("subscribe")
        })
        .collect();
    TopicbusTarget {
        bus,
        topics: w.topics.clone(),
        subs,
        refused: 0,
    }
}

impl Target for TopicbusTarget {
    fn publish(&mut self, k: u32, lane: u8, payload: Payload) {
        let topic = &self.topics[k as usize];
        let published = if lane == 1 {
            self.bus.publish(topic, payload)
        } else {
            self.bus.publish_message(
                Message::builder(topic.clone(), payload).priority(lane_priority(lane)),
            )
        };
        if published.is_err() {
            self.refused += 1;
        }
    }

    fn drain(&mut self, _sink: &Sink, timeout: Duration) -> bool {
        measure::poll_until(timeout, || {
            let t = self.bus.stats().total;
            t.settled() >= t.delivered
        })
    }

    fn stop(self: Box<Self>) -> Extra {
        let _ = self.bus.shutdown(Duration::from_secs(30));
        let total = self.bus.stats().total;
        drop(self.subs);
        Extra {
            dropped: total.dropped.total(),
            failed: total.failed,
            refused: self.refused,
            books: Some((total.delivered, total.handled)),
        }
    }
}

// ------------------------------------------------------------- hand-rolled

struct HandMsg {
    _topic: Arc<str>,
    payload: Payload,
}

struct HandRolled {
    topics: Vec<Arc<str>>,
    routes: Vec<Vec<Route>>,
    senders: Vec<Sender<Arc<HandMsg>>>,
    workers: Vec<JoinHandle<u64>>,
    rr: usize,
    expected: u64,
}

fn hand_rolled(w: &Workload, sink: &Arc<Sink>, cfg: &RunConfig) -> Box<dyn Target> {
    let (senders, receivers): (Vec<_>, Vec<_>) = w
        .subs
        .iter()
        .map(|_| bounded::<Arc<HandMsg>>(cfg.capacity))
        .unzip();
    /// A worker's share: (mailbox, class, behavior) per subscription.
    type Share = Vec<(Receiver<Arc<HandMsg>>, usize, Behavior)>;
    let mut shares: Vec<Share> = (0..cfg.workers).map(|_| Vec::new()).collect();
    for (i, r) in receivers.into_iter().enumerate() {
        shares[i % cfg.workers].push((r, w.subs[i].class, w.subs[i].behavior));
    }
    let workers = shares
        .into_iter()
        .enumerate()
        .map(|(n, share)| {
            let sink = Arc::clone(sink);
            let pin = cfg.pin;
            std::thread::spawn(move || {
                if pin {
                    measure::pin_to(n + 1);
                }
                let mut failed = 0;
                let mut sel = Select::new();
                for (r, _, _) in &share {
                    sel.recv(r);
                }
                let mut open = share.len();
                while open > 0 {
                    let op = sel.select();
                    let i = op.index();
                    let (r, class, behavior) = &share[i];
                    match op.recv(r) {
                        Ok(m) => {
                            sink.deliver(*class, &m.payload);
                            failed += u64::from(behave(*behavior).is_err());
                        }
                        Err(_) => {
                            sel.remove(i);
                            open -= 1;
                        }
                    }
                }
                failed
            })
        })
        .collect();
    Box::new(HandRolled {
        topics: w.topics.iter().map(|t| Arc::from(t.as_ref())).collect(),
        routes: w.routes.clone(),
        senders,
        workers,
        rr: 0,
        expected: 0,
    })
}

impl Target for HandRolled {
    fn publish(&mut self, k: u32, _lane: u8, payload: Payload) {
        let k = k as usize;
        let m = Arc::new(HandMsg {
            _topic: Arc::clone(&self.topics[k]),
            payload,
        });
        for route in &self.routes[k] {
            let i = match route {
                Route::One(i) => *i,
                Route::Group(members) => {
                    self.rr = self.rr.wrapping_add(1);
                    members[self.rr % members.len()]
                }
            };
            if self.senders[i].send(Arc::clone(&m)).is_ok() {
                self.expected += 1;
            }
        }
    }

    fn drain(&mut self, sink: &Sink, timeout: Duration) -> bool {
        wait_settled(sink, self.expected, timeout)
    }

    fn stop(self: Box<Self>) -> Extra {
        drop(self.senders);
        let failed = self
            .workers
            .into_iter()
            .map(|w| w.join().unwrap_or(0))
            .sum();
        Extra {
            failed,
            ..Extra::default()
        }
    }
}

fn wait_settled(sink: &Sink, expected: u64, timeout: Duration) -> bool {
    measure::poll_until(timeout, || sink.settled() >= expected)
}

// ------------------------------------------------------------- raw channel

struct RawChannel {
    tx: Option<Sender<Payload>>,
    consumer: Option<JoinHandle<()>>,
    expected: u64,
}

fn raw_channel(sink: &Arc<Sink>, cfg: &RunConfig) -> Box<dyn Target> {
    let (tx, rx) = bounded::<Payload>(cfg.capacity);
    let sink = Arc::clone(sink);
    let pin = cfg.pin;
    let consumer = std::thread::spawn(move || {
        if pin {
            measure::pin_to(1);
        }
        for p in rx {
            sink.deliver(0, &p);
        }
    });
    Box::new(RawChannel {
        tx: Some(tx),
        consumer: Some(consumer),
        expected: 0,
    })
}

impl Target for RawChannel {
    fn publish(&mut self, _k: u32, _lane: u8, payload: Payload) {
        if let Some(tx) = &self.tx {
            if tx.send(payload).is_ok() {
                self.expected += 1;
            }
        }
    }

    fn drain(&mut self, sink: &Sink, timeout: Duration) -> bool {
        wait_settled(sink, self.expected, timeout)
    }

    fn stop(mut self: Box<Self>) -> Extra {
        self.tx = None;
        if let Some(c) = self.consumer.take() {
            let _ = c.join();
        }
        Extra::default()
    }
}

// --------------------------------------------------------- tokio broadcast

struct TokioBroadcast {
    runtime: Option<tokio::runtime::Runtime>,
    senders: Vec<tokio::sync::broadcast::Sender<Arc<Payload>>>,
    expected: u64,
}

fn tokio_broadcast(w: &Workload, sink: &Arc<Sink>, cfg: &RunConfig) -> Box<dyn Target> {
    let next = Arc::new(AtomicUsize::new(0));
    let pin = cfg.pin;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.workers)
        .on_thread_start(move || {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if pin {
                measure::pin_to(n + 1);
            }
        })
        .build()
        .expect("tokio runtime");
    let senders: Vec<_> = w
        .topics
        .iter()
        .map(|_| tokio::sync::broadcast::channel::<Arc<Payload>>(cfg.capacity).0)
        .collect();
    for (k, routes) in w.routes.iter().enumerate() {
        for route in routes {
            // No queue groups in broadcast: a group's members each subscribe.
            let members = match route {
                Route::One(i) => std::slice::from_ref(i),
                Route::Group(m) => m.as_slice(),
            };
            for &i in members {
                let mut rx = senders[k].subscribe();
                let (sink, class, behavior) =
                    (Arc::clone(sink), w.subs[i].class, w.subs[i].behavior);
                runtime.spawn(async move {
                    use tokio::sync::broadcast::error::RecvError;
                    loop {
                        match rx.recv().await {
                            Ok(m) => {
                                sink.deliver(class, &m);
                                let _ = behave(behavior);
                            }
                            Err(RecvError::Lagged(n)) => sink.classes[class].lost(n),
                            Err(RecvError::Closed) => break,
                        }
                    }
                });
            }
        }
    }
    Box::new(TokioBroadcast {
        runtime: Some(runtime),
        senders,
        expected: 0,
    })
}

impl Target for TokioBroadcast {
    fn publish(&mut self, k: u32, _lane: u8, payload: Payload) {
        if let Ok(n) = self.senders[k as usize].send(Arc::new(payload)) {
            self.expected += n as u64;
        }
    }

    fn drain(&mut self, sink: &Sink, timeout: Duration) -> bool {
        wait_settled(sink, self.expected, timeout)
    }

    fn stop(mut self: Box<Self>) -> Extra {
        self.senders.clear();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(10));
        }
        Extra::default()
    }
}

// ------------------------------------------------------------- the runner

/// One measurement.
#[derive(Debug, Clone)]
pub struct Step {
    /// Offered rate in messages per second; `None` runs closed loop (as
    /// fast as the publisher goes, deliveries counted but not timed).
    pub rate: Option<f64>,
    /// How long the publisher runs.
    pub duration: Duration,
    /// Stop after this many messages even if time remains.
    pub max_messages: Option<u64>,
}

/// What one measurement saw.
#[derive(Debug, Clone)]
pub struct StepResult {
    /// The system measured.
    pub system: System,
    /// Offered rate (open loop).
    pub offered: Option<f64>,
    /// Messages published.
    pub sent: u64,
    /// Publishing time (ns).
    pub publish_ns: u64,
    /// From the first publish until every delivery settled (ns).
    pub total_ns: u64,
    /// Whether every delivery settled before the timeout.
    pub drained: bool,
    /// Deliveries per recorder class (timed when open loop).
    pub classes: Vec<Hists>,
    /// Per priority lane, when the workload has lanes.
    pub lanes: Option<[Hists; 3]>,
    /// Duration of each publish call (open loop).
    pub publish_call: Histogram<u64>,
    /// The hiccup meter's wake-up delays during the step.
    pub hiccups: Histogram<u64>,
    /// Process CPU time during the step (ns).
    pub cpu_ns: u64,
    /// RSS before and after (bytes).
    pub rss: (u64, u64),
    /// What the system counted.
    pub extra: Extra,
}

impl StepResult {
    /// Every class merged.
    pub fn all(&self) -> Hists {
        let mut all = Hists::default();
        for c in &self.classes {
            all.merge(c);
        }
        all
    }

    /// Messages per second the publisher achieved.
    pub fn achieved(&self) -> f64 {
        self.sent as f64 * 1e9 / self.publish_ns.max(1) as f64
    }

    /// Messages per second through the whole system (publish to settled).
    pub fn throughput(&self) -> f64 {
        self.sent as f64 * 1e9 / self.total_ns.max(1) as f64
    }

    /// Deliveries made per second through the whole system (lost ones,
    /// tokio broadcast's `Lagged`, do not count).
    pub fn delivery_rate(&self) -> f64 {
        self.all().delivered as f64 * 1e9 / self.total_ns.max(1) as f64
    }

    /// Share of deliveries lost (0 for every system but tokio broadcast).
    pub fn lost_share(&self) -> f64 {
        let h = self.all();
        h.lost as f64 / (h.delivered + h.lost).max(1) as f64
    }

    /// CPU nanoseconds per message.
    pub fn cpu_per_msg(&self) -> f64 {
        self.cpu_ns as f64 / self.sent.max(1) as f64
    }
}

/// Runs one step of `workload` on `system`.
pub fn run_step(system: System, w: &Workload, cfg: &RunConfig, step: &Step) -> StepResult {
    run_step_prepared(system, w, cfg, step, &mut |_| {})
}

/// [`run_step`]; for topicbus, `prepare` gets the bus once its workload's
/// subscriptions are in, before the first message (to add background
/// subscriptions or start churn).
pub fn run_step_prepared(
    system: System,
    w: &Workload,
    cfg: &RunConfig,
    step: &Step,
    prepare: &mut dyn FnMut(&Bus<Payload>),
) -> StepResult {
    let sink = Sink::new(w.classes, !w.lanes.is_empty(), step.rate.is_some());
    let target: Box<dyn Target> = match system {
        System::Topicbus => {
            let t = topicbus(w, &sink, cfg);
            prepare(&t.bus);
            Box::new(t)
        }
        System::HandRolled => hand_rolled(w, &sink, cfg),
        System::RawChannel => raw_channel(&sink, cfg),
        System::TokioBroadcast => tokio_broadcast(w, &sink, cfg),
    };
    let meter = HiccupMeter::start();
    let (rss0, cpu0) = (rss_bytes(), cpu_ns());
    // The publisher runs on a thread of its own (pinned when asked), so the
    // caller's thread is never the one pinned.
    let (mut target, (sent, start, publish_end, publish_call)) = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let mut target = target;
                if cfg.pin {
                    measure::pin_to(0);
                }
                let r = publish_loop(&mut *target, w, cfg, step);
                (target, r)
            })
            .join()
            .expect("publisher thread")
    });
    let timeout = Duration::from_secs(30).max(step.duration * 5);
    let drained = target.drain(&sink, timeout);
    let done = now_ns();
    let (rss1, cpu1) = (rss_bytes(), cpu_ns());
    let extra = target.stop();
    let hiccups = meter.finish();
    StepResult {
        system,
        offered: step.rate,
        sent,
        publish_ns: publish_end - start,
        total_ns: done - start,
        drained,
        classes: sink.classes.iter().map(|r| r.merged()).collect(),
        lanes: sink
            .lanes
            .as_ref()
            .map(|l| [l[0].merged(), l[1].merged(), l[2].merged()]),
        publish_call,
        hiccups,
        cpu_ns: cpu1 - cpu0,
        rss: (rss0, rss1),
        extra,
    }
}

/// The publisher: returns (messages, start, end, publish-call histogram).
fn publish_loop(
    target: &mut dyn Target,
    w: &Workload,
    cfg: &RunConfig,
    step: &Step,
) -> (u64, u64, u64, Histogram<u64>) {
    let mut calls = measure::histogram();
    let seq = &w.sequence;
    let lanes = &w.lanes;
    let body = || vec![0u8; cfg.payload];
    let lane_of = |i: usize| {
        if lanes.is_empty() {
            1
        } else {
            lanes[i % lanes.len()]
        }
    };
    let max = step.max_messages.unwrap_or(u64::MAX);
    let start = now_ns();
    let span = u64::try_from(step.duration.as_nanos()).unwrap_or(u64::MAX);
    let end = start.saturating_add(span);
    let mut i: u64 = 0;
    match step.rate {
        Some(rate) => {
            let pacer = Pacer::new(start, rate);
            let n = ((span as f64 / 1e9) * rate).ceil() as u64;
            // Warm-up: the first tenth (at most one second) is counted, not
            // timed.
            let warm = (n.min(max) / 10).min(rate.ceil() as u64);
            // A system that blocks its publisher (the hand-rolled bus behind
            // a stalled subscriber) would stretch the step without bound:
            // give up at twice the step's length (achieved < offered shows
            // it).
            let give_up = start.saturating_add(span.saturating_mul(2));
            while i < n.min(max) {
                if i.is_multiple_of(64) && now_ns() > give_up {
                    break;
                }
                let intended = pacer.wait(i, &RealClock);
                let sent = now_ns();
                let ix = i as usize;
                let lane = lane_of(ix);
                let payload = Payload {
                    stamp: Stamp { intended, sent },
                    lane,
                    timed: i >= warm,
                    body: body(),
                };
                target.publish(seq[ix % seq.len()], lane, payload);
                measure::record(&mut calls, now_ns() - sent);
                i += 1;
            }
        }
        None => loop {
            // Check the clock once per 256 messages: closed loop measures
            // the system, not the clock.
            if i.is_multiple_of(256) && (now_ns() >= end || i >= max) {
                break;
            }
            if i >= max {
                break;
            }
            let ix = i as usize;
            let lane = lane_of(ix);
            let payload = Payload {
                stamp: Stamp::default(),
                lane,
                timed: false,
                body: body(),
            };
            target.publish(seq[ix % seq.len()], lane, payload);
            i += 1;
        },
    }
    (i, start, now_ns(), calls)
}
