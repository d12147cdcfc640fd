//! Reports: markdown with machine details, CSV, HdrHistogram interval logs,
//! SVG plots, and the headline section of `perf-reports/README.md`.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use plotters::prelude::*;

/// One goal from the issue, as measured.
#[derive(Debug, Clone)]
pub struct Goal {
    /// What is measured.
    pub what: String,
    /// The target.
    pub target: String,
    /// The measured figure.
    pub measured: String,
    /// Whether it met the target.
    pub met: bool,
}

/// A line series for a plot: a name and (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

/// A plot: title, axis labels, log scales, series.
#[derive(Debug, Clone)]
pub struct Plot {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x: String,
    /// Y axis label.
    pub y: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

/// Everything one scenario leaves behind.
#[derive(Debug, Default)]
pub struct Report {
    /// File-name part (`sustained`, `burst`, …).
    pub scenario: String,
    /// Heading.
    pub title: String,
    /// Markdown body (tables, notes).
    pub body: String,
    /// Raw rows, with a header line.
    pub csv: String,
    /// Tagged histograms for the interval log.
    pub histograms: Vec<(String, Histogram<u64>)>,
    /// Plots (written as `<scenario>[-n].svg`).
    pub plots: Vec<Plot>,
    /// Goals measured by this scenario.
    pub goals: Vec<Goal>,
}

/// Where and how the run happened.
#[derive(Debug, Clone)]
pub struct Context {
    /// The report directory.
    pub out: PathBuf,
    /// Date (YYYY-MM-DD) used in file names.
    pub date: String,
    /// The command line that reproduces the run.
    pub command: String,
    /// Machine details, as markdown lines.
    pub machine: Vec<(String, String)>,
    /// Suffix of every file name (`-pinned` for pinned runs).
    pub suffix: String,
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Context {
    /// Reads the machine details.
    pub fn new(out: PathBuf, command: String, pin: bool, workers: usize) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let rustc = run("rustc", &["-V"]).unwrap_or_else(|| "unknown".into());
        let commit =
            run("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty());
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        let date = run("date", &["+%Y-%m-%d"]).unwrap_or_else(|| "undated".into());
        Context {
            out,
            date,
            command,
            suffix: if pin { "-pinned".into() } else { String::new() },
            machine: vec![
                ("CPU".into(), cpu),
                ("vCPUs".into(), vcpus.to_string()),
                ("kernel".into(), kernel),
                ("rustc".into(), rustc),
                ("topicbus".into(), env!("CARGO_PKG_VERSION").into()),
                (
                    "commit".into(),
                    format!(
                        "{commit}{}",
                        if dirty {
                            " (with uncommitted changes)"
                        } else {
                            ""
                        }
                    ),
                ),
                ("profile".into(), profile.into()),
                (
                    "pinning".into(),
                    if pin {
                        "publisher on core 0, worker n on core n + 1 (mod cores)".into()
                    } else {
                        "none (the OS schedules)".into()
                    },
                ),
                ("workers".into(), workers.to_string()),
            ],
        }
    }

    fn stem(&self, scenario: &str) -> String {
        format!("{}-{scenario}{}", self.date, self.suffix)
    }
}

/// Formats nanoseconds for a table: ns below 10 µs, µs below 10 ms, ms.
pub fn fmt_ns(ns: u64) -> String {
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// Formats a rate (messages per second).
pub fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} K/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}

/// Formats bytes as MiB.
pub fn fmt_mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// The percentiles every latency table shows.
pub const QUANTILES: [(f64, &str); 6] = [
    (0.5, "p50"),
    (0.9, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
    (1.0, "max"),
];

/// `| p50 | p90 | … | max |` cells of `h` (a dash when empty).
pub fn quantile_cells(h: &Histogram<u64>) -> String {
    QUANTILES
        .iter()
        .map(|(q, _)| {
            if h.is_empty() {
                "–".to_owned()
            } else {
                fmt_ns(h.value_at_quantile(*q))
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The header cells matching [`quantile_cells`].
pub fn quantile_header() -> (String, String) {
    let names: Vec<_> = QUANTILES.iter().map(|(_, n)| *n).collect();
    (names.join(" | "), vec!["---:"; names.len()].join(" | "))
}

/// The median of `xs` (NaN when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `min–max` of `xs`, formatted by `f`.
pub fn spread(xs: &[f64], f: impl Fn(f64) -> String) -> String {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if xs.len() < 2 {
        String::new()
    } else {
        format!("{}–{}", f(lo), f(hi))
    }
}

/// Writes `report` into the context's directory: `.md`, `.csv`, `.hlog`
/// and `.svg` files. Returns the markdown file's path.
///
/// # Errors
///
/// Any I/O error.
pub fn write(ctx: &Context, report: &Report) -> io::Result<PathBuf> {
    std::fs::create_dir_all(&ctx.out)?;
    let stem = ctx.stem(&report.scenario);
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", report.title);
    let _ = writeln!(md, "Command: `{}`\n", ctx.command);
    let _ = writeln!(md, "| machine | |\n|---|---|");
    for (k, v) in &ctx.machine {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    md.push('\n');
    if !report.goals.is_empty() {
        md.push_str(&goals_table(&report.goals));
        md.push('\n');
    }
    md.push_str(&report.body);
    let mut files = vec![format!("[`{stem}.csv`]({stem}.csv) (raw rows)")];
    if !report.histograms.is_empty() {
        files.push(format!(
            "[`{stem}.hlog`]({stem}.hlog) (HdrHistogram interval log, one tagged histogram per measurement, ns)"
        ));
    }
    for (i, plot) in report.plots.iter().enumerate() {
        let name = plot_name(&stem, i);
        svg(&ctx.out.join(&name), plot)?;
        let _ = writeln!(md, "\n![{}]({name})", plot.title);
    }
    let _ = writeln!(md, "\nRaw data: {}.", files.join(", "));
    std::fs::write(ctx.out.join(format!("{stem}.csv")), &report.csv)?;
    if !report.histograms.is_empty() {
        write_hlog(&ctx.out.join(format!("{stem}.hlog")), &report.histograms)?;
    }
    let path = ctx.out.join(format!("{stem}.md"));
    std::fs::write(&path, md)?;
    Ok(path)
}

fn plot_name(stem: &str, i: usize) -> String {
    if i == 0 {
        format!("{stem}.svg")
    } else {
        format!("{stem}-{i}.svg")
    }
}

/// The goals as a markdown table.
pub fn goals_table(goals: &[Goal]) -> String {
    let mut md = String::from("| goal | target | measured | |\n|---|---|---|---|\n");
    for g in goals {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            g.what,
            g.target,
            g.measured,
            if g.met { "met" } else { "**missed**" }
        );
    }
    md
}

fn tag_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes tagged histograms as an HdrHistogram interval log.
///
/// # Errors
///
/// Any I/O or serialization error.
pub fn write_hlog(path: &Path, histograms: &[(String, Histogram<u64>)]) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(
                "topicbus loadgen: latencies in nanoseconds, one histogram per measurement",
            )
            .with_start_time(std::time::SystemTime::now())
            .begin_log_with(&mut buf, &mut ser)?;
        for (i, (tag, h)) in histograms.iter().enumerate() {
            let tag = tag_safe(tag);
            w.write_histogram(
                h,
                std::time::Duration::from_secs(i as u64),
                std::time::Duration::from_secs(1),
                Tag::new(&tag),
            )
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        }
    }
    std::fs::write(path, buf)
}

/// Draws `plot` as an SVG file.
///
/// # Errors
///
/// Any drawing or I/O error.
pub fn svg(path: &Path, plot: &Plot) -> io::Result<()> {
    let err = |e: &dyn std::fmt::Display| io::Error::other(e.to_string());
    let pts = plot.series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (1.0, 10.0, 1.0, 10.0);
    }
    let (x0, x1) = if plot.log_x {
        (x0.max(1e-9) / 1.2, x1 * 1.2)
    } else {
        (x0.min(0.0), x1 * 1.05)
    };
    let (y0, y1) = if plot.log_y {
        (y0.max(1e-9) / 1.5, y1 * 1.5)
    } else {
        (y0.min(0.0), y1 * 1.1)
    };
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(&plot.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(plot.x.as_str())
                .y_desc(plot.y.as_str())
                .draw()
                .map_err(|e| err(&e))?;
            for (i, (name, points)) in plot.series.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let points: Vec<_> = points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!plot.log_y || *y > 0.0))
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| err(&e))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(|e| err(&e))?;
        }};
    }
    match (plot.log_x, plot.log_y) {
        (false, false) => draw!(builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?),
        (true, false) => draw!(builder
            .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
            .map_err(|e| err(&e))?),
        (false, true) => draw!(builder
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(|e| err(&e))?),
        (true, true) => draw!(builder
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(|e| err(&e))?),
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Marks around the generated part of `perf-reports/README.md`.
const BEGIN: &str =
    "<!-- loadgen:begin (written by the load generator; edit outside the marks) -->";
const END: &str = "<!-- loadgen:end -->";

/// Rewrites the generated section of `<out>/README.md`: the goals of this
/// run and links to its reports. Text outside the marks is kept; the
/// section is appended when the marks are missing.
///
/// # Errors
///
/// Any I/O error.
pub fn update_index(
    ctx: &Context,
    goals: &[Goal],
    reports: &[(String, PathBuf)],
) -> io::Result<()> {
    let path = ctx.out.join("README.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Performance reports\n".into());
    let mut section = format!("{BEGIN}\n## Latest load-generator run ({})\n\n", ctx.date);
    let _ = writeln!(section, "Command: `{}`\n", ctx.command);
    let _ = writeln!(
        section,
        "Machine: {}.\n",
        ctx.machine
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !goals.is_empty() {
        section.push_str(&goals_table(goals));
        section.push('\n');
    }
    for (scenario, p) in reports {
        let name = p
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let _ = writeln!(section, "- {scenario}: [`{name}`]({name})");
    }
    section.push_str(END);
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loadgen-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn ctx(out: PathBuf) -> Context {
        Context {
            out,
            date: "2026-01-02".into(),
            command: "cargo run --release --example loadgen -- --quick".into(),
            machine: vec![("CPU".into(), "test".into())],
            suffix: String::new(),
        }
    }

    #[test]
    fn median_and_formatting() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(fmt_ns(950), "950 ns");
        assert_eq!(fmt_ns(12_340), "12.3 µs");
        assert_eq!(fmt_ns(25_000_000), "25.0 ms");
        assert_eq!(fmt_rate(2_500_000.0), "2.50 M/s");
        assert_eq!(spread(&[1.0, 3.0, 2.0], |x| format!("{x}")), "1–3");
    }

    #[test]
    fn report_files_are_written_and_read_back() {
        let dir = scratch("write");
        let mut h = crate::measure::histogram();
        for v in [1_000u64, 2_000, 3_000] {
            h.record(v).expect("record");
        }
        let report = Report {
            scenario: "unit".into(),
            title: "Unit".into(),
            body: "| a |\n|---|\n| 1 |\n".into(),
            csv: "system,rate\ntopicbus,1000\n".into(),
            histograms: vec![("topicbus rate=1000".into(), h.clone())],
            plots: vec![Plot {
                title: "latency".into(),
                x: "offered".into(),
                y: "ns".into(),
                log_x: false,
                log_y: true,
                series: vec![("p99".into(), vec![(1.0, 10.0), (2.0, 100.0)])],
            }],
            goals: vec![Goal {
                what: "p99".into(),
                target: "≤ 1 ms".into(),
                measured: "0.5 ms".into(),
                met: true,
            }],
        };
        let c = ctx(dir.clone());
        let md_path = write(&c, &report).expect("write");
        let md = std::fs::read_to_string(&md_path).expect("md");
        assert!(md.contains("# Unit") && md.contains("| p99 | ≤ 1 ms | 0.5 ms | met |"));
        assert!(md.contains("2026-01-02-unit.svg") && md.contains(&c.command));
        let csv = std::fs::read_to_string(dir.join("2026-01-02-unit.csv")).expect("csv");
        let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
        assert_eq!(rows, vec![vec!["system", "rate"], vec!["topicbus", "1000"]]);
        let svg = std::fs::read_to_string(dir.join("2026-01-02-unit.svg")).expect("svg");
        assert!(svg.starts_with("<svg") && svg.contains("latency"));
        // The interval log parses back to the same histogram and tag.
        let log = std::fs::read(dir.join("2026-01-02-unit.hlog")).expect("hlog");
        let entries: Vec<_> = IntervalLogIterator::new(&log)
            .filter_map(|e| match e {
                Ok(LogEntry::Interval(i)) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].tag().map(|t| t.as_str()),
            Some("topicbus_rate_1000")
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(entries[0].encoded_histogram())
            .expect("base64");
        let back: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .expect("deserialize");
        assert_eq!(back, h);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn index_section_is_replaced_not_appended_twice() {
        let dir = scratch("index");
        std::fs::write(dir.join("README.md"), "# Reports\n\nHand-written notes.\n").expect("seed");
        let c = ctx(dir.clone());
        let goal = |m: &str| Goal {
            what: "saturation".into(),
            target: "≥ 5 M/s".into(),
            measured: m.into(),
            met: false,
        };
        let reports = vec![("sustained".to_owned(), dir.join("2026-01-02-sustained.md"))];
        update_index(&c, &[goal("1 M/s")], &reports).expect("first");
        update_index(&c, &[goal("2 M/s")], &reports).expect("second");
        let s = std::fs::read_to_string(dir.join("README.md")).expect("readme");
        assert!(s.contains("Hand-written notes."));
        assert_eq!(s.matches(BEGIN).count(), 1);
        assert!(s.contains("2 M/s") && !s.contains("| 1 M/s"));
        assert!(s.contains("[`2026-01-02-sustained.md`](2026-01-02-sustained.md)"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
