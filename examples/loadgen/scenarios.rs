//! The scenarios: each runs its measurements and returns a [`Report`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use topicbus::{Bus, OverflowPolicy, SubscribeOptions, WeakBus};

use crate::measure::{now_ns, rss_bytes, Ticker};
use crate::report::{
    fmt_mib, fmt_ns, fmt_rate, median, quantile_cells, quantile_header, spread, Goal, Plot, Report,
    Series,
};
use crate::systems::{
    run_step, run_step_prepared, Behavior, Payload, RunConfig, Step, StepResult, System, Workload,
};
use crate::workloads;

/// The knobs every scenario reads.
#[derive(Debug, Clone)]
pub struct Opts {
    /// CI smoke mode (short steps, one run).
    pub quick: bool,
    /// Open-loop step length.
    pub step: Duration,
    /// Closed-loop (saturation) step length.
    pub sat: Duration,
    /// Repetitions of every headline measurement (medians reported).
    pub runs: usize,
    /// System set-up.
    pub cfg: RunConfig,
    /// The sustained workload's patterns.
    pub patterns: Vec<String>,
    /// Fan-out sizes.
    pub fanout: Vec<usize>,
    /// A single offered rate instead of the sweep (sustained).
    pub rate: Option<f64>,
    /// Systems to compare (topicbus always runs).
    pub systems: Vec<System>,
    /// Soak length and offered rate.
    pub soak: (Duration, f64),
    /// Churn: background subscriptions and changes per second.
    pub churn: (usize, f64),
    /// Offered rate of the moderate-load scenarios (churn, degradation,
    /// mixed).
    pub moderate: f64,
    /// Burst size.
    pub burst: u64,
}

/// One progress bar per scenario.
pub fn progress(name: &str, steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(name.to_owned());
    bar
}

/// The CSV header for [`csv_row`].
pub const CSV_HEADER: &str = "scenario,label,system,offered_per_s,sent,publish_s,achieved_per_s,\
throughput_per_s,deliveries,lost,dropped,failed,refused,cpu_ns_per_msg,rss_before,rss_after,\
corrected_p50_ns,corrected_p90_ns,corrected_p99_ns,corrected_p999_ns,corrected_p9999_ns,\
corrected_max_ns,naive_p50_ns,naive_p99_ns,naive_max_ns,awake_n,awake_p50_ns,awake_p99_ns,\
woken_n,woken_p50_ns,woken_p99_ns,publish_call_p50_ns,publish_call_p99_ns,publish_call_max_ns,\
hiccup_p99_ns,hiccup_p9999_ns,hiccup_max_ns\n";

/// One CSV row for a measurement.
pub fn csv_row(scenario: &str, label: &str, r: &StepResult) -> String {
    let h = r.all();
    let q = |h: &hdrhistogram::Histogram<u64>, q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    let mut fields: Vec<String> = vec![
        scenario.into(),
        label.replace(',', ";"),
        r.system.name().into(),
        r.offered.map_or_else(String::new, |o| format!("{o:.0}")),
        r.sent.to_string(),
        format!("{:.6}", r.publish_ns as f64 / 1e9),
        format!("{:.0}", r.achieved()),
        format!("{:.0}", r.throughput()),
        h.delivered.to_string(),
        h.lost.to_string(),
        r.extra.dropped.to_string(),
        r.extra.failed.to_string(),
        r.extra.refused.to_string(),
        format!("{:.1}", r.cpu_per_msg()),
        r.rss.0.to_string(),
        r.rss.1.to_string(),
    ];
    let mut cells = |h: &hdrhistogram::Histogram<u64>, count: bool, qs: &[f64]| {
        if count {
            fields.push(h.len().to_string());
        }
        fields.extend(qs.iter().map(|&x| q(h, x).to_string()));
    };
    cells(&h.corrected, false, &[0.5, 0.9, 0.99, 0.999, 0.9999, 1.0]);
    cells(&h.naive, false, &[0.5, 0.99, 1.0]);
    cells(&h.awake, true, &[0.5, 0.99]);
    cells(&h.woken, true, &[0.5, 0.99]);
    cells(&r.publish_call, false, &[0.5, 0.99, 1.0]);
    cells(&r.hiccups, false, &[0.99, 0.9999, 1.0]);
    fields.join(",") + "\n"
}

fn new_report(scenario: &str, title: &str) -> Report {
    Report {
        scenario: scenario.into(),
        title: title.into(),
        csv: CSV_HEADER.into(),
        ..Report::default()
    }
}

/// Records a measurement in the report's CSV and interval log.
fn keep(report: &mut Report, label: &str, r: &StepResult) {
    report.csv.push_str(&csv_row(&report.scenario, label, r));
    let h = r.all();
    if !h.corrected.is_empty() {
        let tag = format!("{} {} {label}", report.scenario, r.system.name());
        report.histograms.push((tag, h.corrected));
    }
}

fn latency_table_header(first: &str) -> String {
    let (names, align) = quantile_header();
    format!(
        "| {first} | offered | achieved | {names} | naive p99 | CPU/msg | hiccup p99.99 / max |\n\
         |---|---:|---:|{align}|---:|---:|---:|\n"
    )
}

fn latency_row(first: &str, r: &StepResult) -> String {
    let h = r.all();
    let lost = if h.lost > 0 {
        format!(
            " (lost {:.1} %)",
            100.0 * h.lost as f64 / (h.delivered + h.lost) as f64
        )
    } else {
        String::new()
    };
    format!(
        "| {first} | {} | {}{lost} | {} | {} | {:.0} ns | {} / {} |\n",
        r.offered.map_or_else(|| "closed".into(), fmt_rate),
        fmt_rate(r.achieved()),
        quantile_cells(&h.corrected),
        if h.naive.is_empty() {
            "–".into()
        } else {
            fmt_ns(h.naive.value_at_quantile(0.99))
        },
        r.cpu_per_msg(),
        fmt_ns(r.hiccups.value_at_quantile(0.9999)),
        fmt_ns(r.hiccups.max()),
    )
}

fn p(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64
    }
}

fn open(rate: f64, duration: Duration) -> Step {
    Step {
        rate: Some(rate),
        duration,
        max_messages: None,
    }
}

fn closed(duration: Duration) -> Step {
    Step {
        rate: None,
        duration,
        max_messages: None,
    }
}

fn baselines(o: &Opts, with_raw: bool) -> Vec<System> {
    let mut v = vec![System::Topicbus];
    for s in &o.systems {
        if *s != System::Topicbus && (with_raw || *s != System::RawChannel) && !v.contains(s) {
            v.push(*s);
        }
    }
    v
}

// ------------------------------------------------------------- sustained

/// Saturation, the rate sweep and the goal points on the headline workload.
pub fn sustained(o: &Opts) -> Report {
    let w = workloads::headline(&o.patterns);
    let systems = baselines(o, true);
    let fractions: Vec<f64> = match o.rate {
        Some(_) => vec![1.0],
        None => vec![0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1],
    };
    let points = [100_000.0, 1_000_000.0];
    let bar = progress(
        "sustained",
        (o.runs * systems.len() + fractions.len() * systems.len() + o.runs * points.len() * 2)
            as u64,
    );
    let mut rep = new_report(
        "sustained",
        "Sustained load: saturation, rate sweep and goal points (headline workload)",
    );
    let _ = writeln!(
        rep.body,
        "Workload: 1 publisher, {} subscriptions ({} with wildcards) over 1,024 topics \
         `sensor.<site>.<kind>.<id>`, {:.2} deliveries per message on average; payload {} bytes; \
         {} worker(s); lane capacity {}.\n",
        w.subs.len(),
        w.subs
            .iter()
            .filter(|s| s.pattern.as_ref().contains(['*', '#']))
            .count(),
        w.fanout(),
        o.cfg.payload,
        o.cfg.workers,
        o.cfg.capacity,
    );

    // 1. Closed-loop saturation, every system, `runs` times (interleaved).
    // Per system: messages/s, deliveries/s and lost % of each run.
    type Runs = (System, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut sat: Vec<Runs> = systems
        .iter()
        .map(|&s| (s, Vec::new(), Vec::new(), Vec::new()))
        .collect();
    for _ in 0..o.runs {
        for (s, msgs, dels, lost) in &mut sat {
            bar.set_message(format!("saturation {}", s.name()));
            let r = run_step(*s, &w, &o.cfg, &closed(o.sat));
            msgs.push(r.throughput());
            dels.push(r.delivery_rate());
            lost.push(r.lost_share() * 100.0);
            keep(&mut rep, "saturation", &r);
            bar.inc(1);
        }
    }
    let s_top = median(&sat[0].1);
    rep.body.push_str(
        "## Saturation (closed loop)\n\nThe publisher sends as fast as it can (blocking when a \
         mailbox is full) and the clock stops when the last delivery settled. Medians of the \
         runs, spread in brackets; ratio = topicbus ÷ system (messages/s). A system that \
         loses messages (tokio broadcast's `Lagged`) is not blocked by them: its rate counts \
         what it published, its deliveries only what arrived.\n\n\
         | system | messages/s | deliveries/s | lost | topicbus ÷ system |\n|---|---:|---:|---:|---:|\n",
    );
    for (s, msgs, dels, lost) in &sat {
        let _ = writeln!(
            rep.body,
            "| {} | {} ({}) | {} | {:.1} % | {:.2}× |",
            s.name(),
            fmt_rate(median(msgs)),
            spread(msgs, fmt_rate),
            fmt_rate(median(dels)),
            median(lost),
            s_top / median(msgs)
        );
    }
    // Inline subscribers: the handlers run on the publisher's thread.
    let inline_cfg = RunConfig {
        inline: true,
        ..o.cfg.clone()
    };
    let mut inline = Vec::new();
    for _ in 0..o.runs {
        bar.set_message("saturation topicbus inline");
        let r = run_step(System::Topicbus, &w, &inline_cfg, &closed(o.sat));
        inline.push(r.throughput());
        keep(&mut rep, "saturation inline", &r);
    }
    let _ = writeln!(
        rep.body,
        "| topicbus, inline subscribers | {} ({}) | {} | 0.0 % | – |",
        fmt_rate(median(&inline)),
        spread(&inline, fmt_rate),
        fmt_rate(median(&inline) * w.fanout()),
    );
    let _ = writeln!(
        rep.body,
        "\n(Inline: every handler runs on the publisher's thread, no hand-off: one core does \
         it all, the other is free. raw-channel is one handoff per message whatever the routing: the floor, not a bus; \
         tokio-broadcast loses what its receivers cannot keep up with, see the sweep's lost column.)\n"
    );

    // 2. The sweep, every system at the same offered rates.
    let base = o.rate.unwrap_or(s_top);
    let mut sweep: Vec<(System, Vec<StepResult>)> =
        systems.iter().map(|&s| (s, Vec::new())).collect();
    for f in &fractions {
        let rate = (base * f).max(1.0);
        for (s, results) in &mut sweep {
            bar.set_message(format!("sweep {} at {}", s.name(), fmt_rate(rate)));
            let r = run_step(*s, &w, &o.cfg, &open(rate, o.step));
            keep(&mut rep, &format!("sweep {:.0}%", f * 100.0), &r);
            results.push(r);
            bar.inc(1);
        }
    }
    let _ = writeln!(
        rep.body,
        "## Rate sweep (open loop, {:.0} % to {:.0} % of topicbus's saturation)\n\n\
         Latency from the intended send time (coordinated-omission corrected) to the handler's \
         start; naive = from the actual send. One run per point, {:.1} s each (first tenth is \
         warm-up, not timed).\n",
        fractions[0] * 100.0,
        fractions[fractions.len() - 1] * 100.0,
        o.step.as_secs_f64()
    );
    for (s, results) in &sweep {
        let _ = writeln!(rep.body, "### {}\n", s.name());
        rep.body.push_str(&latency_table_header("load"));
        for (f, r) in fractions.iter().zip(results) {
            rep.body
                .push_str(&latency_row(&format!("{:.0} %", f * 100.0), r));
        }
        rep.body.push('\n');
    }
    // topicbus as a ratio to each baseline at every load point.
    let mut head = String::from("| load |");
    let mut align = String::from("|---|");
    for (s, _) in sweep.iter().skip(1) {
        let _ = write!(head, " p50 ÷ {0} | p99 ÷ {0} |", s.name());
        align.push_str("---:|---:|");
    }
    let _ = writeln!(
        rep.body,
        "### topicbus ÷ baseline, corrected latency (below 1 is topicbus faster)\n\n{head}\n{align}"
    );
    for (k, f) in fractions.iter().enumerate() {
        let top = sweep[0].1[k].all();
        let _ = write!(rep.body, "| {:.0} % |", f * 100.0);
        for (_, results) in sweep.iter().skip(1) {
            let b = results[k].all();
            let _ = write!(
                rep.body,
                " {:.2} | {:.2} |",
                p(&top.corrected, 0.5) / p(&b.corrected, 0.5),
                p(&top.corrected, 0.99) / p(&b.corrected, 0.99)
            );
        }
        rep.body.push('\n');
    }
    rep.body.push('\n');
    rep.body.push_str(
        "### Worker awake vs woken (topicbus)\n\nNaive latency of deliveries enqueued while the \
         worker was still busy with earlier ones (awake: no wake-up in the figure) and of those \
         enqueued after it had gone idle (woken: it had to notice by spinning or be unparked).\n\n\
         | load | awake n | awake p50 | awake p99 | woken n | woken p50 | woken p99 |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (f, r) in fractions.iter().zip(&sweep[0].1) {
        let h = r.all();
        let _ = writeln!(
            rep.body,
            "| {:.0} % | {} | {} | {} | {} | {} | {} |",
            f * 100.0,
            h.awake.len(),
            fmt_ns(p(&h.awake, 0.5) as u64),
            fmt_ns(p(&h.awake, 0.99) as u64),
            h.woken.len(),
            fmt_ns(p(&h.woken, 0.5) as u64),
            fmt_ns(p(&h.woken, 0.99) as u64),
        );
    }
    let mut series = Vec::new();
    for (q, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
        series.push((
            format!("topicbus {name}"),
            fractions
                .iter()
                .zip(&sweep[0].1)
                .map(|(f, r)| (base * f / 1e6, p(&r.all().corrected, q) / 1e3))
                .collect(),
        ));
    }
    for (s, results) in sweep.iter().skip(1) {
        series.push((
            format!("{} p99", s.name()),
            fractions
                .iter()
                .zip(results)
                .map(|(f, r)| (base * f / 1e6, p(&r.all().corrected, 0.99) / 1e3))
                .collect(),
        ));
    }
    rep.plots.push(Plot {
        title: "Corrected latency vs offered rate (headline workload)".into(),
        x: "offered rate (M msgs/s)".into(),
        y: "latency (µs, log)".into(),
        log_x: false,
        log_y: true,
        series,
    });

    // 3. The goal points, topicbus and the hand-rolled bus, `runs` times.
    rep.body.push_str(
        "\n## Goal points (open loop)\n\nMedians of the runs (spread in brackets); the \
         hand-rolled bus measured in the same runs.\n\n",
    );
    rep.body.push_str(
        "| offered | system | p50 | p99 | p99.9 | max | hiccup max | CPU/msg |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut at = Vec::new();
    for &rate in &points {
        let mut per: Vec<(System, Vec<StepResult>)> = vec![
            (System::Topicbus, Vec::new()),
            (System::HandRolled, Vec::new()),
        ];
        for _ in 0..o.runs {
            for (s, results) in &mut per {
                bar.set_message(format!("goal point {} at {}", s.name(), fmt_rate(rate)));
                let r = run_step(*s, &w, &o.cfg, &open(rate, o.step));
                keep(&mut rep, &format!("point {}", fmt_rate(rate)), &r);
                results.push(r);
                bar.inc(1);
            }
        }
        for (s, results) in &per {
            let col =
                |q: f64| -> Vec<f64> { results.iter().map(|r| p(&r.all().corrected, q)).collect() };
            let fmt = |v: f64| fmt_ns(v as u64);
            let hic: Vec<f64> = results.iter().map(|r| r.hiccups.max() as f64).collect();
            let cpu: Vec<f64> = results.iter().map(StepResult::cpu_per_msg).collect();
            let _ = writeln!(
                rep.body,
                "| {} | {} | {} ({}) | {} ({}) | {} | {} | {} | {:.0} ns |",
                fmt_rate(rate),
                s.name(),
                fmt(median(&col(0.5))),
                spread(&col(0.5), fmt),
                fmt(median(&col(0.99))),
                spread(&col(0.99), fmt),
                fmt(median(&col(0.999))),
                fmt(median(&col(1.0))),
                fmt(median(&hic)),
                median(&cpu),
            );
        }
        let top: Vec<f64> = per[0]
            .1
            .iter()
            .map(|r| p(&r.all().corrected, 0.99))
            .collect();
        let top50: Vec<f64> = per[0]
            .1
            .iter()
            .map(|r| p(&r.all().corrected, 0.5))
            .collect();
        let hand: Vec<f64> = per[1]
            .1
            .iter()
            .map(|r| p(&r.all().corrected, 0.99))
            .collect();
        at.push((rate, median(&top), median(&top50), median(&hand)));
    }
    let (_, p99_1m, p50_1m, hand_1m) = at[1];
    let (_, p99_100k, _, hand_100k) = at[0];
    rep.goals = vec![
        Goal {
            what: "1 M msgs/s offered, corrected p99".into(),
            target: "≤ 1 ms".into(),
            measured: format!(
                "{} (hand-rolled {})",
                fmt_ns(p99_1m as u64),
                fmt_ns(hand_1m as u64)
            ),
            met: p99_1m <= 1e6,
        },
        Goal {
            what: "1 M msgs/s offered, corrected p50".into(),
            target: "< 5 µs".into(),
            measured: fmt_ns(p50_1m as u64),
            met: p50_1m < 5e3,
        },
        Goal {
            what: "100 K msgs/s offered, corrected p99".into(),
            target: "≤ 200 µs".into(),
            measured: format!(
                "{} (hand-rolled {})",
                fmt_ns(p99_100k as u64),
                fmt_ns(hand_100k as u64)
            ),
            met: p99_100k <= 200e3,
        },
        Goal {
            what: "saturation throughput, headline workload".into(),
            target: "≥ 5 M msgs/s".into(),
            measured: format!(
                "{} ({:.2}× hand-rolled)",
                fmt_rate(s_top),
                s_top / median(&sat[1].1)
            ),
            met: s_top >= 5e6,
        },
        Goal {
            what: "saturation, same workload, inline subscribers".into(),
            target: "≥ 5 M msgs/s".into(),
            measured: fmt_rate(median(&inline)),
            met: median(&inline) >= 5e6,
        },
    ];
    bar.finish_with_message("done");
    rep
}

// ----------------------------------------------------------------- fanout

/// Throughput against the number of subscriptions on one topic.
pub fn fanout(o: &Opts) -> Report {
    let systems = baselines(o, false);
    let bar = progress("fanout", (o.fanout.len() * systems.len() * o.runs) as u64);
    let mut rep = new_report(
        "fanout",
        "Fan-out: one topic, 1 → N subscriptions (closed loop)",
    );
    let _ = writeln!(
        rep.body,
        "Every message goes to every subscription (every fourth through a `*` pattern); the \
         publisher blocks when a mailbox is full. Deliveries per second, medians of {} run(s) \
         of {:.1} s; {} worker(s).\n",
        o.runs,
        o.sat.as_secs_f64(),
        o.cfg.workers
    );
    let mut head = String::from("| subscriptions |");
    let mut align = String::from("|---:|");
    for s in &systems {
        let _ = write!(head, " {} |", s.name());
        align.push_str("---:|");
        if *s != System::Topicbus {
            let _ = write!(head, " topicbus ÷ {} |", s.name());
            align.push_str("---:|");
        }
    }
    let _ = writeln!(rep.body, "{head}\n{align}");
    let mut series: Vec<(String, Vec<(f64, f64)>)> = systems
        .iter()
        .map(|s| (s.name().to_owned(), Vec::new()))
        .collect();
    for &n in &o.fanout {
        let w = workloads::fanout(n);
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
        let mut lost = vec![Vec::new(); systems.len()];
        for _ in 0..o.runs {
            for (i, s) in systems.iter().enumerate() {
                bar.set_message(format!("{} × {n}", s.name()));
                let r = run_step(*s, &w, &o.cfg, &closed(o.sat));
                rates[i].push(r.delivery_rate());
                lost[i].push(r.lost_share() * 100.0);
                keep(&mut rep, &format!("fanout {n}"), &r);
                bar.inc(1);
            }
        }
        let top = median(&rates[0]);
        let _ = write!(rep.body, "| {n} |");
        for (i, s) in systems.iter().enumerate() {
            let m = median(&rates[i]);
            series[i].1.push((n as f64, m / 1e6));
            let l = median(&lost[i]);
            let note = if l > 0.0 {
                format!(" (lost {l:.1} %)")
            } else {
                String::new()
            };
            let _ = write!(rep.body, " {}{note} |", fmt_rate(m));
            if *s != System::Topicbus {
                let _ = write!(rep.body, " {:.2}× |", top / m);
            }
        }
        rep.body.push('\n');
    }
    rep.plots.push(Plot {
        title: "Deliveries per second vs subscriptions on one topic".into(),
        x: "subscriptions (log)".into(),
        y: "M deliveries/s".into(),
        log_x: true,
        log_y: false,
        series,
    });
    bar.finish_with_message("done");
    rep
}

// ------------------------------------------------------------------ burst

/// 100 K messages back to back: backpressure, counted drops, no growth.
pub fn burst(o: &Opts) -> Report {
    let w = workloads::headline(&o.patterns);
    let configs: Vec<(System, &str, OverflowPolicy)> = vec![
        (
            System::Topicbus,
            "block (60 s)",
            OverflowPolicy::Block {
                timeout: Duration::from_secs(60),
            },
        ),
        (System::Topicbus, "drop newest", OverflowPolicy::DropNewest),
        (System::Topicbus, "drop oldest", OverflowPolicy::DropOldest),
        (
            System::HandRolled,
            "block",
            OverflowPolicy::Block {
                timeout: Duration::from_secs(60),
            },
        ),
    ];
    let repeats = 3;
    let bar = progress("burst", (configs.len() * repeats) as u64);
    let mut rep = new_report(
        "burst",
        "Burst: messages back to back into the headline workload",
    );
    let _ = writeln!(
        rep.body,
        "{} messages published back to back ({:.2} deliveries each), repeated {repeats} times per \
         configuration in one process; lane capacity {}. Accounting: every routed delivery is \
         handled or dropped by the policy (counted), none lost. RSS is the whole process's.\n\n\
         | system | policy | repeat | time | msgs/s | handled | dropped | accounting | RSS before → after |\n\
         |---|---|---:|---:|---:|---:|---:|---|---:|",
        o.burst,
        w.fanout(),
        o.cfg.capacity
    );
    let mut all_ok = true;
    let mut growth = Vec::new();
    for (s, name, policy) in &configs {
        let cfg = RunConfig {
            overflow: *policy,
            ..o.cfg.clone()
        };
        let mut first_rss = None;
        for k in 0..repeats {
            bar.set_message(format!("{} {name} #{k}", s.name()));
            let step = Step {
                rate: None,
                duration: Duration::from_secs(3_600),
                max_messages: Some(o.burst),
            };
            let r = run_step(*s, &w, &cfg, &step);
            let h = r.all();
            let (ok, handled) = match r.extra.books {
                Some((routed, handled)) => (
                    routed == handled + r.extra.failed + r.extra.dropped && handled == h.delivered,
                    handled,
                ),
                None => (r.drained, h.delivered),
            };
            all_ok &= ok && r.drained;
            if k == 0 {
                first_rss = Some(r.rss.1);
            } else if let Some(f) = first_rss {
                growth.push(r.rss.1 as f64 - f as f64);
            }
            let _ = writeln!(
                rep.body,
                "| {} | {name} | {} | {} | {} | {handled} | {} | {} | {} → {} |",
                s.name(),
                k + 1,
                fmt_ns(r.total_ns),
                fmt_rate(r.throughput()),
                r.extra.dropped,
                if ok { "exact" } else { "**MISMATCH**" },
                fmt_mib(r.rss.0),
                fmt_mib(r.rss.1)
            );
            keep(&mut rep, &format!("burst {name} #{}", k + 1), &r);
            bar.inc(1);
        }
    }
    let worst = growth.iter().copied().fold(0.0f64, f64::max);
    rep.goals.push(Goal {
        what: "burst accounting (routed = handled + failed + dropped)".into(),
        target: "exact".into(),
        measured: if all_ok {
            "exact in every run".into()
        } else {
            "mismatch".into()
        },
        met: all_ok,
    });
    rep.goals.push(Goal {
        what: "memory after repeated bursts (growth over the first repeat)".into(),
        target: "≤ 4 MiB".into(),
        measured: fmt_mib(worst.max(0.0) as u64),
        met: worst <= 4.0 * 1024.0 * 1024.0,
    });
    bar.finish_with_message("done");
    rep
}

// ------------------------------------------------------------------ churn

/// Background subscriptions owned by a thread that churns them (or not).
struct Churner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, Duration)>>,
}

impl Churner {
    /// Installs `n` background receivers on `bus`, then (when `rate` > 0)
    /// replaces them at `rate` changes per second until stopped.
    fn start(bus: &Bus<Payload>, n: usize, rate: f64) -> Self {
        let mut rx = Vec::with_capacity(n);
        for i in 0..n {
            let opts = SubscribeOptions::new()
                .pattern(workloads::churn_pattern(i))
                .capacity(1);
            match bus.receiver_with(opts) {
                Ok(r) => rx.push(r),
                Err(_) => break,
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let bus = bus.clone();
        let thread = std::thread::spawn(move || {
            let mut rng = SmallRng::seed_from_u64(7);
            let mut changes = 0u64;
            let mut next = n;
            let mut ticker = Ticker::new(Duration::from_millis(1));
            let per_tick = rate / 1_000.0;
            let mut owed = 0.0;
            while !flag.load(Ordering::Relaxed) {
                if rate > 0.0 {
                    owed += per_tick;
                    while owed >= 1.0 {
                        owed -= 1.0;
                        if changes.is_multiple_of(2) && !rx.is_empty() {
                            let k = rng.gen_range(0..rx.len());
                            drop(rx.swap_remove(k));
                        } else {
                            let opts = SubscribeOptions::new()
                                .pattern(workloads::churn_pattern(next))
                                .capacity(1);
                            next += 1;
                            match bus.receiver_with(opts) {
                                Ok(r) => rx.push(r),
                                Err(_) => return (changes, ticker.elapsed()),
                            }
                        }
                        changes += 1;
                    }
                }
                // Pace by the wall clock (the churner is load, not a
                // measurement).
                ticker.wait();
            }
            (changes, ticker.elapsed())
        });
        Churner {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops churning; changes made and over how long.
    fn finish(mut self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or((0, Duration::ZERO))
    }
}

/// Publishing while 100 K subscriptions churn at 10 K changes/s.
pub fn churn(o: &Opts) -> Report {
    let w = workloads::headline(&o.patterns);
    let (subs, rate) = o.churn;
    let bar = progress("churn", (3 * o.runs) as u64);
    let mut rep = new_report("churn", "Churn: publishing while subscriptions change");
    let mut rows: Vec<(Mode, StepResult, f64)> = Vec::new();
    for _ in 0..o.runs {
        for mode in [Mode::Still, Mode::Elsewhere, Mode::Here] {
            bar.set_message(mode.name());
            let mut churners = Vec::new();
            // The control churns an unrelated bus of the same size: the same
            // CPU, allocator and cache load, but nothing the publisher reads.
            let other = (mode == Mode::Elsewhere).then(|| {
                Bus::<Payload>::builder()
                    .workers(1)
                    .build()
                    .expect("build the control bus")
            });
            let r = run_step_prepared(
                System::Topicbus,
                &w,
                &o.cfg,
                &open(o.moderate, o.step),
                &mut |bus| {
                    let here = if mode == Mode::Here { rate } else { 0.0 };
                    churners.push(Churner::start(bus, subs, here));
                    if let Some(other) = &other {
                        churners.push(Churner::start(other, subs, rate));
                    }
                },
            );
            let (changes, over) = churners
                .into_iter()
                .map(Churner::finish)
                .fold((0, Duration::ZERO), |(c, d), (c2, d2)| (c + c2, d.max(d2)));
            if let Some(other) = other {
                let _ = other.shutdown(Duration::from_secs(10));
            }
            let achieved = changes as f64 / over.as_secs_f64().max(1e-9);
            keep(&mut rep, mode.name(), &r);
            rows.push((mode, r, achieved));
            bar.inc(1);
        }
    }
    let _ = writeln!(
        rep.body,
        "The headline workload at {} offered, with {subs} background subscriptions (patterns \
         under `churn.`, one in ten with a wildcard) installed. *still*: nothing changes. \
         *churn elsewhere* (the control): a thread replaces {subs} subscriptions of a second, \
         unrelated bus at {} changes/s (half unsubscribes, half subscribes): the same CPU, \
         allocator and cache load on this 2-vCPU machine, nothing the publisher reads. \
         *churn here*: the same thread churns the measured bus's own table. Publish = the \
         duration of the `publish` call; end-to-end = corrected latency.\n\n\
         | run | changes/s achieved | publish p50 | publish p99 | publish max | e2e p50 | e2e p99 | e2e max |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|",
        fmt_rate(o.moderate),
        fmt_rate(rate)
    );
    for (mode, r, achieved) in &rows {
        let h = r.all();
        let _ = writeln!(
            rep.body,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            mode.name(),
            fmt_rate(*achieved),
            fmt_ns(p(&r.publish_call, 0.5) as u64),
            fmt_ns(p(&r.publish_call, 0.99) as u64),
            fmt_ns(r.publish_call.max()),
            fmt_ns(p(&h.corrected, 0.5) as u64),
            fmt_ns(p(&h.corrected, 0.99) as u64),
            fmt_ns(h.corrected.max()),
        );
    }
    let pick = |mode: Mode, f: &dyn Fn(&StepResult) -> f64| -> f64 {
        median(
            &rows
                .iter()
                .filter(|r| r.0 == mode)
                .map(|r| f(&r.1))
                .collect::<Vec<_>>(),
        )
    };
    let call = |r: &StepResult| p(&r.publish_call, 0.99);
    let e2e = |r: &StepResult| p(&r.all().corrected, 0.99);
    let (still, control, here) = (
        pick(Mode::Still, &call),
        pick(Mode::Elsewhere, &call),
        pick(Mode::Here, &call),
    );
    let (e_still, e_control, e_here) = (
        pick(Mode::Still, &e2e),
        pick(Mode::Elsewhere, &e2e),
        pick(Mode::Here, &e2e),
    );
    let change = (here - control) / control;
    let _ = writeln!(
        rep.body,
        "\nMedians of {} run(s). Publish p99: still {}, churn elsewhere {}, churn here {} \
         (here vs the control: {:+.1} %; vs still: {:+.1} %). End-to-end p99: {} / {} / {}.",
        o.runs,
        fmt_ns(still as u64),
        fmt_ns(control as u64),
        fmt_ns(here as u64),
        change * 100.0,
        (here - still) / still * 100.0,
        fmt_ns(e_still as u64),
        fmt_ns(e_control as u64),
        fmt_ns(e_here as u64),
    );
    rep.goals.push(Goal {
        what: format!(
            "publish p99 under churn ({subs} subscriptions, {} changes/s), vs the same load churning another bus",
            fmt_rate(rate)
        ),
        target: "moves ≤ 10 %".into(),
        measured: format!(
            "{:+.1} % ({} → {}; still {})",
            change * 100.0,
            fmt_ns(control as u64),
            fmt_ns(here as u64),
            fmt_ns(still as u64)
        ),
        met: change <= 0.10,
    });
    bar.finish_with_message("done");
    rep
}

/// The churn scenario's three runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No subscription changes.
    Still,
    /// The same churn on an unrelated bus (the control).
    Elsewhere,
    /// Churn on the measured bus.
    Here,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Still => "still",
            Mode::Elsewhere => "churn elsewhere",
            Mode::Here => "churn here",
        }
    }
}

// ------------------------------------------------------------ degradation

/// One slow and one failing subscription must not hurt the others.
pub fn degradation(o: &Opts) -> Report {
    let healthy = workloads::headline(&o.patterns);
    let mut degraded = healthy.clone();
    // The slow one is matched by a quarter of the messages and sleeps 500 µs
    // per message: far more work than one thread can do, so its mailbox
    // fills and drops by its policy. The failing one errors on everything.
    let slow = degraded
        .subs
        .iter()
        .position(|s| s.pattern.as_ref() == "sensor.*.temp.*")
        .unwrap_or(0);
    let failing = degraded
        .subs
        .iter()
        .position(|s| s.pattern.as_ref() == "#.co2.*")
        .unwrap_or(1);
    degraded.subs[slow].behavior = Behavior::Slow(Duration::from_micros(500));
    degraded.subs[slow].class = 1;
    degraded.subs[slow].mailbox = Some((256, OverflowPolicy::DropNewest));
    degraded.subs[failing].behavior = Behavior::Failing;
    degraded.subs[failing].class = 1;
    let degraded = Workload::new(
        degraded.topics.clone(),
        degraded.sequence.clone(),
        degraded.subs,
    );
    let mut healthy = healthy;
    // Same classes in both runs so the "others" are the same subscriptions.
    healthy.subs[slow].class = 1;
    healthy.subs[failing].class = 1;
    let healthy = Workload::new(
        healthy.topics.clone(),
        healthy.sequence.clone(),
        healthy.subs,
    );
    let cfg = RunConfig {
        workers: o.cfg.workers.max(2),
        ..o.cfg.clone()
    };
    let systems = [System::Topicbus, System::HandRolled];
    let bar = progress("degradation", (2 * systems.len() * o.runs) as u64);
    let mut rep = new_report(
        "degradation",
        "Degradation: one slow and one failing subscription among sixteen",
    );
    let mut p99s: Vec<((System, bool), Vec<f64>)> = Vec::new();
    for _ in 0..o.runs {
        for s in systems {
            for (bad, w) in [(false, &healthy), (true, &degraded)] {
                bar.set_message(format!(
                    "{} {}",
                    s.name(),
                    if bad { "degraded" } else { "healthy" }
                ));
                let r = run_step(s, w, &cfg, &open(o.moderate, o.step));
                keep(&mut rep, if bad { "degraded" } else { "healthy" }, &r);
                let v = p(&r.classes[0].corrected, 0.99);
                match p99s.iter_mut().find(|(k, _)| *k == (s, bad)) {
                    Some((_, xs)) => xs.push(v),
                    None => p99s.push(((s, bad), vec![v])),
                }
                bar.inc(1);
            }
        }
    }
    let _ = writeln!(
        rep.body,
        "The headline workload at {} offered on {} workers. Degraded: `{}` sleeps 500 µs per \
         message (its mailbox: 256 per lane, drop newest) and `{}` fails every message. The \
         table shows the corrected p99 of the other fourteen subscriptions, medians of {} \
         run(s). The hand-rolled bus has no per-subscription policy: its publisher blocks on \
         the slow mailbox, so everyone waits.\n\n\
         | system | healthy p99 | degraded p99 | degraded ÷ healthy |\n|---|---:|---:|---:|",
        fmt_rate(o.moderate),
        cfg.workers,
        healthy.subs[slow].pattern,
        healthy.subs[failing].pattern,
        o.runs
    );
    let get = |k: (System, bool)| {
        p99s.iter()
            .find(|(x, _)| *x == k)
            .map_or(f64::NAN, |(_, v)| median(v))
    };
    for s in systems {
        let (h, d) = (get((s, false)), get((s, true)));
        let _ = writeln!(
            rep.body,
            "| {} | {} | {} | {:.2}× |",
            s.name(),
            fmt_ns(h as u64),
            fmt_ns(d as u64),
            d / h
        );
    }
    let (h, d) = (
        get((System::Topicbus, false)),
        get((System::Topicbus, true)),
    );
    rep.goals.push(Goal {
        what: "others' p99 with a slow and a failing subscription".into(),
        target: "not raised (≤ 1.25×, the noise band here)".into(),
        measured: format!(
            "{:.2}× ({} → {})",
            d / h,
            fmt_ns(h as u64),
            fmt_ns(d as u64)
        ),
        met: d / h <= 1.25,
    });
    bar.finish_with_message("done");
    rep
}

// ------------------------------------------------------------------- soak

/// RSS over time at a sustained rate with 1,024 subscriptions.
pub fn soak(o: &Opts) -> Report {
    let w = workloads::headline_with(1_024, &o.patterns);
    let (length, rate) = o.soak;
    let bar = progress("soak", 1);
    bar.set_message(format!(
        "{:.0} s at {}",
        length.as_secs_f64(),
        fmt_rate(rate)
    ));
    let mut rep = new_report(
        "soak",
        "Soak: memory and latency over time, 1,024 subscriptions",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let interval = if o.quick {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(250)
    };
    // The sampler sees the bus once `prepare` hands it over (weakly, so the
    // sampler never keeps it alive).
    let bus_slot: Arc<Mutex<Option<WeakBus<Payload>>>> = Arc::default();
    let publishing = AtomicU64::new(0);
    let start = now_ns();
    let sampler = {
        let (stop, bus_slot) = (Arc::clone(&stop), Arc::clone(&bus_slot));
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut ticker = Ticker::new(interval);
            while !stop.load(Ordering::Relaxed) {
                let queued = bus_slot
                    .lock()
                    .ok()
                    .and_then(|b| b.as_ref().and_then(WeakBus::upgrade))
                    .map_or(0, |bus| {
                        bus.stats()
                            .subscriptions
                            .iter()
                            .map(|s| s.queued.iter().sum::<usize>())
                            .sum()
                    });
                samples.push(SoakSample {
                    t: (now_ns() - start) as f64 / 1e9,
                    rss: rss_bytes(),
                    threads: proc_threads(),
                    fds: open_fds(),
                    queued,
                });
                ticker.wait();
            }
            samples
        })
    };
    let r = run_step_prepared(
        System::Topicbus,
        &w,
        &o.cfg,
        &open(rate, length),
        &mut |bus| {
            if let Ok(mut slot) = bus_slot.lock() {
                *slot = Some(bus.downgrade());
            }
            publishing.store(now_ns() - start, Ordering::Relaxed);
        },
    );
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    keep(&mut rep, "soak", &r);
    bar.inc(1);
    let n = samples.len();
    // Flatness is judged over the second half of the publishing (after
    // warm-up and the first fills; not the drain and shutdown after it).
    let from = (publishing.load(Ordering::Relaxed) + r.publish_ns / 2) as f64 / 1e9;
    let to = (publishing.load(Ordering::Relaxed) + r.publish_ns) as f64 / 1e9;
    let half: Vec<&SoakSample> = samples
        .iter()
        .filter(|s| (from..=to).contains(&s.t))
        .collect();
    let range = |f: fn(&SoakSample) -> u64| -> (u64, u64) {
        let v = half.iter().map(|s| f(s));
        (v.clone().min().unwrap_or(0), v.max().unwrap_or(0))
    };
    let max = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let growth = match (half.first(), half.last()) {
        (Some(a), Some(b)) => b.rss as f64 - a.rss as f64,
        _ => 0.0,
    };
    let (threads, fds) = (range(|s| s.threads), range(|s| s.fds));
    let queued = range(|s| s.queued as u64);
    // What the mailboxes can hold: three lanes of `capacity` per subscription.
    let bound = (w.subs.len() * 3 * o.cfg.capacity) as u64;
    rep.csv.push_str("\nt_s,rss_bytes,threads,fds,queued\n");
    for s in &samples {
        let _ = writeln!(
            rep.csv,
            "{:.3},{},{},{},{}",
            s.t, s.rss, s.threads, s.fds, s.queued
        );
    }
    let _ = writeln!(
        rep.body,
        "topicbus, {} subscriptions ({:.2} deliveries per message), {} offered for {:.0} s, \
         sampled every {} ms ({n} samples): RSS, the process's threads and open file \
         descriptors, and the messages queued in all mailboxes (`Bus::stats`). RSS is the \
         whole process's: the bus plus the generator's histograms and workload tables.\n\n\
         | RSS first | RSS max | RSS last | RSS growth over the second half | threads (2nd half) | \
         fds (2nd half) | queued (2nd half, min–max) |\n|---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {} | {} | {}–{} | {}–{} | {}–{} |\n",
        w.subs.len(),
        w.fanout(),
        fmt_rate(rate),
        length.as_secs_f64(),
        interval.as_millis(),
        fmt_mib(samples.first().map_or(0, |s| s.rss)),
        fmt_mib(max),
        fmt_mib(samples.last().map_or(0, |s| s.rss)),
        if growth >= 0.0 {
            fmt_mib(growth as u64)
        } else {
            format!("−{}", fmt_mib(-growth as u64))
        },
        threads.0,
        threads.1,
        fds.0,
        fds.1,
        queued.0,
        queued.1,
    );
    rep.body.push_str(&latency_table_header("run"));
    rep.body.push_str(&latency_row("soak", &r));
    let series = |name: &str, f: fn(&SoakSample) -> f64| -> Series {
        (name.into(), samples.iter().map(|s| (s.t, f(s))).collect())
    };
    rep.plots.push(Plot {
        title: "RSS over the soak".into(),
        x: "time (s)".into(),
        y: "RSS (MiB)".into(),
        log_x: false,
        log_y: false,
        series: vec![series("RSS", |s| s.rss as f64 / 1048576.0)],
    });
    rep.plots.push(Plot {
        title: "Queued messages and handles over the soak".into(),
        x: "time (s)".into(),
        y: "count".into(),
        log_x: false,
        log_y: false,
        series: vec![
            series("queued (all mailboxes)", |s| s.queued as f64),
            series("threads", |s| s.threads as f64),
            series("open fds", |s| s.fds as f64),
        ],
    });
    rep.goals.push(Goal {
        what: format!("RSS at {} offered with 1,024 subscriptions", fmt_rate(rate)),
        target: "≤ 64 MiB".into(),
        measured: format!("max {}", fmt_mib(max)),
        met: max <= 64 * 1024 * 1024,
    });
    rep.goals.push(Goal {
        what: "RSS flat over the soak (second half)".into(),
        target: "growth ≤ 1 MiB".into(),
        measured: format!("{:+.2} MiB", growth / 1048576.0),
        met: growth <= 1048576.0,
    });
    rep.goals.push(Goal {
        what: "threads and open fds flat over the soak (second half)".into(),
        target: "no change".into(),
        measured: format!(
            "threads {}–{}, fds {}–{}",
            threads.0, threads.1, fds.0, fds.1
        ),
        met: threads.0 == threads.1 && fds.0 == fds.1,
    });
    rep.goals.push(Goal {
        what: "queued messages bounded (second half)".into(),
        target: format!("≤ {bound} (3 lanes × capacity × subscriptions)"),
        measured: format!("max {}", queued.1),
        met: queued.1 <= bound,
    });
    bar.finish_with_message("done");
    rep
}

/// One sample of the soak's resource use.
struct SoakSample {
    t: f64,
    rss: u64,
    threads: u64,
    fds: u64,
    queued: usize,
}

/// The process's thread count (`/proc/self/status`), 0 if unreadable.
fn proc_threads() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The process's open file descriptors (`/proc/self/fd`), 0 if unreadable.
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

// ------------------------------------------------------------------ mixed

/// The realistic mixed workload.
pub fn mixed(o: &Opts) -> Report {
    let w = workloads::mixed();
    let systems = [System::Topicbus, System::HandRolled];
    let bar = progress("mixed", (systems.len() * o.runs) as u64);
    let mut rep = new_report(
        "mixed",
        "Mixed workload: 10,000 topics, 1,004 subscriptions, a queue group, three priorities",
    );
    let _ = writeln!(
        rep.body,
        "10,000 topics `<domain>.<region>.e<n>.<event>` (a fifth of them take 80 % of the \
         traffic), 1,000 subscriptions (one in ten with `*` or `#`, leading, middle and \
         trailing), a queue group of four on `orders.#`, priorities 10 % high / 80 % normal / \
         10 % low; {:.2} deliveries per message; {} offered, {} worker(s).\n",
        w.fanout(),
        fmt_rate(o.moderate),
        o.cfg.workers
    );
    rep.body.push_str(&latency_table_header("system"));
    let mut lanes_md = String::new();
    for _ in 0..o.runs {
        for s in systems {
            bar.set_message(s.name());
            let r = run_step(s, &w, &o.cfg, &open(o.moderate, o.step));
            rep.body.push_str(&latency_row(s.name(), &r));
            if let (System::Topicbus, Some(lanes)) = (s, &r.lanes) {
                for (name, h) in ["high", "normal", "low"].iter().zip(lanes) {
                    let _ = writeln!(
                        lanes_md,
                        "| {name} | {} | {} |",
                        h.delivered,
                        quantile_cells(&h.corrected)
                    );
                }
            }
            keep(&mut rep, "mixed", &r);
            bar.inc(1);
        }
    }
    let (names, align) = quantile_header();
    let _ = writeln!(
        rep.body,
        "\nPer priority lane (topicbus; the hand-rolled bus has no lanes), corrected latency:\n\n\
         | lane | deliveries | {names} |\n|---|---:|{align}|\n{lanes_md}"
    );
    bar.finish_with_message("done");
    rep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systems::{SubSpec, Workload};
    use topicbus::Topic;

    fn cfg() -> RunConfig {
        RunConfig {
            workers: 1,
            capacity: 4,
            overflow: OverflowPolicy::Block {
                timeout: Duration::from_secs(60),
            },
            pin: false,
            payload: 0,
            inline: false,
        }
    }

    #[test]
    fn corrected_latency_grows_without_bound_above_saturation() {
        // One subscriber that takes 200 µs per message (spinning on the
        // clock: service time, not a sleep) offered one every 50 µs: four
        // times its capacity. The publisher blocks on the full 4-slot lane,
        // so the naive latency (from the actual send) stays bounded by the
        // queue, while the corrected one (from the intended send) grows with
        // every message: message i is late by about i × 150 µs.
        let topic = Topic::parse("a.b").expect("topic");
        let mut sub = SubSpec::new("a.b");
        sub.behavior = Behavior::Busy(Duration::from_micros(200));
        let w = Workload::new(vec![topic], vec![0], vec![sub]);
        let n = 400u64;
        let step = Step {
            rate: Some(20_000.0),
            // Long enough that the blocked publisher never gives up: the
            // step ends after `n` messages.
            duration: Duration::from_secs(60),
            max_messages: Some(n),
        };
        let r = run_step(System::Topicbus, &w, &cfg(), &step);
        let h = r.all();
        assert!(r.drained);
        // Warm-up is the first tenth: 360 timed deliveries.
        assert_eq!(h.corrected.len(), n - n / 10);
        // The last messages wait for everything before them: at least
        // 400 × 200 µs = 80 ms after the first was due, intended 20 ms in.
        let corrected_max = h.corrected.max();
        let naive_max = h.naive.max();
        assert!(corrected_max > 40_000_000, "corrected max {corrected_max}");
        // Naive stays near the queue length × service time (a few ms at
        // most, generous for a loaded machine).
        assert!(
            corrected_max > 4 * naive_max,
            "corrected {corrected_max} naive {naive_max}"
        );
        // And it grows: the median of the timed deliveries is far above the
        // queueing the naive figure sees.
        assert!(h.corrected.value_at_quantile(0.5) > 10_000_000);
    }

    #[test]
    fn every_system_delivers_every_routed_message_closed_loop() {
        let w = workloads::headline(&workloads::headline_patterns());
        let step = Step {
            rate: None,
            duration: Duration::from_secs(60),
            max_messages: Some(5_000),
        };
        let expected = (0..5_000usize)
            .map(|i| w.routes[w.sequence[i % w.sequence.len()] as usize].len() as u64)
            .sum::<u64>();
        for s in [System::Topicbus, System::HandRolled, System::TokioBroadcast] {
            let r = run_step(
                s,
                &w,
                &RunConfig {
                    capacity: 1024,
                    ..cfg()
                },
                &step,
            );
            let h = r.all();
            assert!(r.drained, "{s:?}");
            assert_eq!(r.sent, 5_000, "{s:?}");
            assert_eq!(h.delivered + h.lost, expected, "{s:?}");
        }
        let r = run_step(System::RawChannel, &w, &cfg(), &step);
        assert_eq!(r.all().delivered, 5_000);
    }

    #[test]
    fn csv_rows_have_the_headers_columns() {
        let w = workloads::fanout(2);
        let step = Step {
            rate: Some(50_000.0),
            duration: Duration::from_millis(20),
            max_messages: None,
        };
        let r = run_step(System::Topicbus, &w, &cfg(), &step);
        let row = csv_row("unit", "a,b", &r);
        let header: Vec<_> = CSV_HEADER.trim_end().split(',').collect();
        let cells: Vec<_> = row.trim_end().split(',').collect();
        assert_eq!(header.len(), cells.len());
        assert_eq!(cells[0], "unit");
        assert_eq!(cells[1], "a;b");
        assert_eq!(cells[2], "topicbus");
        assert_eq!(cells[4], r.sent.to_string());
        // At most 1,000 messages at 50 K/s for 20 ms (fewer when the host
        // cannot keep up, e.g. under AddressSanitizer), two deliveries each.
        assert!((1..=1_000).contains(&r.sent), "{}", r.sent);
        assert_eq!(cells[8], (2 * r.sent).to_string());
    }
}
