//! Messages: an immutable envelope around a payload.
//!
//! A [`Message<T>`] carries a unique, time-ordered [`MessageId`], its
//! [`Topic`], the payload, a small [`Headers`] map, its creation time, a
//! [`Priority`], an optional expiry, correlation and causation ids for
//! tracing conversations, `from` / `to` / `reply_to` addressing and the
//! delivery attempt. It is built once with a [`MessageBuilder`] and never
//! changes afterwards: the bus shares one `Arc<Message<T>>` between every
//! subscriber it is delivered to.

mod headers;
mod id;
mod payload;

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use headers::{HeaderText, Headers};
pub use id::{MessageId, ParseMessageIdError};
pub use payload::{check_payload_size, PayloadSize, PayloadTooLarge, DEFAULT_MAX_PAYLOAD};

use crate::topic::Topic;

/// Delivery priority: each subscription serves its high lane before normal
/// before low (with a guard against starving the lower lanes).
///
/// # Examples
///
/// ```
/// use topicbus::Priority;
/// assert_eq!(Priority::default(), Priority::Normal);
/// assert!(Priority::High > Priority::Normal && Priority::Normal > Priority::Low);
/// assert_eq!(Priority::ALL.map(Priority::lane), [0, 1, 2]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// Served first.
    High,
    /// The default.
    #[default]
    Normal,
    /// Served last.
    Low,
}

impl Priority {
    /// Every priority, highest first (lane order).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Priority;
    /// let names: Vec<String> = Priority::ALL.iter().map(|p| format!("{p:?}")).collect();
    /// assert_eq!(names, ["High", "Normal", "Low"]);
    /// ```
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The lane index: 0 for high, 1 for normal, 2 for low.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Priority;
    /// assert_eq!(Priority::High.lane(), 0);
    /// assert_eq!(Priority::Normal.lane(), 1);
    /// assert_eq!(Priority::Low.lane(), 2);
    /// ```
    #[inline]
    pub const fn lane(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Priority {
    /// Higher priority compares greater.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.lane().cmp(&self.lane())
    }
}

/// An immutable message: payload plus envelope.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Message, Priority, Topic};
///
/// let order = Message::builder(Topic::parse("orders.eu.created")?, "order #1")
///     .priority(Priority::High)
///     .header("tenant", "acme")
///     .ttl(Duration::from_secs(30))
///     .from("checkout")
///     .build();
/// assert_eq!(*order.payload(), "order #1");
/// assert_eq!(order.headers().get("tenant"), Some("acme"));
/// assert!(!order.is_expired_at(order.timestamp() + Duration::from_secs(29)));
/// assert!(order.is_expired_at(order.timestamp() + Duration::from_secs(30)));
///
/// // A follow-up message caused by the first one continues its conversation.
/// let shipped = Message::builder(Topic::parse("orders.eu.shipped")?, "parcel 9")
///     .caused_by(&order)
///     .build();
/// assert_eq!(shipped.causation_id(), Some(order.id()));
/// assert_eq!(shipped.correlation_id(), Some(order.id()));
/// # Ok::<(), topicbus::TopicError>(())
/// ```
pub struct Message<T> {
    id: MessageId,
    topic: Topic,
    payload: T,
    timestamp: SystemTime,
    expires_at: Option<SystemTime>,
    /// The rarely used parts, out of line so that a plain message stays
    /// small (under 128 bytes with a small payload: one small allocation,
    /// cheap to free from another thread).
    extras: Option<Box<Extras>>,
    priority: Priority,
    attempt: u32,
    /// Set by `Bus::publish_confirmed`: where each subscription reports its
    /// outcome.
    pub(crate) tracker: Option<Arc<crate::bus::Tracker>>,
}

/// The optional envelope parts of a [`Message`].
#[derive(Debug, Default)]
struct Extras {
    headers: Headers,
    correlation_id: Option<MessageId>,
    causation_id: Option<MessageId>,
    from: Option<Arc<str>>,
    to: Option<Arc<str>>,
    reply_to: Option<Topic>,
    deliver_at: Option<SystemTime>,
}

/// The headers of a message without extras.
static NO_HEADERS: Headers = Headers::new();

impl<T> Message<T> {
    /// Starts a message for `topic` carrying `payload`.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Priority, Topic};
    /// let m = Message::builder(Topic::parse("orders.eu.created")?, 42u32)
    ///     .priority(Priority::High)
    ///     .build();
    /// assert_eq!(m.topic().as_str(), "orders.eu.created");
    /// assert_eq!((*m.payload(), m.priority()), (42, Priority::High));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn builder(topic: Topic, payload: T) -> MessageBuilder<T> {
        MessageBuilder {
            topic,
            payload,
            headers: Headers::new(),
            timestamp: None,
            id: None,
            priority: Priority::Normal,
            expiry: Expiry::Never,
            correlation_id: None,
            causation_id: None,
            from: None,
            to: None,
            reply_to: None,
            delivery: Delivery::Now,
            attempt: 1,
        }
    }

    /// A plain message (no headers, expiry or addressing) created now, or
    /// at `timestamp` when the bus runs on its own clock: the publish fast
    /// path, which skips moving a whole [`MessageBuilder`] around.
    #[inline]
    pub(crate) fn plain(
        topic: Topic,
        payload: T,
        timestamp: Option<SystemTime>,
        tracker: Option<Arc<crate::bus::Tracker>>,
    ) -> Self {
        let (id, timestamp) = match timestamp {
            Some(at) => (MessageId::new(), at),
            None => {
                let now = crate::time::unix_nanos();
                (MessageId::at(now), crate::time::from_unix_nanos(now))
            }
        };
        Message {
            id,
            topic,
            payload,
            timestamp,
            expires_at: None,
            extras: None,
            priority: Priority::Normal,
            attempt: 1,
            tracker,
        }
    }

    /// The unique, time-ordered id.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let a = Message::builder(Topic::parse("a")?, ()).build();
    /// let b = Message::builder(Topic::parse("a")?, ()).build();
    /// assert!(a.id() < b.id()); // unique and time-ordered
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The topic it was published to.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("users.signup")?, ()).build();
    /// assert_eq!(m.topic().levels().collect::<Vec<_>>(), ["users", "signup"]);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The payload.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("a")?, String::from("hello")).build();
    /// assert_eq!(m.payload(), "hello");
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// Takes the payload out.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("a")?, vec![1u8, 2, 3]).build();
    /// let bytes: Vec<u8> = m.into_payload();
    /// assert_eq!(bytes, [1, 2, 3]);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn into_payload(self) -> T {
        self.payload
    }

    /// The headers.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("a")?, ())
    ///     .header("content-type", "text/plain")
    ///     .build();
    /// assert_eq!(m.headers().get("content-type"), Some("text/plain"));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn headers(&self) -> &Headers {
        self.extras.as_ref().map_or(&NO_HEADERS, |e| &e.headers)
    }

    /// Sets a header on a message not yet published (adapters mark what
    /// they import).
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn set_header(&mut self, name: impl Into<HeaderText>, value: impl Into<HeaderText>) {
        self.extras
            .get_or_insert_with(Box::default)
            .headers
            .insert(name, value);
    }

    /// When the message was created (wall clock).
    ///
    /// Unless set with [`MessageBuilder::timestamp`] (or by a bus with its
    /// own [`Clock`](crate::Clock)), this is read from the CPU's time-stamp
    /// counter, kept in step with the system clock (taken again at most
    /// every millisecond): it is never earlier than a `SystemTime::now()`
    /// read before the message was built, and later than one read after by
    /// at most the width of the clock's last pairing with the system clock
    /// (≈ 10 ns unless that pairing was interrupted).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use topicbus::{Message, Topic};
    /// let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let m = Message::builder(Topic::parse("a")?, ()).timestamp(at).build();
    /// assert_eq!(m.timestamp(), at);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn timestamp(&self) -> SystemTime {
        self.timestamp
    }

    /// The delivery priority.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Priority, Topic};
    /// let m = Message::builder(Topic::parse("a")?, ()).build();
    /// assert_eq!(m.priority(), Priority::Normal);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// When the message expires, if ever.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("a")?, ()).ttl(Duration::from_secs(30)).build();
    /// assert_eq!(m.expires_at(), Some(m.timestamp() + Duration::from_secs(30)));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// True when the message has expired at `now` (an expiry exactly at
    /// `now` counts as expired). Never true for a message without expiry.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("a")?, ()).ttl(Duration::from_secs(30)).build();
    /// assert!(!m.is_expired_at(m.timestamp()));
    /// assert!(m.is_expired_at(m.timestamp() + Duration::from_secs(30)));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The conversation this message belongs to.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let request = Message::builder(Topic::parse("quote.request")?, ()).build();
    /// let reply = Message::builder(Topic::parse("quote.reply")?, ())
    ///     .correlation_id(request.id())
    ///     .build();
    /// assert_eq!(reply.correlation_id(), Some(request.id()));
    /// assert_eq!(request.correlation_id(), None);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn correlation_id(&self) -> Option<MessageId> {
        self.extras.as_ref().and_then(|e| e.correlation_id)
    }

    /// The message that caused this one.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let order = Message::builder(Topic::parse("orders.created")?, ()).build();
    /// let invoice = Message::builder(Topic::parse("invoices.created")?, ())
    ///     .caused_by(&order)
    ///     .build();
    /// assert_eq!(invoice.causation_id(), Some(order.id()));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn causation_id(&self) -> Option<MessageId> {
        self.extras.as_ref().and_then(|e| e.causation_id)
    }

    /// The sending entity, if given.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("chat")?, ()).from("alice").build();
    /// assert_eq!(m.from(), Some("alice"));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn from(&self) -> Option<&str> {
        self.extras.as_ref().and_then(|e| e.from.as_deref())
    }

    /// The addressed entity, if given (`None`: a broadcast).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let direct = Message::builder(Topic::parse("chat")?, ()).to("bob").build();
    /// let broadcast = Message::builder(Topic::parse("chat")?, ()).build();
    /// assert_eq!((direct.to(), broadcast.to()), (Some("bob"), None));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn to(&self) -> Option<&str> {
        self.extras.as_ref().and_then(|e| e.to.as_deref())
    }

    /// Where replies should be published, if anywhere.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("quote.request")?, ())
    ///     .reply_to(Topic::parse("quote.reply.client-1")?)
    ///     .build();
    /// assert_eq!(m.reply_to().map(|t| t.as_str()), Some("quote.reply.client-1"));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn reply_to(&self) -> Option<&Topic> {
        self.extras.as_ref().and_then(|e| e.reply_to.as_ref())
    }

    /// When the message is to be delivered, if it was published with a
    /// delay (see [`MessageBuilder::deliver_at`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("reminders")?, ())
    ///     .delay(Duration::from_secs(60))
    ///     .build();
    /// assert_eq!(m.deliver_at(), Some(m.timestamp() + Duration::from_secs(60)));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn deliver_at(&self) -> Option<SystemTime> {
        self.extras.as_ref().and_then(|e| e.deliver_at)
    }

    /// The delivery attempt, starting at 1.
    ///
    /// Inside a handler this is the attempt running now: a message retried
    /// by the subscription's [`RetryPolicy`](crate::RetryPolicy) shows 2 on
    /// its first retry, and so on. Elsewhere it is the attempt the message
    /// was published (or restored) with.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("a")?, ()).build();
    /// assert_eq!(m.attempt(), 1);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn attempt(&self) -> u32 {
        let (at, attempt) = DELIVERY.with(Cell::get);
        if at == self as *const Self as usize {
            attempt
        } else {
            self.attempt
        }
    }

    /// The attempt it was published (or restored) with.
    pub(crate) fn first_attempt(&self) -> u32 {
        self.attempt
    }
}

thread_local! {
    /// The message a handler on this thread is running a retry of, and the
    /// attempt (see [`Message::attempt`]); set only for retries.
    static DELIVERY: Cell<(usize, u32)> = const { Cell::new((0, 0)) };
}

/// Makes [`Message::attempt`] report `attempt` for one message on this
/// thread until dropped.
pub(crate) struct AttemptScope((usize, u32));

impl AttemptScope {
    pub(crate) fn enter<T>(msg: &Message<T>, attempt: u32) -> Self {
        Self(DELIVERY.with(|d| d.replace((msg as *const Message<T> as usize, attempt))))
    }
}

impl Drop for AttemptScope {
    fn drop(&mut self) {
        DELIVERY.with(|d| d.set(self.0));
    }
}

impl<T: fmt::Debug> fmt::Debug for Message<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("payload", &self.payload)
            .field("headers", self.headers())
            .field("priority", &self.priority)
            .field("expires_at", &self.expires_at)
            .field("correlation_id", &self.correlation_id())
            .field("causation_id", &self.causation_id())
            .field("from", &self.from())
            .field("to", &self.to())
            .field("reply_to", &self.reply_to())
            .field("deliver_at", &self.deliver_at())
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
enum Delivery {
    Now,
    After(Duration),
    At(SystemTime),
}

#[derive(Debug, Clone, Copy)]
enum Expiry {
    Never,
    After(Duration),
    At(SystemTime),
}

/// Builds a [`Message`]. Everything but the topic and payload is optional.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Message, Priority, Topic};
/// let m = Message::builder(Topic::parse("payments.settled")?, 1200u64)
///     .header("currency", "EUR")
///     .priority(Priority::High)
///     .ttl(Duration::from_secs(5))
///     .from("ledger")
///     .build();
/// assert_eq!(m.headers().get("currency"), Some("EUR"));
/// assert!(m.expires_at().is_some());
/// # Ok::<(), topicbus::TopicError>(())
/// ```
#[derive(Debug)]
pub struct MessageBuilder<T> {
    topic: Topic,
    payload: T,
    headers: Headers,
    timestamp: Option<SystemTime>,
    id: Option<MessageId>,
    priority: Priority,
    expiry: Expiry,
    correlation_id: Option<MessageId>,
    causation_id: Option<MessageId>,
    from: Option<Arc<str>>,
    to: Option<Arc<str>>,
    reply_to: Option<Topic>,
    delivery: Delivery,
    attempt: u32,
}

impl<T> MessageBuilder<T> {
    /// Adds (or replaces) a header.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("a")?, ())
    ///     .header("k", "first")
    ///     .header("k", "second")
    ///     .build();
    /// assert_eq!(m.headers().get("k"), Some("second"));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn header(mut self, name: impl Into<HeaderText>, value: impl Into<HeaderText>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Replaces all headers.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Headers, Message, Topic};
    /// let h: Headers = [("a", "1"), ("b", "2")].into_iter().collect();
    /// let m = Message::builder(Topic::parse("x")?, ()).headers(h.clone()).build();
    /// assert_eq!(m.headers(), &h);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the priority (default [`Priority::Normal`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Priority, Topic};
    /// let m = Message::builder(Topic::parse("alerts")?, ()).priority(Priority::High).build();
    /// assert_eq!(m.priority(), Priority::High);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Expires the message `ttl` after its creation time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("quotes")?, ()).ttl(Duration::from_millis(500)).build();
    /// assert!(m.is_expired_at(m.timestamp() + Duration::from_millis(500)));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.expiry = Expiry::After(ttl);
        self
    }

    /// Expires the message at `at`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use topicbus::{Message, Topic};
    /// let at = SystemTime::now() + Duration::from_secs(10);
    /// let m = Message::builder(Topic::parse("quotes")?, ()).expires_at(at).build();
    /// assert_eq!(m.expires_at(), Some(at));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expiry = Expiry::At(at);
        self
    }

    /// Sets the correlation id (the conversation).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, MessageId, Topic};
    /// let conversation = MessageId::new();
    /// let m = Message::builder(Topic::parse("a")?, ()).correlation_id(conversation).build();
    /// assert_eq!(m.correlation_id(), Some(conversation));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn correlation_id(mut self, id: MessageId) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id (the parent message).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, MessageId, Topic};
    /// let parent = MessageId::new();
    /// let m = Message::builder(Topic::parse("a")?, ()).causation_id(parent).build();
    /// assert_eq!(m.causation_id(), Some(parent));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn causation_id(mut self, id: MessageId) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Marks this message as caused by `parent`: its causation id is the
    /// parent's id and its correlation id the parent's (or, if the parent
    /// starts the conversation, the parent's id).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let order = Message::builder(Topic::parse("orders.created")?, ()).build();
    /// let invoice = Message::builder(Topic::parse("invoices.created")?, ()).caused_by(&order).build();
    /// let mail = Message::builder(Topic::parse("mail.sent")?, ()).caused_by(&invoice).build();
    /// assert_eq!(mail.causation_id(), Some(invoice.id()));
    /// assert_eq!(mail.correlation_id(), Some(order.id())); // the conversation's start
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn caused_by<P>(mut self, parent: &Message<P>) -> Self {
        self.causation_id = Some(parent.id);
        self.correlation_id = Some(parent.correlation_id().unwrap_or(parent.id));
        self
    }

    /// Sets the sending entity.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("chat")?, ()).from("alice").build();
    /// assert_eq!(m.from(), Some("alice"));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn from(mut self, entity: impl Into<Arc<str>>) -> Self {
        self.from = Some(entity.into());
        self
    }

    /// Addresses the message to one entity.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("chat")?, ()).to("bob").build();
    /// assert_eq!(m.to(), Some("bob"));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn to(mut self, entity: impl Into<Arc<str>>) -> Self {
        self.to = Some(entity.into());
        self
    }

    /// Sets where replies should be published.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let inbox = Topic::parse("replies.me")?;
    /// let m = Message::builder(Topic::parse("ask")?, ()).reply_to(inbox.clone()).build();
    /// assert_eq!(m.reply_to(), Some(&inbox));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn reply_to(mut self, topic: Topic) -> Self {
        self.reply_to = Some(topic);
        self
    }

    /// Delivers the message `delay` after its creation time instead of at
    /// once: the bus's timer publishes it then, to the subscriptions
    /// matching at that time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Clock, ManualClock, Message};
    /// let clock = ManualClock::shared();
    /// let bus = Bus::<&str>::builder().workers(1).clock(clock.clone()).build()?;
    /// let rx = bus.receiver("reminders")?;
    /// bus.publish_message(
    ///     Message::builder("reminders".parse()?, "stand up")
    ///         .timestamp(clock.wall())
    ///         .delay(Duration::from_secs(60)),
    /// )?;
    /// assert!(rx.try_recv().is_err());
    /// clock.advance(Duration::from_secs(60));
    /// assert_eq!(*rx.recv_timeout(Duration::from_secs(10))?.payload(), "stand up");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delivery = Delivery::After(delay);
        self
    }

    /// Delivers the message at `at` (wall clock) instead of at once; see
    /// [`delay`](Self::delay).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use topicbus::{Message, Topic};
    /// let at = SystemTime::now() + Duration::from_secs(3600);
    /// let m = Message::builder(Topic::parse("reminders")?, ()).deliver_at(at).build();
    /// assert_eq!(m.deliver_at(), Some(at));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn deliver_at(mut self, at: SystemTime) -> Self {
        self.delivery = Delivery::At(at);
        self
    }

    /// Sets the creation time (default: the wall clock at [`build`]); for
    /// injected clocks. The id is still fresh and, like every id, carries the
    /// real wall clock, so ids stay in order whatever clocks messages use.
    ///
    /// [`build`]: MessageBuilder::build
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use topicbus::{Message, Topic};
    /// let at = UNIX_EPOCH + Duration::from_secs(86_400);
    /// let m = Message::builder(Topic::parse("a")?, ()).timestamp(at).ttl(Duration::from_secs(1)).build();
    /// assert_eq!(m.expires_at(), Some(at + Duration::from_secs(1))); // counted from the timestamp
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn timestamp(mut self, at: SystemTime) -> Self {
        self.timestamp = Some(at);
        self
    }

    /// Restores a message read back from storage: keeps its id, creation
    /// time and attempt instead of minting new ones.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic};
    /// let original = Message::builder(Topic::parse("jobs")?, "payload").build();
    /// let restored = Message::builder(original.topic().clone(), *original.payload())
    ///     .restore(original.id(), original.timestamp(), 3)
    ///     .build();
    /// assert_eq!((restored.id(), restored.attempt()), (original.id(), 3));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    #[must_use]
    pub fn restore(mut self, id: MessageId, created: SystemTime, attempt: u32) -> Self {
        self.id = Some(id);
        self.timestamp = Some(created);
        self.attempt = attempt.max(1);
        self
    }

    /// Builds the message: stamps the creation time (unless given) and a
    /// fresh id (unless restored), and resolves a TTL into an expiry time
    /// counted from the creation time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Message, Topic};
    /// let m = Message::builder(Topic::parse("a")?, ()).ttl(Duration::from_secs(1)).build();
    /// assert_eq!(m.expires_at(), Some(m.timestamp() + Duration::from_secs(1)));
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn build(self) -> Message<T> {
        // One clock reading serves both the id and the timestamp (ids always
        // follow the real clock, even when a timestamp is given).
        let (id, timestamp) = match (self.id, self.timestamp) {
            (Some(id), Some(at)) => (id, at),
            (None, Some(at)) => (MessageId::new(), at),
            (id, None) => {
                let now = crate::time::unix_nanos();
                let id = id.unwrap_or_else(|| MessageId::at(now));
                (id, crate::time::from_unix_nanos(now))
            }
        };
        let expires_at = match self.expiry {
            Expiry::Never => None,
            // A TTL so long that the time overflows never expires.
            Expiry::After(ttl) => timestamp.checked_add(ttl),
            Expiry::At(at) => Some(at),
        };
        let deliver_at = match self.delivery {
            Delivery::Now => None,
            Delivery::After(d) => timestamp.checked_add(d),
            Delivery::At(at) => Some(at),
        };
        let extras = (!self.headers.is_empty()
            || deliver_at.is_some()
            || self.correlation_id.is_some()
            || self.causation_id.is_some()
            || self.from.is_some()
            || self.to.is_some()
            || self.reply_to.is_some())
        .then(|| {
            Box::new(Extras {
                headers: self.headers,
                correlation_id: self.correlation_id,
                causation_id: self.causation_id,
                from: self.from,
                to: self.to,
                reply_to: self.reply_to,
                deliver_at,
            })
        });
        Message {
            id,
            topic: self.topic,
            payload: self.payload,
            timestamp,
            expires_at,
            extras,
            priority: self.priority,
            attempt: self.attempt,
            tracker: None,
        }
    }

    /// Builds the message after checking the payload against `max` bytes.
    ///
    /// # Errors
    ///
    /// [`PayloadTooLarge`] when the payload is larger than `max`; nothing is
    /// built.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{Message, Topic, DEFAULT_MAX_PAYLOAD};
    /// let t = Topic::parse("blobs.put")?;
    /// let big = vec![0u8; DEFAULT_MAX_PAYLOAD + 1];
    /// let err = Message::builder(t, big).build_checked(DEFAULT_MAX_PAYLOAD).unwrap_err();
    /// assert_eq!(err.size, DEFAULT_MAX_PAYLOAD + 1);
    /// # Ok::<(), topicbus::TopicError>(())
    /// ```
    pub fn build_checked(self, max: usize) -> Result<Message<T>, PayloadTooLarge>
    where
        T: PayloadSize,
    {
        check_payload_size(&self.payload, max)?;
        Ok(self.build())
    }
}

#[cfg(test)]
mod tests;
