//! topicbus's main job: an open-loop load generator that writes honest
//! performance reports into `perf-reports/` (BENCHMARKING.md).
//!
//! ```text
//! cargo run --release --example loadgen                      # headline scenarios, a few minutes
//! cargo run --release --example loadgen -- --quick           # CI smoke run, seconds
//! cargo run --release --example loadgen -- --scenario sustained --step-secs 10 --runs 3
//! cargo run --release --example loadgen -- --scenario soak --soak-secs 3600
//! cargo run --release --example loadgen -- --help
//! ```
//!
//! Method: message `i` is due at `start + i / rate` (a spinning pacer); the
//! handler records its start minus the intended time (coordinated-omission
//! corrected) and minus the actual send time (naive) into HdrHistograms, one
//! per recording thread, merged at the end. Each measurement runs beside a
//! jHiccup-style meter; CPU time comes from `getrusage`. Baselines run in
//! the same process, on the same workload, through the same harness.

#![allow(missing_docs, unreachable_pub)]

mod measure;
mod report;
mod scenarios;
mod systems;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use topicbus::OverflowPolicy;

use crate::scenarios::Opts;
use crate::systems::{RunConfig, System};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Every scenario below.
    All,
    /// Saturation, the rate sweep and the goal points.
    Sustained,
    /// 100 K messages back to back per policy.
    Burst,
    /// One topic to 1 / 16 / 64 / 1,024 subscriptions.
    Fanout,
    /// Publishing while subscriptions churn.
    Churn,
    /// One slow and one failing subscription among sixteen.
    Degradation,
    /// RSS and latency over time.
    Soak,
    /// Many topics, wildcards, a queue group, priorities.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Baseline {
    /// The hand-rolled crossbeam-mailbox bus.
    HandRolled,
    /// One crossbeam channel handoff.
    RawChannel,
    /// tokio::sync::broadcast per topic.
    TokioBroadcast,
}

/// topicbus load generator: open-loop, coordinated-omission corrected,
/// with same-run baselines; reports go to `--out`.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Scenarios to run (repeatable).
    #[arg(long, value_enum, default_values_t = [Scenario::All])]
    scenario: Vec<Scenario>,
    /// A single offered rate (msgs/s) for the sustained scenario instead of
    /// the sweep.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds per open-loop measurement (reported figures: 10 or more).
    #[arg(long)]
    step_secs: Option<f64>,
    /// Seconds per closed-loop (saturation) measurement.
    #[arg(long)]
    sat_secs: Option<f64>,
    /// Repetitions of each headline measurement (medians reported).
    #[arg(long)]
    runs: Option<usize>,
    /// Fan-out sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64, 1024])]
    subscribers: Vec<usize>,
    /// Patterns of the sustained workload (comma-separated; default: the
    /// 16 headline patterns over `sensor.<site>.<kind>.<id>`).
    #[arg(long, value_delimiter = ',')]
    patterns: Option<Vec<String>>,
    /// Payload body size in bytes.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// Worker threads of every system (1 leaves the other core to the
    /// publisher on a 2-vCPU machine: never more spinners than cores).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Mailbox / channel capacity (topicbus: per lane).
    #[arg(long, default_value_t = 1024)]
    capacity: usize,
    /// Pin the publisher to core 0 and workers to the next cores.
    #[arg(long)]
    pin: bool,
    /// Baselines to compare with (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    baselines: Option<Vec<Baseline>>,
    /// Soak length in seconds (3600 for the one-hour soak).
    #[arg(long)]
    soak_secs: Option<f64>,
    /// Offered rate of the soak (msgs/s).
    #[arg(long, default_value_t = 1_000_000.0)]
    soak_rate: f64,
    /// Offered rate of the churn, degradation and mixed scenarios (msgs/s).
    #[arg(long)]
    moderate_rate: Option<f64>,
    /// Background subscriptions for the churn scenario.
    #[arg(long)]
    churn_subs: Option<usize>,
    /// Subscription changes per second in the churn scenario.
    #[arg(long)]
    churn_rate: Option<f64>,
    /// A CI smoke run: short steps, one run each, smaller sets.
    #[arg(long)]
    quick: bool,
    /// Report directory.
    #[arg(long, default_value = "perf-reports")]
    out: PathBuf,
}

fn opts(a: &Args) -> Opts {
    let q = a.quick;
    let secs = |v: Option<f64>, quick: f64, full: f64| {
        Duration::from_secs_f64(v.unwrap_or(if q { quick } else { full }))
    };
    let systems = match &a.baselines {
        None => vec![
            System::HandRolled,
            System::RawChannel,
            System::TokioBroadcast,
        ],
        Some(b) => b
            .iter()
            .map(|b| match b {
                Baseline::HandRolled => System::HandRolled,
                Baseline::RawChannel => System::RawChannel,
                Baseline::TokioBroadcast => System::TokioBroadcast,
            })
            .collect(),
    };
    Opts {
        quick: q,
        step: secs(a.step_secs, 0.2, 2.0),
        sat: secs(a.sat_secs, 0.2, 1.0),
        runs: a.runs.unwrap_or(if q { 1 } else { 3 }).max(1),
        cfg: RunConfig {
            workers: a.workers.max(1),
            capacity: a.capacity.max(1),
            overflow: OverflowPolicy::Block {
                timeout: Duration::from_secs(60),
            },
            pin: a.pin,
            payload: a.payload,
            inline: false,
        },
        patterns: a
            .patterns
            .clone()
            .unwrap_or_else(workloads::headline_patterns),
        fanout: a.subscribers.clone(),
        rate: a.rate,
        systems,
        soak: (
            secs(a.soak_secs, 1.0, 20.0),
            if q {
                a.soak_rate.min(200_000.0)
            } else {
                a.soak_rate
            },
        ),
        churn: (
            a.churn_subs.unwrap_or(if q { 5_000 } else { 100_000 }),
            a.churn_rate.unwrap_or(if q { 1_000.0 } else { 10_000.0 }),
        ),
        moderate: a
            .moderate_rate
            .unwrap_or(if q { 20_000.0 } else { 100_000.0 }),
        burst: if q { 20_000 } else { 100_000 },
    }
}

fn main() {
    let args = Args::parse();
    let o = opts(&args);
    for p in &o.patterns {
        if let Err(e) = topicbus::Pattern::parse(p) {
            eprintln!("error: pattern `{p}`: {e}");
            std::process::exit(2);
        }
    }
    let mut scenarios = args.scenario.clone();
    if scenarios.contains(&Scenario::All) {
        // The soak first: its RSS figures then see a process no other
        // scenario has grown (the allocator keeps what it got).
        scenarios = vec![
            Scenario::Soak,
            Scenario::Sustained,
            Scenario::Fanout,
            Scenario::Burst,
            Scenario::Churn,
            Scenario::Degradation,
            Scenario::Mixed,
        ];
    }
    let given: Vec<String> = std::env::args().skip(1).collect();
    let command = if given.is_empty() {
        "cargo run --release --example loadgen".to_owned()
    } else {
        format!(
            "cargo run --release --example loadgen -- {}",
            given.join(" ")
        )
    };
    let ctx = report::Context::new(args.out.clone(), command, o.cfg.pin, o.cfg.workers);
    if o.cfg.pin {
        eprintln!("pinning: publisher on core 0, workers on the next cores");
    }
    let mut written = Vec::new();
    let mut goals = Vec::new();
    for s in scenarios {
        let rep = match s {
            Scenario::All => continue,
            Scenario::Sustained => scenarios::sustained(&o),
            Scenario::Burst => scenarios::burst(&o),
            Scenario::Fanout => scenarios::fanout(&o),
            Scenario::Churn => scenarios::churn(&o),
            Scenario::Degradation => scenarios::degradation(&o),
            Scenario::Soak => scenarios::soak(&o),
            Scenario::Mixed => scenarios::mixed(&o),
        };
        match report::write(&ctx, &rep) {
            Ok(path) => {
                println!("{}: {}", rep.scenario, path.display());
                for g in &rep.goals {
                    println!(
                        "  {:<60} {:>14}  {}  {}",
                        g.what,
                        g.target,
                        g.measured,
                        if g.met { "met" } else { "MISSED" }
                    );
                }
                written.push((rep.scenario.clone(), path));
                goals.extend(rep.goals);
            }
            Err(e) => {
                eprintln!("error: writing the {} report: {e}", rep.scenario);
                std::process::exit(1);
            }
        }
    }
    if let Err(e) = report::update_index(&ctx, &goals, &written) {
        eprintln!("error: updating {}/README.md: {e}", ctx.out.display());
        std::process::exit(1);
    }
    println!("index: {}", ctx.out.join("README.md").display());
}
