//! A small header map: a few string pairs, stored inline.

use std::borrow::Cow;
use std::fmt;

use smallvec::SmallVec;

/// A header name or value: borrowed from a `'static` string (no allocation)
/// or owned.
///
/// # Examples
///
/// ```
/// use topicbus::{HeaderText, Headers};
/// let mut h = Headers::new();
/// let id: HeaderText = format!("req-{}", 7).into(); // owned
/// h.insert("source", "billing"); // borrowed: allocates nothing
/// h.insert("request-id", id);
/// assert_eq!(h.get("request-id"), Some("req-7"));
/// ```
pub type HeaderText = Cow<'static, str>;

/// Message headers: string names to string values, in insertion order.
///
/// Up to four entries live inline in the message (no allocation beyond the
/// owned strings themselves; `&'static str` names and values allocate
/// nothing). Names are case-sensitive and unique: inserting an existing name
/// replaces its value. Lookups are linear, which beats hashing at these sizes.
///
/// # Examples
///
/// ```
/// use topicbus::Headers;
///
/// let mut h = Headers::new();
/// h.insert("content-type", "application/json");
/// h.insert("tenant", format!("t-{}", 42));
/// assert_eq!(h.get("tenant"), Some("t-42"));
/// assert_eq!(h.insert("tenant", "t-7").as_deref(), Some("t-42"));
/// assert_eq!(h.len(), 2);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(SmallVec<[(HeaderText, HeaderText); 4]>);

impl Headers {
    /// An empty header map (allocates nothing).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Headers;
    /// let h = Headers::new();
    /// assert!(h.is_empty());
    /// ```
    pub const fn new() -> Self {
        Self(SmallVec::new_const())
    }

    /// The value of `name`, if present.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Headers;
    /// let h: Headers = [("tenant", "acme")].into_iter().collect();
    /// assert_eq!(h.get("tenant"), Some("acme"));
    /// assert_eq!(h.get("Tenant"), None); // names are case-sensitive
    /// ```
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v.as_ref())
    }

    /// True when `name` is present.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Headers;
    /// let h: Headers = [("trace", "on")].into_iter().collect();
    /// assert!(h.contains("trace"));
    /// assert!(!h.contains("debug"));
    /// ```
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`; returns the previous value.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Headers;
    /// let mut h = Headers::new();
    /// assert_eq!(h.insert("region", "eu"), None);
    /// assert_eq!(h.insert("region", "us").as_deref(), Some("eu"));
    /// assert_eq!(h.get("region"), Some("us"));
    /// ```
    pub fn insert(
        &mut self,
        name: impl Into<HeaderText>,
        value: impl Into<HeaderText>,
    ) -> Option<HeaderText> {
        let (name, value) = (name.into(), value.into());
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.0.push((name, value));
                None
            }
        }
    }

    /// Removes `name`; returns its value.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Headers;
    /// let mut h: Headers = [("a", "1"), ("b", "2")].into_iter().collect();
    /// assert_eq!(h.remove("a").as_deref(), Some("1"));
    /// assert_eq!(h.remove("a"), None);
    /// assert_eq!(h.len(), 1);
    /// ```
    pub fn remove(&mut self, name: &str) -> Option<HeaderText> {
        let i = self.0.iter().position(|(n, _)| n.as_ref() == name)?;
        Some(self.0.remove(i).1)
    }

    /// The number of headers.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Headers;
    /// let h: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
    /// assert_eq!(h.len(), 2); // the second "a" replaced the first
    /// ```
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no headers.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Headers;
    /// let mut h = Headers::new();
    /// assert!(h.is_empty());
    /// h.insert("a", "1");
    /// assert!(!h.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers in insertion order.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Headers;
    /// let h: Headers = [("z", "1"), ("a", "2")].into_iter().collect();
    /// let pairs: Vec<_> = h.iter().collect();
    /// assert_eq!(pairs, [("z", "1"), ("a", "2")]); // insertion order
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<N: Into<HeaderText>, V: Into<HeaderText>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        h.extend(iter);
        h
    }
}

impl<N: Into<HeaderText>, V: Into<HeaderText>> Extend<(N, V)> for Headers {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        for (n, v) in iter {
            self.insert(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_replace_remove() {
        let mut h = Headers::new();
        assert!(h.is_empty());
        assert_eq!(h.insert("a", "1"), None);
        assert_eq!(h.insert("b", String::from("2")), None);
        assert_eq!(h.insert("a", "3").as_deref(), Some("1"));
        assert_eq!(h.get("a"), Some("3"));
        assert_eq!(h.get("A"), None, "names are case-sensitive");
        assert_eq!(h.iter().collect::<Vec<_>>(), [("a", "3"), ("b", "2")]);
        assert_eq!(h.remove("a").as_deref(), Some("3"));
        assert_eq!(h.remove("a"), None);
        assert!(!h.contains("a") && h.contains("b"));
        assert_eq!(format!("{h:?}"), r#"{"b": "2"}"#);
    }

    #[test]
    fn many_headers_spill_and_stay_unique() {
        let h: Headers = (0..10)
            .chain(0..10)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        assert_eq!(h.len(), 10);
        assert_eq!(h.get("k9"), Some("v9"));
    }
}
