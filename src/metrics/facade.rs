//! The snapshot through the `metrics` crate facade (feature `metrics`), so
//! any recorder the application installed (metrics-exporter-prometheus,
//! statsd, …) carries topicbus's numbers.

use super::{Latency, Metrics};

/// The quantiles reported for each latency distribution.
const QUANTILES: [(&str, f64); 5] = [
    ("0.5", 0.5),
    ("0.95", 0.95),
    ("0.99", 0.99),
    ("0.999", 0.999),
    ("1", 1.0),
];

impl Metrics {
    /// Reports the snapshot through the [`metrics`](https://docs.rs/metrics)
    /// facade to whatever recorder is installed: counters as absolute
    /// values (`topicbus_published_total`, `topicbus_delivered_total`,
    /// `topicbus_messages_total{outcome, reason}`,
    /// `topicbus_retries_total`, and per live subscription
    /// `topicbus_subscription_messages_total{subscription, outcome,
    /// reason}`), gauges (`topicbus_workers{state}`,
    /// `topicbus_subscriptions`,
    /// `topicbus_subscription_queue_depth{subscription, lane}`), and each
    /// latency distribution as quantile gauges in seconds
    /// (`topicbus_handler_seconds{quantile}`, `topicbus_queue_wait_seconds`,
    /// `topicbus_end_to_end_seconds`; quantile `1` is the maximum; and the
    /// same `topicbus_subscription_*_seconds{subscription, quantile}` for
    /// the subscriptions that keep their own, [`Metrics::subscriptions`]).
    /// Call it
    /// periodically (say every few seconds) from a thread of your own.
    ///
    /// # Examples
    ///
    /// ```
    /// use topicbus::Bus;
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// bus.publish("jobs", 1)?;
    /// // With no recorder installed this is a no-op; with one, it reports.
    /// bus.metrics().report();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn report(&self) {
        let s = &self.stats;
        let t = &s.total;
        metrics::counter!("topicbus_published_total").absolute(s.published);
        metrics::counter!("topicbus_delivered_total").absolute(t.delivered);
        metrics::counter!("topicbus_retries_total").absolute(t.retried);
        for (outcome, reason, n) in super::outcome_series(t) {
            match reason {
                None => metrics::counter!("topicbus_messages_total", "outcome" => outcome),
                Some(r) => {
                    metrics::counter!("topicbus_messages_total", "outcome" => outcome, "reason" => r)
                }
            }
            .absolute(n);
        }
        for (state, n) in self.workers.named() {
            metrics::gauge!("topicbus_workers", "state" => state).set(n as f64);
        }
        metrics::gauge!("topicbus_subscriptions").set(s.subscriptions.len() as f64);
        for sub in &s.subscriptions {
            let id = sub.id.to_string();
            for (outcome, reason, n) in super::outcome_series(&sub.counts) {
                let id = id.clone();
                match reason {
                    None => metrics::counter!(
                        "topicbus_subscription_messages_total",
                        "subscription" => id,
                        "outcome" => outcome
                    ),
                    Some(r) => metrics::counter!(
                        "topicbus_subscription_messages_total",
                        "subscription" => id,
                        "outcome" => outcome,
                        "reason" => r
                    ),
                }
                .absolute(n);
            }
            for (lane, depth) in ["high", "normal", "low"].iter().zip(sub.queued) {
                metrics::gauge!(
                    "topicbus_subscription_queue_depth",
                    "subscription" => id.clone(),
                    "lane" => *lane
                )
                .set(depth as f64);
            }
        }
        quantiles("topicbus_queue_wait_seconds", None, &self.queue_wait);
        quantiles("topicbus_handler_seconds", None, &self.handler);
        quantiles("topicbus_end_to_end_seconds", None, &self.end_to_end);
        for own in &self.subscriptions {
            let id = own.id.to_string();
            for (name, l) in [
                ("topicbus_subscription_queue_wait_seconds", &own.queue_wait),
                ("topicbus_subscription_handler_seconds", &own.handler),
                ("topicbus_subscription_end_to_end_seconds", &own.end_to_end),
            ] {
                quantiles(name, Some(&id), l);
            }
        }
    }
}

/// Quantile gauges of `l`, labelled with the subscription when it is one's
/// own.
fn quantiles(name: &'static str, subscription: Option<&str>, l: &Latency) {
    for (label, q) in QUANTILES {
        let seconds = l.quantile(q).as_secs_f64();
        match subscription {
            None => metrics::gauge!(name, "quantile" => label).set(seconds),
            Some(id) => metrics::gauge!(
                name,
                "subscription" => id.to_owned(),
                "quantile" => label
            )
            .set(seconds),
        }
    }
}
