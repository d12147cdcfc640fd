//! `Bus::health`: a verdict for readiness probes and dashboards, with the
//! reasons (SPEC R32).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How well the bus (or one of its parts) is doing. Ordered: `Healthy <
/// Degraded < Unhealthy`; the bus's status is its worst part's.
///
/// # Examples
///
/// ```
/// use topicbus::HealthStatus;
/// assert!(HealthStatus::Healthy < HealthStatus::Degraded);
/// assert!(HealthStatus::Degraded < HealthStatus::Unhealthy);
/// assert_eq!(HealthStatus::Degraded.to_string(), "degraded");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthStatus {
    /// Everything works as configured.
    Healthy,
    /// Working, but something needs attention (a mailbox nearly full, an
    /// open circuit breaker, a timer falling behind, an adapter retrying).
    Degraded,
    /// Not working as configured (shut down, a worker gone, an adapter
    /// down).
    Unhealthy,
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        })
    }
}

/// One reason the bus is not healthy.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::{Bus, HealthStatus};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// bus.shutdown(Duration::from_secs(10))?;
/// let issue = &bus.health().issues[0];
/// assert_eq!((issue.status, issue.component.as_str()), (HealthStatus::Unhealthy, "bus"));
/// println!("{issue}"); // "unhealthy: bus: …"
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthIssue {
    /// How bad it is.
    pub status: HealthStatus,
    /// What it concerns: `bus`, `workers`, `timer`, `sub-<id>`, or a health
    /// check's name.
    pub component: String,
    /// What is wrong, for a person.
    pub reason: String,
}

impl HealthIssue {
    /// An issue of `component`.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{HealthIssue, HealthStatus};
    /// let i = HealthIssue::new(HealthStatus::Degraded, "redis", "reconnecting");
    /// assert_eq!(i.to_string(), "degraded: redis: reconnecting");
    /// ```
    pub fn new(
        status: HealthStatus,
        component: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            status,
            component: component.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for HealthIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.status, self.component, self.reason)
    }
}

/// The result of [`Bus::health`](crate::Bus::health): the overall status
/// (the worst issue's, or healthy) and every issue found.
///
/// # Examples
///
/// ```
/// use topicbus::{Bus, HealthStatus};
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// let h = bus.health();
/// assert_eq!(h.status, HealthStatus::Healthy);
/// assert!(h.issues.is_empty());
/// # Ok::<(), topicbus::BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The worst status among the issues; healthy without any.
    pub status: HealthStatus,
    /// Why, worst first.
    pub issues: Vec<HealthIssue>,
}

impl Health {
    pub(crate) fn from_issues(mut issues: Vec<HealthIssue>) -> Self {
        issues.sort_by_key(|i| std::cmp::Reverse(i.status));
        let status = issues.first().map_or(HealthStatus::Healthy, |i| i.status);
        Self { status, issues }
    }
}

/// A health check of something outside the bus that it depends on (the
/// Redis and PostgreSQL adapters implement it), consulted by every
/// [`Bus::health`](crate::Bus::health).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use topicbus::{Bus, HealthCheck, HealthIssue, HealthStatus};
///
/// struct Upstream;
/// impl HealthCheck for Upstream {
///     fn check(&self) -> Option<HealthIssue> {
///         Some(HealthIssue::new(HealthStatus::Unhealthy, "upstream", "connection refused"))
///     }
/// }
///
/// let bus = Bus::<u32>::builder().workers(1).build()?;
/// bus.add_health_check(Arc::new(Upstream));
/// assert_eq!(bus.health().status, HealthStatus::Unhealthy);
/// # Ok::<(), topicbus::BuildError>(())
/// ```
pub trait HealthCheck: Send + Sync {
    /// `None` when healthy; else what is wrong. Called on the thread that
    /// asks for the bus's health: keep it quick (report a state the
    /// adapter keeps, do not probe the network here).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::{HealthCheck, HealthIssue, HealthStatus};
    /// struct Disk { free_percent: u8 }
    /// impl HealthCheck for Disk {
    ///     fn check(&self) -> Option<HealthIssue> {
    ///         (self.free_percent < 10)
    ///             .then(|| HealthIssue::new(HealthStatus::Degraded, "disk", "under 10 % free"))
    ///     }
    /// }
    /// assert!(Disk { free_percent: 50 }.check().is_none());
    /// assert_eq!(Disk { free_percent: 5 }.check().map(|i| i.status), Some(HealthStatus::Degraded));
    /// ```
    fn check(&self) -> Option<HealthIssue>;
}

/// When [`Bus::health`](crate::Bus::health) calls a part degraded.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use topicbus::HealthThresholds;
/// let t = HealthThresholds::default().mailbox_fill(0.5).timer_lag(Duration::from_millis(100));
/// assert_eq!(t.mailbox_fill, 0.5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct HealthThresholds {
    /// A lane this full (0.0 to 1.0 of its capacity) makes its
    /// subscription degraded. Default 0.8.
    pub mailbox_fill: f64,
    /// A timer this late on its most overdue job is degraded. Default 1 s.
    pub timer_lag: Duration,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        Self {
            mailbox_fill: 0.8,
            timer_lag: Duration::from_secs(1),
        }
    }
}

impl HealthThresholds {
    /// Sets [`mailbox_fill`](Self::mailbox_fill).
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::HealthThresholds;
    /// let t = HealthThresholds::default().mailbox_fill(0.95);
    /// assert_eq!(t.mailbox_fill, 0.95);
    /// ```
    #[must_use]
    pub fn mailbox_fill(mut self, fill: f64) -> Self {
        self.mailbox_fill = fill;
        self
    }

    /// Sets [`timer_lag`](Self::timer_lag).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::HealthThresholds;
    /// let t = HealthThresholds::default().timer_lag(Duration::from_millis(250));
    /// assert_eq!(t.timer_lag, Duration::from_millis(250));
    /// ```
    #[must_use]
    pub fn timer_lag(mut self, lag: Duration) -> Self {
        self.timer_lag = lag;
        self
    }
}

/// The registered checks.
pub(crate) type Checks = crate::sync::Mutex<Vec<Arc<dyn HealthCheck>>>;
