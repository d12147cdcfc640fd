//! The versioned, signed envelope a [`Message`] travels in between
//! processes (feature `envelope`): what the Redis and PostgreSQL adapters
//! write and read.
//!
//! # The frame
//!
//! ```text
//! "TB" | version (1) | encoding ('P' postcard, 'J' JSON) | key id length k
//!      | key id (k bytes) | HMAC-SHA256 tag (32 bytes, when k > 0) | body
//! ```
//!
//! The body carries the message id, topic, headers, priority, creation
//! time, absolute expiry, correlation and causation ids, from / to /
//! reply-to, attempt, the origin node and the payload, in the compact
//! binary encoding of [`postcard`](https://docs.rs/postcard) or as JSON (ids
//! as UUID text, times as Unix nanoseconds, priority 0 high / 1 normal / 2
//! low). The tag covers every byte of the frame but itself, so the bytes
//! signed are exactly the bytes sent: nothing is re-serialized to check
//! them.
//!
//! A [`Codec`] with a [`KeyRing`] signs what it encodes and accepts only
//! envelopes signed by a key of its ring: unsigned, badly signed or
//! unknown-key envelopes are typed errors, never messages. A codec made
//! with [`Codec::unsigned`] neither signs nor accepts signatures, for a
//! trusted single-tenant setup only.
//!
//! # Examples
//!
//! ```
//! use topicbus::envelope::{Codec, KeyRing};
//! use topicbus::Message;
//!
//! let ring = KeyRing::new("k1", [7u8; 32])?;
//! let codec = Codec::signed(ring);
//! let msg = Message::builder("orders.eu.created".parse()?, String::from("#1"))
//!     .header("tenant", "acme")
//!     .build();
//! let bytes = codec.encode(&msg, "node-a")?;
//! let got = codec.decode::<String>(&bytes)?;
//! assert_eq!(got.message.id(), msg.id());
//! assert_eq!(got.message.headers().get("tenant"), Some("acme"));
//! assert_eq!(got.origin, "node-a");
//!
//! // One flipped bit and it is rejected.
//! let mut forged = bytes.clone();
//! *forged.last_mut().unwrap() ^= 1;
//! assert!(codec.decode::<String>(&forged).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod keys;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Message, MessageId, Priority, Topic, TopicError};

pub use keys::{KeyError, KeyRing, MAX_KEY_ID_LEN, MIN_SECRET_LEN};

use keys::TAG_LEN;

/// The header a message read from another process carries on the local
/// bus: the node that published it (the Redis and PostgreSQL adapters set
/// it).
///
/// # Examples
///
/// ```
/// assert_eq!(topicbus::envelope::ORIGIN_HEADER, "topicbus-origin");
/// ```
pub const ORIGIN_HEADER: &str = "topicbus-origin";

/// The envelope version this build writes and reads.
///
/// # Examples
///
/// ```
/// use topicbus::envelope::{Codec, EnvelopeError, ENVELOPE_VERSION};
/// use topicbus::Message;
/// let codec = Codec::unsigned();
/// let mut bytes = codec.encode(&Message::builder("a".parse()?, 1u32).build(), "n1")?;
/// assert_eq!(bytes[2], ENVELOPE_VERSION); // after the magic "TB"
/// bytes[2] = ENVELOPE_VERSION + 1; // from a newer build
/// assert!(matches!(codec.decode::<u32>(&bytes), Err(EnvelopeError::UnsupportedVersion { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const ENVELOPE_VERSION: u8 = 1;

/// The default largest envelope, encoded: the bus's default payload limit
/// (1 MiB) and 64 KiB for everything else.
///
/// # Examples
///
/// ```
/// use topicbus::envelope::{Codec, EnvelopeError, DEFAULT_MAX_ENVELOPE};
/// use topicbus::Message;
/// let codec = Codec::unsigned(); // limited to DEFAULT_MAX_ENVELOPE
/// let huge = Message::builder("a".parse()?, vec![0u8; DEFAULT_MAX_ENVELOPE]).build();
/// assert!(matches!(codec.encode(&huge, "n1"), Err(EnvelopeError::TooLarge { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const DEFAULT_MAX_ENVELOPE: usize = (1 << 20) + (64 << 10);

const MAGIC: [u8; 2] = *b"TB";
/// Magic, version, encoding, key id length.
const FIXED: usize = 5;

/// How an envelope's body is encoded.
///
/// # Examples
///
/// ```
/// use topicbus::envelope::{Codec, Encoding};
/// let codec = Codec::unsigned().encoding(Encoding::Json);
/// assert_eq!(codec.encoding_used(), Encoding::Json);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Encoding {
    /// [postcard](https://docs.rs/postcard): compact, fast (the default).
    #[default]
    Binary,
    /// JSON: readable with `redis-cli` or `psql`, larger and slower.
    Json,
}

impl Encoding {
    fn tag(self) -> u8 {
        match self {
            Encoding::Binary => b'P',
            Encoding::Json => b'J',
        }
    }

    fn from_tag(tag: u8) -> Result<Self, EnvelopeError> {
        match tag {
            b'P' => Ok(Encoding::Binary),
            b'J' => Ok(Encoding::Json),
            other => Err(EnvelopeError::UnknownEncoding(other)),
        }
    }
}

/// Why an envelope could not be encoded or was rejected.
///
/// # Examples
///
/// ```
/// use topicbus::envelope::{Codec, EnvelopeError};
/// let err = Codec::unsigned().decode::<u32>(b"GET / HTTP/1.1").unwrap_err();
/// assert!(matches!(err, EnvelopeError::NotAnEnvelope));
/// assert!(!err.is_forgery());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope is (or would be) larger than the codec's limit.
    #[error("envelope of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit ([`Codec::max_size`]).
        limit: usize,
    },
    /// The bytes do not start like an envelope.
    #[error("not a topicbus envelope")]
    NotAnEnvelope,
    /// An envelope of a version this build does not read.
    #[error(
        "envelope version {found} is not supported (this build reads version {ENVELOPE_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u8,
    },
    /// An unknown body encoding.
    #[error("unknown envelope encoding {0:#04x}")]
    UnknownEncoding(u8),
    /// The envelope ends before its header does.
    #[error("envelope truncated")]
    Truncated,
    /// An unsigned envelope, and the codec requires signatures.
    #[error("unsigned envelope: this codec accepts signed envelopes only")]
    Unsigned,
    /// A signed envelope, and the codec ([`Codec::unsigned`]) has no keys
    /// to check it with.
    #[error("signed envelope: this codec has no keys to verify it")]
    UnexpectedSignature,
    /// Signed with a key the codec's ring does not hold.
    #[error("envelope signed with unknown key {key_id:?}")]
    UnknownKey {
        /// The key id the envelope names.
        key_id: String,
    },
    /// The signature does not match the envelope: altered or forged.
    #[error("bad envelope signature (key {key_id:?})")]
    BadSignature {
        /// The key id the envelope names.
        key_id: String,
    },
    /// The body does not decode (or a field is out of range).
    #[error("malformed envelope body: {0}")]
    Malformed(String),
    /// The topic (or reply-to topic) is not a valid topic.
    #[error("envelope topic: {0}")]
    Topic(#[from] TopicError),
    /// The payload does not serialize.
    #[error("cannot encode the message: {0}")]
    Encode(String),
}

impl EnvelopeError {
    /// True for the rejections that mean someone without the key wrote it:
    /// unsigned, unknown key, bad signature. Adapters count these apart.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::{Codec, KeyRing};
    /// use topicbus::Message;
    /// let signed = Codec::signed(KeyRing::new("k1", [1u8; 32])?);
    /// let bytes = Codec::unsigned().encode(&Message::builder("a".parse()?, 1u32).build(), "intruder")?;
    /// assert!(signed.decode::<u32>(&bytes).unwrap_err().is_forgery()); // unsigned
    /// assert!(!signed.decode::<u32>(b"garbage").unwrap_err().is_forgery()); // merely broken
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_forgery(&self) -> bool {
        matches!(
            self,
            EnvelopeError::Unsigned
                | EnvelopeError::UnexpectedSignature
                | EnvelopeError::UnknownKey { .. }
                | EnvelopeError::BadSignature { .. }
        )
    }
}

/// A message id in the body: UUID text in JSON, a `u128` in binary.
#[derive(Clone, Copy)]
struct Id(MessageId);

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&self.0)
        } else {
            s.serialize_u128(self.0.as_u128())
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            text.parse()
                .map(Id)
                .map_err(<D::Error as serde::de::Error>::custom)
        } else {
            u128::deserialize(d).map(|v| Id(MessageId::from_u128(v)))
        }
    }
}

/// The body as written: borrowed from the message.
#[derive(Serialize)]
struct BodyRef<'a, T> {
    id: Id,
    topic: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    priority: u8,
    published_at: u64,
    expires_at: Option<u64>,
    correlation_id: Option<Id>,
    causation_id: Option<Id>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    reply_to: Option<&'a str>,
    attempt: u32,
    origin: &'a str,
    payload: &'a T,
}

/// The body as read: the same fields in the same order, owned.
#[derive(Deserialize)]
struct Body<T> {
    id: Id,
    topic: String,
    headers: Vec<(String, String)>,
    priority: u8,
    published_at: u64,
    expires_at: Option<u64>,
    correlation_id: Option<Id>,
    causation_id: Option<Id>,
    from: Option<String>,
    to: Option<String>,
    reply_to: Option<String>,
    attempt: u32,
    origin: String,
    payload: T,
}

/// postcard's output straight onto the end of a caller's buffer (its own
/// `Vec` flavor owns the buffer; its `io::Write` one goes through
/// `write_all` per byte).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Unix nanoseconds; before 1970 reads as 1970, after 2554 as 2554.
fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn from_unix_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn priority_code(p: Priority) -> u8 {
    p.lane() as u8
}

impl<'a, T> BodyRef<'a, T> {
    fn of(msg: &'a Message<T>, origin: &'a str) -> Self {
        Self {
            id: Id(msg.id()),
            topic: msg.topic().as_str(),
            headers: msg.headers().iter().collect(),
            priority: priority_code(msg.priority()),
            published_at: unix_ns(msg.timestamp()),
            expires_at: msg.expires_at().map(unix_ns),
            correlation_id: msg.correlation_id().map(Id),
            causation_id: msg.causation_id().map(Id),
            from: msg.from(),
            to: msg.to(),
            reply_to: msg.reply_to().map(Topic::as_str),
            attempt: msg.attempt(),
            origin,
            payload: msg.payload(),
        }
    }
}

impl<T> Body<T> {
    fn into_decoded(self) -> Result<Decoded<T>, EnvelopeError> {
        let priority = *Priority::ALL
            .get(usize::from(self.priority))
            .ok_or_else(|| EnvelopeError::Malformed(format!("priority {}", self.priority)))?;
        let mut b = Message::builder(Topic::parse(&self.topic)?, self.payload).priority(priority);
        for (name, value) in self.headers {
            b = b.header(name, value);
        }
        if let Some(at) = self.expires_at {
            b = b.expires_at(from_unix_ns(at));
        }
        if let Some(Id(id)) = self.correlation_id {
            b = b.correlation_id(id);
        }
        if let Some(Id(id)) = self.causation_id {
            b = b.causation_id(id);
        }
        if let Some(from) = self.from {
            b = b.from(from);
        }
        if let Some(to) = self.to {
            b = b.to(to);
        }
        if let Some(reply_to) = self.reply_to {
            b = b.reply_to(Topic::parse(&reply_to)?);
        }
        let message = b
            .restore(self.id.0, from_unix_ns(self.published_at), self.attempt)
            .build();
        Ok(Decoded {
            message,
            origin: self.origin,
        })
    }
}

/// A message read from an envelope, and the node that wrote it.
///
/// # Examples
///
/// ```
/// use topicbus::envelope::Codec;
/// use topicbus::Message;
/// let codec = Codec::unsigned();
/// let msg = Message::builder("a.b".parse()?, 7u32).build();
/// let got = codec.decode::<u32>(&codec.encode(&msg, "n1")?)?;
/// assert_eq!((*got.message.payload(), got.origin.as_str()), (7, "n1"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Decoded<T> {
    /// The message, with its original id, creation time, expiry and
    /// attempt.
    pub message: Message<T>,
    /// The node that wrote the envelope (loop prevention).
    pub origin: String,
}

/// Encodes messages into envelopes and decodes them back, signing and
/// verifying with a [`KeyRing`].
///
/// # Examples
///
/// ```
/// use topicbus::envelope::{Codec, EnvelopeError, KeyRing};
/// use topicbus::Message;
/// let alice = Codec::signed(KeyRing::new("k1", [1u8; 32])?);
/// let mallory = Codec::signed(KeyRing::new("k1", [2u8; 32])?);
/// let msg = Message::builder("payments.settled".parse()?, 100u64).build();
/// let forged = mallory.encode(&msg, "evil")?;
/// assert!(matches!(alice.decode::<u64>(&forged), Err(EnvelopeError::BadSignature { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Codec {
    keys: Option<KeyRing>,
    encoding: Encoding,
    max_size: usize,
}

impl Codec {
    /// A codec that signs with `keys` and accepts only envelopes signed by
    /// one of its keys; binary encoding, [`DEFAULT_MAX_ENVELOPE`].
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::{Codec, EnvelopeError, KeyRing};
    /// use topicbus::Message;
    /// let codec = Codec::signed(KeyRing::new("k1", [1u8; 32])?);
    /// let msg = Message::builder("orders.created".parse()?, "o-1".to_string()).build();
    /// let bytes = codec.encode(&msg, "node-a")?;
    /// assert_eq!(codec.decode::<String>(&bytes)?.message.id(), msg.id());
    /// let unsigned = Codec::unsigned().encode(&msg, "node-a")?;
    /// assert!(matches!(codec.decode::<String>(&unsigned), Err(EnvelopeError::Unsigned)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn signed(keys: KeyRing) -> Self {
        Self {
            keys: Some(keys),
            encoding: Encoding::default(),
            max_size: DEFAULT_MAX_ENVELOPE,
        }
    }

    /// A codec that neither signs nor accepts signed envelopes: anyone who
    /// can write to the shared Redis or table can inject messages. For a
    /// trusted, single-tenant setup and tests only.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::Codec;
    /// use topicbus::Message;
    /// let codec = Codec::unsigned(); // trusted single-tenant setups and tests only
    /// let bytes = codec.encode(&Message::builder("a".parse()?, 5u8).build(), "n1")?;
    /// assert_eq!(*codec.decode::<u8>(&bytes)?.message.payload(), 5);
    /// assert!(codec.keys().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unsigned() -> Self {
        Self {
            keys: None,
            encoding: Encoding::default(),
            max_size: DEFAULT_MAX_ENVELOPE,
        }
    }

    /// The body encoding to write (any is read).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::{Codec, Encoding};
    /// use topicbus::Message;
    /// let json = Codec::unsigned().encoding(Encoding::Json);
    /// let bytes = json.encode(&Message::builder("a".parse()?, "hi").build(), "n1")?;
    /// assert!(String::from_utf8_lossy(&bytes).contains("\"hi\"")); // readable in redis-cli
    /// assert_eq!(*Codec::unsigned().decode::<String>(&bytes)?.message.payload(), "hi"); // any encoding is read
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The largest envelope written or read, in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::{Codec, EnvelopeError};
    /// use topicbus::Message;
    /// let small = Codec::unsigned().max_size(128);
    /// let msg = Message::builder("a".parse()?, vec![0u8; 200]).build();
    /// assert!(matches!(small.encode(&msg, "n1"), Err(EnvelopeError::TooLarge { limit: 128, .. })));
    /// let bytes = Codec::unsigned().encode(&msg, "n1")?;
    /// assert!(matches!(small.decode::<Vec<u8>>(&bytes), Err(EnvelopeError::TooLarge { .. }))); // read too
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_size(mut self, bytes: usize) -> Self {
        self.max_size = bytes;
        self
    }

    /// The body encoding written.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::{Codec, Encoding};
    /// assert_eq!(Codec::unsigned().encoding_used(), Encoding::Binary);
    /// assert_eq!(Codec::unsigned().encoding(Encoding::Json).encoding_used(), Encoding::Json);
    /// ```
    pub fn encoding_used(&self) -> Encoding {
        self.encoding
    }

    /// The key ring, when the codec signs.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::{Codec, KeyRing};
    /// let codec = Codec::signed(KeyRing::new("k1", [1u8; 32])?);
    /// assert_eq!(codec.keys().map(|k| k.signing_key_id()), Some("k1"));
    /// assert!(Codec::unsigned().keys().is_none());
    /// # Ok::<(), topicbus::envelope::KeyError>(())
    /// ```
    pub fn keys(&self) -> Option<&KeyRing> {
        self.keys.as_ref()
    }

    /// Encodes `msg` as written by node `origin`.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError::Encode`] when the payload does not serialize in the
    /// encoding (JSON wants string map keys, say);
    /// [`EnvelopeError::TooLarge`] when the envelope would exceed
    /// [`max_size`](Self::max_size).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::Codec;
    /// use topicbus::{Message, Priority};
    /// let codec = Codec::unsigned();
    /// let msg = Message::builder("alerts.disk".parse()?, 93u8).priority(Priority::High).header("host", "db-1").build();
    /// let bytes = codec.encode(&msg, "node-a")?;
    /// assert_eq!(&bytes[..2], b"TB");
    /// let back = codec.decode::<u8>(&bytes)?.message;
    /// assert_eq!((back.priority(), back.headers().get("host")), (Priority::High, Some("db-1")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode<T: Serialize>(
        &self,
        msg: &Message<T>,
        origin: &str,
    ) -> Result<Vec<u8>, EnvelopeError> {
        // Room for a small message without growing.
        let mut out = Vec::with_capacity(256);
        self.encode_into(msg, origin, &mut out)?;
        Ok(out)
    }

    /// Appends the envelope of `msg`, as written by node `origin`, to
    /// `out`: [`encode`](Self::encode) without a new buffer per message,
    /// for a writer that reuses one.
    ///
    /// ```
    /// use topicbus::envelope::{Codec, KeyRing};
    /// use topicbus::{Message, Topic};
    ///
    /// let codec = Codec::signed(KeyRing::new("k1", [7u8; 32])?);
    /// let mut buf = Vec::new();
    /// for n in 0..3u32 {
    ///     buf.clear();
    ///     let msg = Message::builder(Topic::parse("jobs.new")?, n).build();
    ///     codec.encode_into(&msg, "n1", &mut buf)?;
    ///     assert_eq!(*codec.decode::<u32>(&buf)?.message.payload(), n);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode); on an error `out` is left as it was.
    pub fn encode_into<T: Serialize>(
        &self,
        msg: &Message<T>,
        origin: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), EnvelopeError> {
        let start = out.len();
        let result = self.append(msg, origin, out, start);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn append<T: Serialize>(
        &self,
        msg: &Message<T>,
        origin: &str,
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), EnvelopeError> {
        let kid = self.keys.as_ref().map_or("", KeyRing::signing_key_id);
        // Key ids are at most MAX_KEY_ID_LEN (32) bytes: the length fits.
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[ENVELOPE_VERSION, self.encoding.tag(), kid.len() as u8]);
        out.extend_from_slice(kid.as_bytes());
        let tag_at = out.len();
        if self.keys.is_some() {
            out.extend_from_slice(&[0; TAG_LEN]);
        }
        let body_at = out.len();
        let body = BodyRef::of(msg, origin);
        match self.encoding {
            Encoding::Binary => {
                postcard::serialize_with_flavor(&body, Append(out))
                    .map_err(|e| EnvelopeError::Encode(e.to_string()))?;
            }
            Encoding::Json => {
                serde_json::to_writer(&mut *out, &body)
                    .map_err(|e| EnvelopeError::Encode(e.to_string()))?;
            }
        }
        let size = out.len() - start;
        if size > self.max_size {
            return Err(EnvelopeError::TooLarge {
                size,
                limit: self.max_size,
            });
        }
        if let Some(keys) = &self.keys {
            let tag = keys::tag(keys.signer(), &[&out[start..tag_at], &out[body_at..]]);
            out[tag_at..body_at].copy_from_slice(&tag);
        }
        Ok(())
    }

    /// Decodes and checks an envelope: size, version, signature, then the
    /// body, whose topics are parsed with the default limits.
    ///
    /// # Errors
    ///
    /// Every [`EnvelopeError`] but `Encode`; never a panic, whatever the
    /// bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::{Codec, EnvelopeError};
    /// use topicbus::Message;
    /// let codec = Codec::unsigned();
    /// let bytes = codec.encode(&Message::builder("a".parse()?, 1u32).build(), "node-a")?;
    /// let d = codec.decode::<u32>(&bytes)?;
    /// assert_eq!((*d.message.payload(), d.origin.as_str()), (1, "node-a"));
    /// assert!(matches!(codec.decode::<u32>(&bytes[..bytes.len() - 1]), Err(_))); // never a panic
    /// assert!(matches!(codec.decode::<u32>(b"hello"), Err(EnvelopeError::NotAnEnvelope)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<Decoded<T>, EnvelopeError> {
        let body = self.open(bytes)?;
        match Encoding::from_tag(bytes[3])? {
            Encoding::Binary => match postcard::take_from_bytes::<Body<T>>(body) {
                Ok((b, [])) => b.into_decoded(),
                Ok((_, rest)) => Err(EnvelopeError::Malformed(format!(
                    "{} bytes after the body",
                    rest.len()
                ))),
                Err(e) => Err(EnvelopeError::Malformed(e.to_string())),
            },
            Encoding::Json => serde_json::from_slice::<Body<T>>(body)
                .map_err(|e| EnvelopeError::Malformed(e.to_string()))?
                .into_decoded(),
        }
    }

    /// Checks the frame and its signature; returns the body.
    fn open<'b>(&self, bytes: &'b [u8]) -> Result<&'b [u8], EnvelopeError> {
        if bytes.len() > self.max_size {
            return Err(EnvelopeError::TooLarge {
                size: bytes.len(),
                limit: self.max_size,
            });
        }
        let Some(fixed) = bytes.get(..FIXED) else {
            let n = bytes.len().min(MAGIC.len());
            return Err(if bytes[..n] == MAGIC[..n] {
                EnvelopeError::Truncated
            } else {
                EnvelopeError::NotAnEnvelope
            });
        };
        if fixed[..2] != MAGIC {
            return Err(EnvelopeError::NotAnEnvelope);
        }
        if fixed[2] != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion { found: fixed[2] });
        }
        Encoding::from_tag(fixed[3])?;
        let klen = usize::from(fixed[4]);
        if klen > MAX_KEY_ID_LEN {
            return Err(EnvelopeError::Malformed(format!("key id of {klen} bytes")));
        }
        let kid = bytes
            .get(FIXED..FIXED + klen)
            .ok_or(EnvelopeError::Truncated)?;
        match (&self.keys, klen) {
            (None, 0) => Ok(&bytes[FIXED..]),
            (Some(_), 0) => Err(EnvelopeError::Unsigned),
            (None, _) => Err(EnvelopeError::UnexpectedSignature),
            (Some(ring), _) => {
                let tag_at = FIXED + klen;
                let body_at = tag_at + TAG_LEN;
                let tag = bytes.get(tag_at..body_at).ok_or(EnvelopeError::Truncated)?;
                let key_id = String::from_utf8_lossy(kid).into_owned();
                let mac = std::str::from_utf8(kid)
                    .ok()
                    .and_then(|id| ring.verifier(id))
                    .ok_or_else(|| EnvelopeError::UnknownKey {
                        key_id: key_id.clone(),
                    })?;
                if keys::verify(mac, &[&bytes[..tag_at], &bytes[body_at..]], tag) {
                    Ok(&bytes[body_at..])
                } else {
                    Err(EnvelopeError::BadSignature { key_id })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
