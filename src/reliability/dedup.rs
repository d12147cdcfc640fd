//! Per-subscription deduplication windows.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Deduplication settings: a message whose key was seen within the window
/// is not delivered again (counted in
/// [`Counts::duplicates`](crate::Counts::duplicates)). The window is
/// bounded both by age and by count; past the count the oldest keys are
/// forgotten first.
///
/// The key is the message id unless a content key is given with
/// [`SubscribeOptions::dedup_by`](crate::SubscribeOptions::dedup_by).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::Dedup;
/// let window = Dedup::new(Duration::from_secs(60), 100_000);
/// assert_eq!(window.max_age(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dedup {
    max_age: Duration,
    max_keys: usize,
}

impl Dedup {
    /// Remembers keys for `max_age`, at most `max_keys` of them.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Dedup, SubscribeOptions};
    /// let window = Dedup::new(Duration::from_secs(300), 100_000); // 5 minutes, at most 100K ids
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let _rx = bus.receiver_with(SubscribeOptions::new().pattern("payments.#").dedup(window))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(max_age: Duration, max_keys: usize) -> Self {
        Self {
            max_age,
            max_keys: max_keys.max(1),
        }
    }

    /// How long a key is remembered.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::Dedup;
    /// assert_eq!(Dedup::new(Duration::from_secs(60), 10).max_age(), Duration::from_secs(60));
    /// ```
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// How many keys are remembered at most.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::Dedup;
    /// assert_eq!(Dedup::new(Duration::from_secs(60), 10).max_keys(), 10);
    /// ```
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }
}

/// The live window.
#[derive(Debug)]
pub(crate) struct Window {
    config: Dedup,
    seen: HashMap<u128, Instant, foldhash::fast::RandomState>,
    order: VecDeque<(u128, Instant)>,
}

impl Window {
    pub(crate) fn new(config: Dedup) -> Self {
        Self {
            config,
            seen: HashMap::default(),
            order: VecDeque::new(),
        }
    }

    /// True when `key` is new at `now` (and remembers it); false for a
    /// duplicate within the window.
    pub(crate) fn first_sighting(&mut self, key: u128, now: Instant) -> bool {
        // Forget what aged out (the queue is in arrival order).
        while let Some(&(k, at)) = self.order.front() {
            if now.saturating_duration_since(at) < self.config.max_age {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&k) == Some(&at) {
                self.seen.remove(&k);
            }
        }
        if self.seen.contains_key(&key) {
            return false;
        }
        while self.seen.len() >= self.config.max_keys {
            let Some((k, at)) = self.order.pop_front() else {
                break;
            };
            if self.seen.get(&k) == Some(&at) {
                self.seen.remove(&k);
            }
        }
        self.seen.insert(key, now);
        self.order.push_back((key, now));
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_a_duplicate_until_it_ages_out() {
        let t0 = Instant::now();
        let mut w = Window::new(Dedup::new(Duration::from_secs(10), 100));
        assert!(w.first_sighting(1, t0));
        assert!(!w.first_sighting(1, t0 + Duration::from_secs(9)));
        assert!(w.first_sighting(2, t0 + Duration::from_secs(9)));
        // 10 s after its first sighting key 1 is forgotten; key 2 is not yet.
        assert!(w.first_sighting(1, t0 + Duration::from_secs(10)));
        assert!(!w.first_sighting(2, t0 + Duration::from_secs(18)));
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn the_count_bound_forgets_the_oldest() {
        let t0 = Instant::now();
        let mut w = Window::new(Dedup::new(Duration::from_secs(3600), 3));
        for k in 0..5 {
            assert!(w.first_sighting(k, t0));
        }
        assert_eq!(w.len(), 3);
        assert!(!w.first_sighting(4, t0), "recent keys are kept");
        assert!(w.first_sighting(0, t0), "the oldest were forgotten");
    }
}
