//! The Prometheus text exposition format (version 0.0.4) of a
//! [`Metrics`] snapshot, behind the `prometheus` feature.
//!
//! Names follow Prometheus conventions: a `topicbus_` prefix, `_total` on
//! counters, base units (`_seconds`). Bus-wide families count every
//! subscription that ever existed; the `topicbus_subscription_*` families
//! are the live subscriptions, labelled `subscription="sub-<id>"`.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Latency, Metrics};
use crate::reliability::CircuitState;
use crate::Counts;

/// Histogram bucket bounds: 1 µs to 10 s in 1-2.5-5 steps.
const BUCKETS: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A text exposition being written.
struct Out(String);

impl Out {
    /// Starts a metric family.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"");
                escape(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A one-sample family.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The outcome counters of `c`, labelled `outcome` (and `reason`), with
    /// `extra` labels first.
    fn outcomes(&mut self, name: &str, extra: &[(&str, &str)], c: &Counts) {
        for (outcome, reason, n) in super::outcome_series(c) {
            let mut labels = extra.to_vec();
            labels.push(("outcome", outcome));
            if let Some(reason) = reason {
                labels.push(("reason", reason));
            }
            self.sample(name, &labels, n);
        }
    }

    /// A histogram family from a latency distribution, in seconds.
    fn histogram(&mut self, name: &str, help: &str, l: &Latency) {
        self.family(name, "histogram", help);
        self.histogram_samples(name, &[], l);
    }

    /// The samples of one histogram (buckets, sum, count) with `extra`
    /// labels first.
    fn histogram_samples(&mut self, name: &str, extra: &[(&str, &str)], l: &Latency) {
        let bucket = format!("{name}_bucket");
        let bounds = BUCKETS.map(Duration::from_secs_f64);
        for (le, n) in BUCKETS.iter().zip(l.cumulative(&bounds)) {
            let le = le.to_string();
            let mut labels = extra.to_vec();
            labels.push(("le", &le));
            self.sample(&bucket, &labels, n);
        }
        let mut labels = extra.to_vec();
        labels.push(("le", "+Inf"));
        self.sample(&bucket, &labels, l.count());
        // The histogram keeps values to 0.1 %, so the sum is mean × count.
        let sum = l.mean().as_secs_f64() * l.count() as f64;
        self.sample(&format!("{name}_sum"), extra, sum);
        self.sample(&format!("{name}_count"), extra, l.count());
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl Metrics {
    /// The snapshot in the Prometheus text exposition format (version
    /// 0.0.4), ready to serve on a `/metrics` endpoint with the content
    /// type `text/plain; version=0.0.4`.
    ///
    /// Families: `topicbus_published_total`, `topicbus_delivered_total`,
    /// `topicbus_messages_total{outcome, reason}` (every terminal outcome),
    /// `topicbus_retries_total`, `topicbus_filtered_total`,
    /// `topicbus_duplicates_total`, `topicbus_worker_panics_total`,
    /// `topicbus_hook_panics_total`, `topicbus_late_replies_total`,
    /// `topicbus_delayed_total{state}`, `topicbus_delayed_pending`,
    /// `topicbus_workers{state}`, `topicbus_subscriptions`; per live
    /// subscription `topicbus_subscription_delivered_total`,
    /// `topicbus_subscription_messages_total{outcome, reason}`,
    /// `topicbus_subscription_retries_total`,
    /// `topicbus_subscription_queue_depth{lane}`,
    /// `topicbus_subscription_retrying`, `topicbus_subscription_held`,
    /// `topicbus_subscription_circuit_state{state}`; the histograms
    /// `topicbus_queue_wait_seconds`, `topicbus_handler_seconds`,
    /// `topicbus_end_to_end_seconds` (1 µs to 10 s buckets); and for the
    /// subscriptions that keep their own
    /// ([`Metrics::subscriptions`]) `topicbus_subscription_queue_wait_seconds`,
    /// `topicbus_subscription_handler_seconds` and
    /// `topicbus_subscription_end_to_end_seconds`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use topicbus::{Bus, Message};
    /// let bus = Bus::<u32>::builder().workers(1).build()?;
    /// let _s = bus.subscribe("jobs", |_m: &Message<u32>| ())?;
    /// bus.publish("jobs", 1)?;
    /// bus.shutdown(Duration::from_secs(10))?;
    /// let text = bus.metrics().to_prometheus();
    /// assert!(text.contains("topicbus_published_total 1\n"));
    /// assert!(text.contains("topicbus_messages_total{outcome=\"handled\"} 1\n"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_prometheus(&self) -> String {
        let mut o = Out(String::with_capacity(16 * 1024));
        let s = &self.stats;
        let t = &s.total;
        o.single(
            "topicbus_published_total",
            "counter",
            "Messages published.",
            s.published,
        );
        o.single(
            "topicbus_delivered_total",
            "counter",
            "Messages routed into a subscription (one per matched subscription).",
            t.delivered,
        );
        o.family(
            "topicbus_messages_total",
            "counter",
            "Deliveries settled, by terminal outcome (and reason for drops and dead letters).",
        );
        o.outcomes("topicbus_messages_total", &[], t);
        for (name, help, n) in [
            ("topicbus_retries_total", "Retries scheduled.", t.retried),
            (
                "topicbus_filtered_total",
                "Messages a subscription's filters refused.",
                t.filtered,
            ),
            (
                "topicbus_duplicates_total",
                "Messages a subscription's deduplication window had seen.",
                t.duplicates,
            ),
            (
                "topicbus_worker_panics_total",
                "Panics caught on worker threads outside handlers.",
                s.worker_panics,
            ),
            (
                "topicbus_hook_panics_total",
                "Panics caught in lifecycle hooks.",
                s.hook_panics,
            ),
            (
                "topicbus_late_replies_total",
                "Replies that came after their request ended.",
                s.late_replies,
            ),
        ] {
            o.single(name, "counter", help, n);
        }
        o.family(
            "topicbus_delayed_total",
            "counter",
            "Delayed messages, by state.",
        );
        for (state, n) in [
            ("scheduled", s.delayed.scheduled),
            ("delivered", s.delayed.delivered),
            ("given_up", s.delayed.given_up),
        ] {
            o.sample("topicbus_delayed_total", &[("state", state)], n);
        }
        o.single(
            "topicbus_delayed_pending",
            "gauge",
            "Delayed messages waiting for their time.",
            s.delayed.pending,
        );
        o.family("topicbus_workers", "gauge", "Worker threads, by state.");
        for (state, n) in self.workers.named() {
            o.sample("topicbus_workers", &[("state", state)], n);
        }
        o.single(
            "topicbus_subscriptions",
            "gauge",
            "Live subscriptions.",
            s.subscriptions.len(),
        );
        self.subscription_families(&mut o);
        o.histogram(
            "topicbus_queue_wait_seconds",
            "Publish to handler start, sampled handler runs.",
            &self.queue_wait,
        );
        o.histogram(
            "topicbus_handler_seconds",
            "Handler run time, sampled handler runs.",
            &self.handler,
        );
        o.histogram(
            "topicbus_end_to_end_seconds",
            "Publish to handler end, sampled handler runs.",
            &self.end_to_end,
        );
        self.subscription_histograms(&mut o);
        o.0
    }

    /// The own histograms of the subscriptions that keep them.
    fn subscription_histograms(&self, o: &mut Out) {
        type Pick = fn(&crate::SubscriptionLatency) -> &Latency;
        let families: [(&str, &str, Pick); 3] = [
            (
                "topicbus_subscription_queue_wait_seconds",
                "Publish to handler start, sampled runs of the subscription.",
                |s| &s.queue_wait,
            ),
            (
                "topicbus_subscription_handler_seconds",
                "Handler run time, sampled runs of the subscription.",
                |s| &s.handler,
            ),
            (
                "topicbus_subscription_end_to_end_seconds",
                "Publish to handler end, sampled runs of the subscription.",
                |s| &s.end_to_end,
            ),
        ];
        if self.subscriptions.is_empty() {
            return;
        }
        for (name, help, pick) in families {
            o.family(name, "histogram", help);
            for s in &self.subscriptions {
                let id = s.id.to_string();
                o.histogram_samples(name, &[("subscription", &id)], pick(s));
            }
        }
    }

    fn subscription_families(&self, o: &mut Out) {
        let subs: Vec<(String, &crate::SubStats)> = self
            .stats
            .subscriptions
            .iter()
            .map(|s| (s.id.to_string(), s))
            .collect();
        type Pick = fn(&crate::SubStats) -> u64;
        let scalars: [(&str, &str, &str, Pick); 4] = [
            (
                "topicbus_subscription_delivered_total",
                "counter",
                "Messages routed into the subscription.",
                |s| s.counts.delivered,
            ),
            (
                "topicbus_subscription_retries_total",
                "counter",
                "Retries the subscription scheduled.",
                |s| s.counts.retried,
            ),
            (
                "topicbus_subscription_retrying",
                "gauge",
                "Retries waiting for their time.",
                |s| s.retrying as u64,
            ),
            (
                "topicbus_subscription_held",
                "gauge",
                "Messages held while the circuit is open.",
                |s| s.held as u64,
            ),
        ];
        for (name, kind, help, pick) in scalars {
            o.family(name, kind, help);
            for (id, s) in &subs {
                o.sample(name, &[("subscription", id.as_str())], pick(s));
            }
        }
        o.family(
            "topicbus_subscription_messages_total",
            "counter",
            "Deliveries the subscription settled, by terminal outcome.",
        );
        for (id, s) in &subs {
            let labels = [("subscription", id.as_str())];
            o.outcomes("topicbus_subscription_messages_total", &labels, &s.counts);
        }
        o.family(
            "topicbus_subscription_queue_depth",
            "gauge",
            "Messages waiting in the subscription's mailbox, by lane.",
        );
        for (id, s) in &subs {
            for (lane, n) in ["high", "normal", "low"].iter().zip(s.queued) {
                let labels = [("subscription", id.as_str()), ("lane", lane)];
                o.sample("topicbus_subscription_queue_depth", &labels, n);
            }
        }
        o.family(
            "topicbus_subscription_circuit_state",
            "gauge",
            "1 for the circuit breaker's current state (subscriptions with a breaker).",
        );
        for (id, s) in &subs {
            let Some(now) = s.circuit else { continue };
            for (state, which) in [
                ("closed", CircuitState::Closed),
                ("open", CircuitState::Open),
                ("half_open", CircuitState::HalfOpen),
            ] {
                let labels = [("subscription", id.as_str()), ("state", state)];
                o.sample(
                    "topicbus_subscription_circuit_state",
                    &labels,
                    u8::from(now == which),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut o = Out(String::new());
        o.sample("m", &[("a", "x\"y\\z\nw"), ("b", "plain")], 1);
        assert_eq!(o.0, "m{a=\"x\\\"y\\\\z\\nw\",b=\"plain\"} 1\n");
    }

    #[test]
    fn buckets_rise_and_end_at_ten_seconds() {
        assert!(BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(BUCKETS[BUCKETS.len() - 1], 10.0);
    }
}
