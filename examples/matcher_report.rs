//! The matcher performance report: topicbus against same-run baselines,
//! written to `perf-reports/<date>-matcher.md` with the raw CSV beside it.
//!
//! ```sh
//! cargo run --release --example matcher_report            # full (a few minutes)
//! cargo run --release --example matcher_report -- --quick # CI smoke (seconds)
//! ```
//!
//! Instruction counts for one match (repeatable whatever the machine's load):
//!
//! ```sh
//! cargo build --release --example matcher_report
//! valgrind --tool=callgrind --toggle-collect='*measured_matches*' \
//!     target/release/examples/matcher_report --callgrind subjects_37k
//! ```
//!
//! `--callgrind <workload>` runs each of the workload's 1,024 queries once
//! inside `measured_matches` and prints the count to divide by;
//! `--passes N` runs them N times, for a cache simulation closer to the
//! steady state (`perf-reports/matcher.md`, 2026-12-06):
//!
//! ```sh
//! valgrind --tool=callgrind --cache-sim=yes --D1=32768,8,64 --LL=1048576,16,64 \
//!     --toggle-collect='*measured_matches*' \
//!     target/release/examples/matcher_report --callgrind subjects_37k --passes 4
//! ```
//!
//! Method (BENCHMARKING.md): the implementations run interleaved, round by
//! round, so they share the machine's noise; every ratio is taken within one
//! round; the report quotes medians over the rounds with their spread.
//! Criterion (`cargo bench --bench matcher`) measures the same workloads with
//! its own statistics; this report exists to be reproducible in one command
//! and to keep raw numbers.

#[path = "../benches/common/workload.rs"]
mod workload;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use topicbus::registry::Registry;
use topicbus::Pattern;

struct Config {
    quick: bool,
    callgrind: Option<String>,
    /// Passes over the queries in `--callgrind` mode: one counts a cold
    /// cache, more come close to the steady state a cache simulation needs.
    passes: usize,
    rounds: usize,
    out: PathBuf,
}

fn config() -> Result<Config, String> {
    let mut quick = false;
    let mut callgrind = None;
    let mut passes = 1;
    let mut out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/perf-reports"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--callgrind" => callgrind = Some(args.next().ok_or("--callgrind needs a workload")?),
            "--passes" => {
                passes = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--passes needs a positive number")?
            }
            "--out" => out = args.next().ok_or("--out needs a directory")?.into(),
            "-h" | "--help" => {
                println!(
                    "usage: matcher_report [--quick] [--out DIR] \
                     [--callgrind subjects_37k|mixed_1000|mixed_10000|mixed_100000|hash15 \
                     [--passes N]]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(Config {
        quick,
        callgrind,
        passes,
        rounds: if quick { 3 } else { 7 },
        out,
    })
}

/// One measured row: per-round nanoseconds per operation.
struct Row {
    group: String,
    subject: String,
    ns: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    (lo, hi)
}

/// Times `iters` calls of `f`, returns ns per call.
fn time_per_op(iters: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..iters {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn match_rows(cfg: &Config, rows: &mut Vec<Row>) {
    let mut loads = vec![
        workload::subjects(),
        workload::mixed(1_000),
        workload::mixed(10_000),
    ];
    if !cfg.quick {
        loads.push(workload::mixed(100_000));
    }
    for w in &loads {
        let m = w.matcher();
        let z = w.zenoh();
        let lin = (w.patterns.len() <= 37_000).then(|| w.linear());
        w.check_agreement(&m, &z, lin.as_ref());
        let q = &w.queries;
        let scale = if cfg.quick { 10 } else { 1 };
        let mut ours = Vec::new();
        let mut zen = Vec::new();
        let mut scan = Vec::new();
        for _ in 0..cfg.rounds {
            ours.push(time_per_op(400_000 / scale, |i| {
                let mut acc = 0u32;
                m.for_each_match(&q[i & 1023], |v| acc = acc.wrapping_add(*v));
                black_box(acc);
            }));
            zen.push(time_per_op(20_000 / scale, |i| {
                let mut acc = 0u32;
                z.matches(i & 1023, |v| acc = acc.wrapping_add(v));
                black_box(acc);
            }));
            if let Some(lin) = &lin {
                let iters = (20_000_000 / w.patterns.len() / scale).max(16);
                scan.push(time_per_op(iters, |i| {
                    let mut acc = 0u32;
                    lin.matches(&q[i & 1023], |v| acc = acc.wrapping_add(v));
                    black_box(acc);
                }));
            }
        }
        let group = format!("match/{}", w.name);
        rows.push(Row {
            group: group.clone(),
            subject: "topicbus".into(),
            ns: ours,
        });
        rows.push(Row {
            group: group.clone(),
            subject: "zenoh_ketree".into(),
            ns: zen,
        });
        if !scan.is_empty() {
            rows.push(Row {
                group,
                subject: "linear_scan".into(),
                ns: scan,
            });
        }
    }

    let w = workload::hash15();
    let m = w.matcher();
    let z = w.zenoh();
    let lin = w.linear();
    w.check_agreement(&m, &z, Some(&lin));
    let (mut ours, mut zen, mut reference) = (Vec::new(), Vec::new(), Vec::new());
    let n = w.queries.len();
    for _ in 0..cfg.rounds {
        ours.push(time_per_op(20_000, |i| {
            m.for_each_match(&w.queries[i % n], |v| {
                black_box(v);
            })
        }));
        zen.push(time_per_op(20_000, |i| {
            z.matches(i % n, |v| {
                black_box(v);
            })
        }));
        reference.push(time_per_op(20_000, |i| {
            lin.matches(&w.queries[i % n], |v| {
                black_box(v);
            })
        }));
    }
    for (subject, ns) in [
        ("topicbus", ours),
        ("zenoh_ketree", zen),
        ("reference_dp", reference),
    ] {
        rows.push(Row {
            group: "hash15".into(),
            subject: subject.into(),
            ns,
        });
    }
}

fn churn_rows(cfg: &Config, rows: &mut Vec<Row>) {
    let sizes: &[usize] = if cfg.quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let extra: Vec<Pattern> = workload::mixed(1_000).patterns;
    for &n in sizes {
        let w = workload::mixed(n);
        let reg = Registry::new();
        reg.update(|b| {
            for (i, p) in w.patterns.iter().enumerate() {
                b.subscribe([p.clone()], i as u32);
            }
        });
        let (mut change, mut rebuild) = (Vec::new(), Vec::new());
        for _ in 0..cfg.rounds {
            // One subscribe plus one unsubscribe, reported per change.
            change.push(
                time_per_op(2_000, |i| {
                    let id = reg.subscribe([extra[i % extra.len()].clone()], u32::MAX);
                    black_box(reg.unsubscribe(id));
                }) / 2.0,
            );
            rebuild.push(time_per_op(if n >= 100_000 { 1 } else { 3 }, |_| {
                black_box(w.matcher());
            }));
        }
        let group = format!("churn/{n}");
        rows.push(Row {
            group: group.clone(),
            subject: "registry_change".into(),
            ns: change,
        });
        rows.push(Row {
            group,
            subject: "full_rebuild".into(),
            ns: rebuild,
        });
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> Vec<(&'static str, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    vec![
        ("date (UTC)", sh("date", &["-u", "+%Y-%m-%d %H:%M"])),
        ("cpu", cpu),
        ("vCPUs", cores.to_string()),
        ("kernel", sh("uname", &["-r"])),
        ("rustc", sh("rustc", &["-V"])),
        ("commit", sh("git", &["rev-parse", "--short", "HEAD"])),
        (
            "profile",
            if cfg!(debug_assertions) {
                "debug".into()
            } else {
                "release".into()
            },
        ),
    ]
}

/// `12.3×`, `0.90×`, or `1/8,000×` for small ratios.
fn fmt_ratio(r: f64) -> String {
    if r >= 0.1 {
        format!("{r:.2}×")
    } else {
        let inv = (1.0 / r).round() as u64;
        let digits = inv.to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("1/{grouped}×")
    }
}

/// Which subject each group's ratio is taken against.
fn ratio_base(group: &str) -> &'static str {
    if group.starts_with("churn") {
        "full_rebuild"
    } else {
        "topicbus"
    }
}

fn report(cfg: &Config, rows: &[Row]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Matcher report{}\n",
        if cfg.quick { " (quick)" } else { "" }
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    for (k, v) in machine() {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let cmd = if cfg.quick { " -- --quick" } else { "" };
    let _ = writeln!(
        md,
        "| command | `cargo run --release --example matcher_report{cmd}` |"
    );
    let _ = writeln!(
        md,
        "| rounds | {} (implementations interleaved per round) |\n",
        cfg.rounds
    );
    let _ = writeln!(
        md,
        "Times are per operation: one match of a query topic (1,024 queries cycled, half of them \
         hitting an exact subject), or one registry change (subscribe or unsubscribe). \
         `ratio` is the median over rounds of (this / the group's baseline in the same round): \
         for matches the baseline is topicbus, so `zenoh_ketree 100×` means zenoh is 100 times slower; \
         for churn it is the full rebuild, so `1/1,000×` means a change costs a thousandth of a rebuild.\n"
    );
    let _ = writeln!(
        md,
        "| group | subject | median | min – max | ratio |\n|---|---|---:|---:|---:|"
    );
    for r in rows {
        let base = rows
            .iter()
            .find(|b| b.group == r.group && b.subject == ratio_base(&r.group))
            .expect("baseline row");
        let ratios: Vec<f64> = r.ns.iter().zip(&base.ns).map(|(a, b)| a / b).collect();
        let (lo, hi) = spread(&r.ns);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} – {} | {} |",
            r.group,
            r.subject,
            fmt_ns(median(&r.ns)),
            fmt_ns(lo),
            fmt_ns(hi),
            fmt_ratio(median(&ratios))
        );
    }
    md
}

fn csv(rows: &[Row]) -> String {
    let mut out = String::from("group,subject,round,ns_per_op\n");
    for r in rows {
        for (i, ns) in r.ns.iter().enumerate() {
            let _ = writeln!(out, "{},{},{},{:.2}", r.group, r.subject, i, ns);
        }
    }
    out
}

/// The region callgrind counts (`--toggle-collect='*measured_matches*'`).
#[inline(never)]
fn measured_matches(m: &topicbus::matcher::Matcher<u32>, queries: &[topicbus::Topic]) -> u32 {
    let mut acc = 0u32;
    for q in queries {
        m.for_each_match(q, |v| acc = acc.wrapping_add(*v));
    }
    acc
}

fn callgrind(name: &str, passes: usize) -> Result<(), String> {
    let w = match name {
        "subjects_37k" => workload::subjects(),
        "hash15" => workload::hash15(),
        other => match other.strip_prefix("mixed_").and_then(|n| n.parse().ok()) {
            Some(n) => workload::mixed(n),
            None => return Err(format!("unknown workload {other:?}")),
        },
    };
    let m = w.matcher();
    for _ in 0..passes {
        black_box(measured_matches(&m, &w.queries));
    }
    println!(
        "{}: {} matches inside measured_matches: divide callgrind's counts by this",
        w.name,
        w.queries.len() * passes
    );
    Ok(())
}

fn main() {
    let cfg = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("matcher_report: {e}");
            std::process::exit(2);
        }
    };
    if let Some(name) = &cfg.callgrind {
        if let Err(e) = callgrind(name, cfg.passes) {
            eprintln!("matcher_report: {e}");
            std::process::exit(2);
        }
        return;
    }
    if cfg!(debug_assertions) {
        eprintln!("matcher_report: debug build; figures are meaningless without --release");
    }
    let mut rows = Vec::new();
    eprintln!("matching …");
    match_rows(&cfg, &mut rows);
    eprintln!("churn …");
    churn_rows(&cfg, &mut rows);

    let md = report(&cfg, &rows);
    print!("{md}");
    let stem = format!(
        "{}-matcher{}",
        sh("date", &["-u", "+%Y-%m-%d"]),
        if cfg.quick { "-quick" } else { "" }
    );
    let written = std::fs::create_dir_all(&cfg.out)
        .and_then(|()| std::fs::write(cfg.out.join(format!("{stem}.md")), &md))
        .and_then(|()| std::fs::write(cfg.out.join(format!("{stem}.csv")), csv(&rows)));
    match written {
        Ok(()) => eprintln!("wrote {}/{stem}.{{md,csv}}", cfg.out.display()),
        Err(e) => {
            eprintln!("matcher_report: cannot write to {}: {e}", cfg.out.display());
            std::process::exit(1);
        }
    }
}
