//! The HMAC-SHA256 key ring of signed envelopes.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The length of an envelope's signature: an HMAC-SHA256 tag.
pub(crate) const TAG_LEN: usize = 32;

/// The shortest secret a [`KeyRing`] takes: 256 bits, SHA-256's block
/// strength.
///
/// # Examples
///
/// ```
/// use topicbus::envelope::{KeyRing, MIN_SECRET_LEN};
/// assert!(KeyRing::new("k1", vec![7u8; MIN_SECRET_LEN]).is_ok());
/// assert!(KeyRing::new("k1", vec![7u8; MIN_SECRET_LEN - 1]).is_err());
/// ```
pub const MIN_SECRET_LEN: usize = 32;

/// The longest key id (printable ASCII, no spaces).
///
/// # Examples
///
/// ```
/// use topicbus::envelope::{KeyRing, MAX_KEY_ID_LEN};
/// assert!(KeyRing::new(&"k".repeat(MAX_KEY_ID_LEN), [7u8; 32]).is_ok());
/// assert!(KeyRing::new(&"k".repeat(MAX_KEY_ID_LEN + 1), [7u8; 32]).is_err());
/// ```
pub const MAX_KEY_ID_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// A bad key given to a [`KeyRing`].
///
/// # Examples
///
/// ```
/// use topicbus::envelope::{KeyError, KeyRing};
/// assert!(matches!(KeyRing::new("k1", b"short"), Err(KeyError::SecretTooShort { .. })));
/// assert!(matches!(KeyRing::new("", [7u8; 32]), Err(KeyError::BadKeyId { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A secret shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("secret of {len} bytes is too short: at least {MIN_SECRET_LEN} bytes required")]
    SecretTooShort {
        /// The secret's length.
        len: usize,
    },
    /// A key id that is empty, longer than [`MAX_KEY_ID_LEN`] bytes, or not
    /// printable ASCII without spaces.
    #[error("bad key id {id:?}: 1 to {MAX_KEY_ID_LEN} printable ASCII characters, no spaces")]
    BadKeyId {
        /// The id given.
        id: String,
    },
    /// [`KeyRing::sign_with`] or [`KeyRing::remove`] named a key the ring
    /// does not hold, or [`KeyRing::remove`] named the signing key.
    #[error("key {id:?}: {why}")]
    Key {
        /// The id given.
        id: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The HMAC-SHA256 keys that sign and verify envelopes: one key signs, every
/// key in the ring verifies. Each envelope names the id of the key that
/// signed it.
///
/// Rotation without dropping a message: add the new key to every node's
/// ring ([`with_key`](Self::with_key)); once all nodes have it, switch each
/// node to sign with it ([`sign_with`](Self::sign_with)); once no envelope
/// signed by the old key can still be in flight (Redis streams and tables
/// may hold them for their retention), [`remove`](Self::remove) it.
///
/// Secrets never appear in `Debug` output.
///
/// # Examples
///
/// ```
/// use topicbus::envelope::KeyRing;
/// let ring = KeyRing::new("2026-11", [1u8; 32])?
///     .with_key("2026-12", [2u8; 32])?
///     .sign_with("2026-12")?;
/// assert_eq!(ring.signing_key_id(), "2026-12");
/// assert!(!format!("{ring:?}").contains("[1"));
/// # Ok::<(), topicbus::envelope::KeyError>(())
/// ```
#[derive(Clone)]
pub struct KeyRing {
    signing: Arc<str>,
    /// The signing key's MAC, kept beside the map so that signing (once
    /// per message sent) skips the map lookup.
    signer: HmacSha256,
    keys: HashMap<Arc<str>, HmacSha256>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&str> = self.keys.keys().map(|k| &**k).collect();
        ids.sort_unstable();
        f.debug_struct("KeyRing")
            .field("signing", &self.signing)
            .field("keys", &ids)
            .finish()
    }
}

fn check_id(id: &str) -> Result<(), KeyError> {
    let ok =
        !id.is_empty() && id.len() <= MAX_KEY_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadKeyId { id: id.to_owned() })
    }
}

fn mac(secret: &[u8]) -> Result<HmacSha256, KeyError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(KeyError::SecretTooShort { len: secret.len() });
    }
    // HMAC takes keys of any length: this cannot fail.
    HmacSha256::new_from_slice(secret).map_err(|_| KeyError::SecretTooShort { len: secret.len() })
}

impl KeyRing {
    /// A ring holding one key, which signs.
    ///
    /// # Errors
    ///
    /// [`KeyError::BadKeyId`] for an empty, long or non-printable id;
    /// [`KeyError::SecretTooShort`] for a secret under
    /// [`MIN_SECRET_LEN`] bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::{Codec, KeyRing};
    /// // In production the secret comes from a secret store, never from source.
    /// let secret = [42u8; 32];
    /// let ring = KeyRing::new("2026-12", secret)?;
    /// assert_eq!(ring.signing_key_id(), "2026-12");
    /// let _codec = Codec::signed(ring);
    /// # Ok::<(), topicbus::envelope::KeyError>(())
    /// ```
    pub fn new(id: &str, secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        check_id(id)?;
        let id: Arc<str> = Arc::from(id);
        let signer = mac(secret.as_ref())?;
        let mut keys = HashMap::new();
        keys.insert(Arc::clone(&id), signer.clone());
        Ok(Self {
            signing: id,
            signer,
            keys,
        })
    }

    /// Adds (or replaces) a key that verifies; the signing key stays.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::{Codec, KeyRing};
    /// use topicbus::Message;
    /// let old = Codec::signed(KeyRing::new("old", [1u8; 32])?);
    /// // Step 1 of a rotation: every node learns the new key, still signing with the old one.
    /// let both = Codec::signed(KeyRing::new("old", [1u8; 32])?.with_key("new", [2u8; 32])?);
    /// let msg = Message::builder("a".parse()?, 1u32).build();
    /// assert!(both.decode::<u32>(&old.encode(&msg, "n1")?).is_ok());
    /// assert_eq!(both.keys().map(|k| k.signing_key_id()), Some("old"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_key(mut self, id: &str, secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        check_id(id)?;
        let key = mac(secret.as_ref())?;
        if *self.signing == *id {
            self.signer = key.clone();
        }
        self.keys.insert(Arc::from(id), key);
        Ok(self)
    }

    /// Signs with the key `id` from now on.
    ///
    /// # Errors
    ///
    /// [`KeyError::Key`] when the ring does not hold `id`.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::{Codec, KeyRing};
    /// use topicbus::Message;
    /// let ring = KeyRing::new("old", [1u8; 32])?.with_key("new", [2u8; 32])?;
    /// let verifier = Codec::signed(ring.clone());
    /// // Step 2: once every node has the new key, sign with it.
    /// let signer = Codec::signed(ring.sign_with("new")?);
    /// let msg = Message::builder("a".parse()?, 1u32).build();
    /// assert!(verifier.decode::<u32>(&signer.encode(&msg, "n1")?).is_ok());
    /// assert!(KeyRing::new("k", [1u8; 32])?.sign_with("missing").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sign_with(mut self, id: &str) -> Result<Self, KeyError> {
        match self.keys.get_key_value(id) {
            Some((k, key)) => {
                self.signing = Arc::clone(k);
                self.signer = key.clone();
                Ok(self)
            }
            None => Err(KeyError::Key {
                id: id.to_owned(),
                why: "not in the ring",
            }),
        }
    }

    /// Removes the key `id`: envelopes it signed are rejected from now on.
    ///
    /// # Errors
    ///
    /// [`KeyError::Key`] when the ring does not hold `id`, or `id` signs.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::{Codec, EnvelopeError, KeyRing};
    /// use topicbus::Message;
    /// let old_signer = Codec::signed(KeyRing::new("old", [1u8; 32])?);
    /// let msg = Message::builder("a".parse()?, 1u32).build();
    /// let stale = old_signer.encode(&msg, "n1")?;
    /// // Step 3: no envelope signed by the old key is in flight any more.
    /// let ring = KeyRing::new("old", [1u8; 32])?.with_key("new", [2u8; 32])?.sign_with("new")?.remove("old")?;
    /// let codec = Codec::signed(ring);
    /// assert!(matches!(codec.decode::<u32>(&stale), Err(EnvelopeError::UnknownKey { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(mut self, id: &str) -> Result<Self, KeyError> {
        if *self.signing == *id {
            return Err(KeyError::Key {
                id: id.to_owned(),
                why: "it is the signing key",
            });
        }
        match self.keys.remove(id) {
            Some(_) => Ok(self),
            None => Err(KeyError::Key {
                id: id.to_owned(),
                why: "not in the ring",
            }),
        }
    }

    /// The id of the key that signs.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::envelope::KeyRing;
    /// let ring = KeyRing::new("a", [1u8; 32])?.with_key("b", [2u8; 32])?;
    /// assert_eq!(ring.signing_key_id(), "a"); // adding a key does not switch signing
    /// # Ok::<(), topicbus::envelope::KeyError>(())
    /// ```
    pub fn signing_key_id(&self) -> &str {
        &self.signing
    }

    /// A MAC keyed for signing.
    pub(crate) fn signer(&self) -> HmacSha256 {
        self.signer.clone()
    }

    /// A MAC keyed with `id`, when the ring holds it.
    pub(crate) fn verifier(&self, id: &str) -> Option<HmacSha256> {
        self.keys.get(id).cloned()
    }
}

/// The MAC over `parts`, finished.
pub(crate) fn tag(mut mac: HmacSha256, parts: &[&[u8]]) -> [u8; TAG_LEN] {
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// True when `tag` is the MAC over `parts` (in constant time).
pub(crate) fn verify(mut mac: HmacSha256, parts: &[&[u8]], tag: &[u8]) -> bool {
    for p in parts {
        mac.update(p);
    }
    mac.verify_slice(tag).is_ok()
}
