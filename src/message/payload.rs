//! Payload size limits for byte-like payloads (SPEC R7).

/// The default payload limit: 1 MiB.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, PublishError, DEFAULT_MAX_PAYLOAD};
/// let bus = Bus::<Vec<u8>>::builder().workers(1).max_payload(DEFAULT_MAX_PAYLOAD).build()?;
/// assert!(bus.publish("blobs", vec![0; DEFAULT_MAX_PAYLOAD]).is_ok());
/// assert!(matches!(
///     bus.publish("blobs", vec![0; DEFAULT_MAX_PAYLOAD + 1]),
///     Err(PublishError::PayloadTooLarge(_))
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// The size in bytes of a byte-like payload, for size limits.
///
/// Implemented for the byte-like types (`Vec<u8>`, `String`, boxed and shared
/// slices and strings, `&'static` ones, and `bytes::Bytes` with the `bytes`
/// feature). Implement it for your own payload type to have its size limited
/// too; a type without a meaningful byte size need not implement it.
///
/// # Examples
///
/// ```
/// use topicbus::{check_payload_size, PayloadSize, PayloadTooLarge};
///
/// struct Frame(Vec<u8>);
/// impl PayloadSize for Frame {
///     fn payload_size(&self) -> usize {
///         self.0.len()
///     }
/// }
///
/// assert!(check_payload_size(&Frame(vec![0; 16]), 16).is_ok());
/// assert_eq!(
///     check_payload_size(&Frame(vec![0; 17]), 16),
///     Err(PayloadTooLarge { size: 17, max: 16 })
/// );
/// ```
pub trait PayloadSize {
    /// The payload's size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::PayloadSize;
    /// assert_eq!("héllo".payload_size(), 6); // bytes, not characters
    /// assert_eq!(vec![0u8; 10].payload_size(), 10);
    /// ```
    fn payload_size(&self) -> usize;
}

macro_rules! sized_by_len {
    ($($ty:ty),* $(,)?) => {$(
        impl PayloadSize for $ty {
            #[inline]
            fn payload_size(&self) -> usize {
                self.len()
            }
        }
    )*};
}

sized_by_len!(
    Vec<u8>,
    String,
    Box<[u8]>,
    Box<str>,
    std::sync::Arc<[u8]>,
    std::sync::Arc<str>,
    &'static [u8],
    &'static str,
);

#[cfg(feature = "bytes")]
sized_by_len!(bytes::Bytes);

/// A payload is larger than the configured limit.
///
/// # Examples
///
/// ```
/// use topicbus::PayloadTooLarge;
/// let e = PayloadTooLarge { size: 2_000_000, max: 1_048_576 };
/// assert_eq!(
///     e.to_string(),
///     "payload of 2000000 bytes exceeds the limit of 1048576 bytes"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("payload of {size} bytes exceeds the limit of {max} bytes")]
pub struct PayloadTooLarge {
    /// The payload's size in bytes.
    pub size: usize,
    /// The limit in bytes.
    pub max: usize,
}

/// Checks `payload` against a limit of `max` bytes.
///
/// # Errors
///
/// [`PayloadTooLarge`] when the payload is larger than `max`; a payload of
/// exactly `max` bytes is accepted.
///
/// # Examples
///
/// ```
/// use topicbus::{check_payload_size, DEFAULT_MAX_PAYLOAD};
/// assert!(check_payload_size(&vec![0u8; DEFAULT_MAX_PAYLOAD], DEFAULT_MAX_PAYLOAD).is_ok());
/// assert!(check_payload_size(&vec![0u8; DEFAULT_MAX_PAYLOAD + 1], DEFAULT_MAX_PAYLOAD).is_err());
/// ```
#[inline]
pub fn check_payload_size<P: PayloadSize + ?Sized>(
    payload: &P,
    max: usize,
) -> Result<(), PayloadTooLarge> {
    let size = payload.payload_size();
    if size > max {
        Err(PayloadTooLarge { size, max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_like_types_report_their_length() {
        assert_eq!(vec![1u8, 2, 3].payload_size(), 3);
        assert_eq!(String::from("héllo").payload_size(), 6, "bytes, not chars");
        assert_eq!(Box::<[u8]>::from(&[0u8; 5][..]).payload_size(), 5);
        assert_eq!(std::sync::Arc::<str>::from("abc").payload_size(), 3);
        assert_eq!("static".payload_size(), 6);
        assert_eq!(b"xy".as_slice().payload_size(), 2);
    }

    #[test]
    fn the_limit_is_inclusive() {
        assert_eq!(check_payload_size(&vec![0u8; 10], 10), Ok(()));
        assert_eq!(
            check_payload_size(&vec![0u8; 11], 10),
            Err(PayloadTooLarge { size: 11, max: 10 })
        );
        assert_eq!(check_payload_size(&"", 0), Ok(()));
    }

    #[cfg(feature = "bytes")]
    #[test]
    fn bytes_feature() {
        assert_eq!(bytes::Bytes::from_static(b"abcd").payload_size(), 4);
    }
}
