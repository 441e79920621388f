//! `--compare`: the relay against a baseline, run alternately in pairs
//! (relay, baseline, relay, baseline …) so that a drift of the machine touches
//! both alike, and per figure the ratio relay / baseline of their medians.

use super::report::Report;
use super::{Mode, Options};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// What the relay is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// gen → sink with no relay in between: the ceiling.
    Direct,
    /// A bare kernel rewrite on loopback (ports swapped, nothing checked or
    /// counted): the least any kernel forwarder costs, for the fast path.
    Bare,
}

impl Baseline {
    /// The runs that stand for it.
    pub fn mode(self) -> Mode {
        match self {
            Baseline::Direct => Mode::Direct,
            Baseline::Bare => Mode::Bare,
        }
    }

    /// Its name in the report: the key of its runs and medians.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Direct => "direct",
            Baseline::Bare => "bare",
        }
    }
}

/// Runs the relay (`o.mode`) and `baseline` alternately, relay first, `pairs`
/// times each; `step` is told about each run as it ends (the side's name,
/// the pair's number from 1, the run).
pub fn run(
    o: &Options,
    baseline: Baseline,
    pairs: u16,
    mut step: impl FnMut(&str, u16, &Report),
) -> Result<Comparison, String> {
    let relay = Options {
        progress: false,
        ..o.clone()
    };
    let other = Options {
        mode: baseline.mode(),
        ..relay.clone()
    };
    let name = baseline.name();
    let mut done = Vec::new();
    for i in 1..=pairs {
        let r = super::run(&relay).map_err(|e| format!("relay run {i}: {e}"))?;
        step("relay", i, &r);
        let b = super::run(&other).map_err(|e| format!("{name} run {i}: {e}"))?;
        step(name, i, &b);
        done.push(Pair {
            relay: r,
            baseline: b,
        });
    }
    Ok(Comparison::new(baseline, done))
}

/// The figures compared. Each is `None` where it could not be had: a run
/// without the machine's CPU, or a ratio over a zero baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Latency median, milliseconds.
    pub latency_p50_ms: Option<f64>,
    /// Latency 99th percentile, milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// Latency 99.9th percentile, milliseconds.
    pub latency_p999_ms: Option<f64>,
    /// Latency maximum, milliseconds.
    pub latency_max_ms: Option<f64>,
    /// The whole machine's CPU per RTP packet sent, microseconds.
    pub box_cpu_us_per_packet: Option<f64>,
    /// Share of the RTP packets lost.
    pub loss_ratio: Option<f64>,
}

/// How many figures are compared.
const FIGURES: usize = 6;

impl Figures {
    /// A run's figures.
    pub fn of(r: &Report) -> Figures {
        Figures {
            latency_p50_ms: Some(r.latency_ms.p50),
            latency_p99_ms: Some(r.latency_ms.p99),
            latency_p999_ms: Some(r.latency_ms.p999),
            latency_max_ms: Some(r.latency_ms.max),
            box_cpu_us_per_packet: r.box_cpu_us_per_packet,
            loss_ratio: Some(r.loss_ratio),
        }
    }

    /// The figures in a fixed order, for the arithmetic done alike on each.
    fn values(&self) -> [Option<f64>; FIGURES] {
        [
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.latency_p999_ms,
            self.latency_max_ms,
            self.box_cpu_us_per_packet,
            self.loss_ratio,
        ]
    }

    /// Figures from [`Figures::values`]' order.
    fn from_values(v: [Option<f64>; FIGURES]) -> Figures {
        let [p50, p99, p999, max, cpu, loss] = v;
        Figures {
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            latency_p999_ms: p999,
            latency_max_ms: max,
            box_cpu_us_per_packet: cpu,
            loss_ratio: loss,
        }
    }

    /// Per figure, the median over `runs` (of the runs that have it).
    pub fn median(runs: &[Figures]) -> Figures {
        Figures::from_values(std::array::from_fn(|i| {
            median(runs.iter().map(|r| r.values()[i]))
        }))
    }

    /// Per figure, `relay` / `baseline`.
    pub fn ratio(relay: &Figures, baseline: &Figures) -> Figures {
        let (r, b) = (relay.values(), baseline.values());
        Figures::from_values(std::array::from_fn(|i| ratio(r[i], b[i])))
    }
}

/// The median of the finite `values`: the middle one, or the mean of the two
/// middle ones when their number is even; none without any.
fn median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.flatten().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[mid]),
        _ => Some((v[mid - 1] + v[mid]) / 2.0),
    }
}

/// `relay` / `baseline`; none when either is missing or the baseline is not
/// above zero (nothing lost directly: no ratio, rather than infinity).
fn ratio(relay: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    let (r, b) = (relay?, baseline?);
    (b > 0.0).then(|| r / b).filter(|x| x.is_finite())
}

/// One relay run and the baseline run after it.
#[derive(Clone, Debug)]
pub struct Pair {
    /// Through the relay.
    pub relay: Report,
    /// The baseline's.
    pub baseline: Report,
}

/// The outcome of `--compare`. As JSON: `{"pairs": [{"relay": …, "direct":
/// …}], "medians": {"relay": …, "direct": …}, "ratios": …}`, the baseline
/// named as given.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// What the relay was compared with.
    pub baseline: Baseline,
    /// The runs, in the order run.
    pub pairs: Vec<Pair>,
    /// The relay's medians.
    pub relay_medians: Figures,
    /// The baseline's medians.
    pub baseline_medians: Figures,
    /// Per figure, the relay's median / the baseline's.
    pub ratios: Figures,
}

impl Comparison {
    /// The medians and ratios of `pairs`.
    pub fn new(baseline: Baseline, pairs: Vec<Pair>) -> Comparison {
        let side = |f: fn(&Pair) -> &Report| {
            Figures::median(&pairs.iter().map(|p| Figures::of(f(p))).collect::<Vec<_>>())
        };
        let relay_medians = side(|p| &p.relay);
        let baseline_medians = side(|p| &p.baseline);
        Comparison {
            baseline,
            ratios: Figures::ratio(&relay_medians, &baseline_medians),
            relay_medians,
            baseline_medians,
            pairs,
        }
    }
}

/// The relay's and the baseline's of something, keyed `relay` and by the
/// baseline's name.
struct Sides<'a, T> {
    baseline: Baseline,
    relay: &'a T,
    other: &'a T,
}

impl<T: Serialize> Serialize for Sides<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("relay", self.relay)?;
        map.serialize_entry(self.baseline.name(), self.other)?;
        map.end()
    }
}

impl Serialize for Comparison {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let baseline = self.baseline;
        let pairs: Vec<Sides<Report>> = self
            .pairs
            .iter()
            .map(|p| Sides {
                baseline,
                relay: &p.relay,
                other: &p.baseline,
            })
            .collect();
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("pairs", &pairs)?;
        map.serialize_entry(
            "medians",
            &Sides {
                baseline,
                relay: &self.relay_medians,
                other: &self.baseline_medians,
            },
        )?;
        map.serialize_entry("ratios", &self.ratios)?;
        map.end()
    }
}

/// The comparison as a table an operator reads: each run's figures, the
/// medians and their ratios, then each run's warnings.
pub fn table(c: &Comparison) -> String {
    let name = c.baseline.name();
    let mut out = String::new();
    if let Some(first) = c.pairs.first() {
        out.push_str(&format!(
            "{} vs {name}: {} pairs of runs, {} groups of {}, {:.1} s each\n\n",
            first.relay.mode,
            c.pairs.len(),
            first.relay.groups,
            first.relay.layout,
            first.relay.seconds
        ));
    }
    let row = |out: &mut String, label: &str, cells: [String; FIGURES]| {
        out.push_str(&format!("{label:<16}"));
        for cell in cells {
            out.push_str(&format!(" {cell:>10}"));
        }
        out.push('\n');
    };
    row(
        &mut out,
        "run",
        [
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "µs/packet",
            "loss %",
        ]
        .map(String::from),
    );
    let figures = |f: &Figures| {
        let [p50, p99, p999, max, cpu, loss] = f.values();
        let ms = |v: Option<f64>| cell(v, |v| format!("{v:.3}"));
        [
            ms(p50),
            ms(p99),
            ms(p999),
            ms(max),
            cell(cpu, |v| format!("{v:.2}")),
            cell(loss, |v| format!("{:.4}", v * 100.0)),
        ]
    };
    for (i, p) in c.pairs.iter().enumerate() {
        row(
            &mut out,
            &format!("relay {}", i + 1),
            figures(&Figures::of(&p.relay)),
        );
        row(
            &mut out,
            &format!("{name} {}", i + 1),
            figures(&Figures::of(&p.baseline)),
        );
    }
    row(&mut out, "median relay", figures(&c.relay_medians));
    row(
        &mut out,
        &format!("median {name}"),
        figures(&c.baseline_medians),
    );
    row(
        &mut out,
        &format!("relay / {name}"),
        c.ratios.values().map(|v| cell(v, |v| format!("{v:.2}"))),
    );
    out.push_str(
        "\nµs/packet: the whole machine's CPU per RTP packet sent; ratios of the medians (n/a over a zero)\n",
    );
    for (i, p) in c.pairs.iter().enumerate() {
        for (side, r) in [("relay", &p.relay), (name, &p.baseline)] {
            for w in &r.warnings {
                out.push_str(&format!("\nWARNING ({side} {}): {w}\n", i + 1));
            }
        }
    }
    out
}

/// A figure as `show` writes it, or `n/a`.
fn cell(v: Option<f64>, show: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "n/a".into(), show)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::loadtest::report::tests::measurement;

    /// A run with these latencies (p50, p99, p99.9, max), machine CPU per
    /// packet and loss.
    fn run(mode: &str, latency: [f64; 4], cpu: Option<f64>, loss: f64) -> Report {
        let mut r = Report::new(measurement());
        r.mode = mode.into();
        let [p50, p99, p999, max] = latency;
        r.latency_ms = crate::traffic::sink::Latency {
            p50,
            p99,
            p999,
            max,
        };
        r.box_cpu_us_per_packet = cpu;
        r.loss_ratio = loss;
        r.warnings.clear();
        r
    }

    fn pair(relay: Report, direct: Report) -> Pair {
        Pair {
            relay,
            baseline: direct,
        }
    }

    #[test]
    fn the_median_is_the_middle_or_the_mean_of_the_two_middle_values() {
        let m = |v: &[Option<f64>]| median(v.iter().copied());
        assert_eq!(m(&[Some(3.0), Some(1.0), Some(2.0)]), Some(2.0));
        assert_eq!(m(&[Some(4.0), Some(1.0), Some(3.0), Some(2.0)]), Some(2.5));
        assert_eq!(m(&[Some(7.0)]), Some(7.0));
        assert_eq!(m(&[Some(1.0), Some(2.0)]), Some(1.5));
        assert_eq!(m(&[]), None);
        assert_eq!(m(&[None, None]), None);
        // Missing and non-finite values are left out, not counted as 0.
        assert_eq!(m(&[Some(1.0), None, Some(3.0)]), Some(2.0));
        assert_eq!(
            m(&[Some(f64::NAN), Some(5.0), Some(f64::INFINITY)]),
            Some(5.0)
        );
    }

    #[test]
    fn a_ratio_needs_both_figures_and_a_baseline_above_zero() {
        assert_eq!(ratio(Some(3.0), Some(1.5)), Some(2.0));
        assert_eq!(ratio(Some(0.0), Some(2.0)), Some(0.0));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None, "not infinity");
        assert_eq!(ratio(Some(0.0), Some(0.0)), None, "not NaN");
        assert_eq!(ratio(Some(1.0), Some(-1.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(1e308), Some(1e-308)), None, "overflows");
    }

    #[test]
    fn figures_keep_their_places_through_the_arithmetic() {
        let r = run("spawn", [1.0, 2.0, 3.0, 4.0], Some(5.0), 0.5);
        let f = Figures::of(&r);
        assert_eq!(
            f,
            Figures {
                latency_p50_ms: Some(1.0),
                latency_p99_ms: Some(2.0),
                latency_p999_ms: Some(3.0),
                latency_max_ms: Some(4.0),
                box_cpu_us_per_packet: Some(5.0),
                loss_ratio: Some(0.5),
            }
        );
        assert_eq!(Figures::from_values(f.values()), f);
        assert_eq!(Figures::median(&[f]), f);
        let halves = Figures::ratio(
            &f,
            &Figures::of(&run("direct", [2.0, 4.0, 6.0, 8.0], Some(10.0), 1.0)),
        );
        assert_eq!(halves.values(), [Some(0.5); FIGURES]);
    }

    #[test]
    fn three_pairs_compare_by_their_medians() {
        let c = Comparison::new(
            Baseline::Direct,
            vec![
                pair(
                    run("spawn", [0.2, 1.0, 2.0, 9.0], Some(30.0), 0.0),
                    run("direct", [0.1, 0.5, 1.0, 2.0], Some(10.0), 0.0),
                ),
                pair(
                    run("spawn", [0.3, 3.0, 4.0, 5.0], Some(20.0), 0.001),
                    run("direct", [0.1, 0.5, 1.0, 3.0], Some(12.0), 0.0),
                ),
                pair(
                    run("spawn", [0.4, 2.0, 3.0, 4.0], None, 0.0),
                    run("direct", [0.2, 1.0, 1.5, 1.0], Some(8.0), 0.0),
                ),
            ],
        );
        assert_eq!(
            c.relay_medians,
            Figures {
                latency_p50_ms: Some(0.3),
                latency_p99_ms: Some(2.0),
                latency_p999_ms: Some(3.0),
                latency_max_ms: Some(5.0),
                // Of the two runs that have it.
                box_cpu_us_per_packet: Some(25.0),
                loss_ratio: Some(0.0),
            }
        );
        assert_eq!(
            c.baseline_medians,
            Figures {
                latency_p50_ms: Some(0.1),
                latency_p99_ms: Some(0.5),
                latency_p999_ms: Some(1.0),
                latency_max_ms: Some(2.0),
                box_cpu_us_per_packet: Some(10.0),
                loss_ratio: Some(0.0),
            }
        );
        assert_eq!(
            c.ratios,
            Figures {
                latency_p50_ms: Some(0.3 / 0.1),
                latency_p99_ms: Some(4.0),
                latency_p999_ms: Some(3.0),
                latency_max_ms: Some(2.5),
                box_cpu_us_per_packet: Some(2.5),
                // Nothing lost directly: no ratio.
                loss_ratio: None,
            }
        );
    }

    #[test]
    fn two_pairs_compare_by_the_mean_of_each_sides_two_runs() {
        let c = Comparison::new(
            Baseline::Direct,
            vec![
                pair(
                    run("relay", [1.0, 2.0, 3.0, 4.0], Some(4.0), 0.002),
                    run("direct", [0.5, 1.0, 1.0, 1.0], Some(2.0), 0.001),
                ),
                pair(
                    run("relay", [3.0, 4.0, 5.0, 6.0], Some(6.0), 0.004),
                    run("direct", [1.5, 1.0, 1.0, 3.0], Some(3.0), 0.0),
                ),
            ],
        );
        assert_eq!(c.relay_medians.latency_p50_ms, Some(2.0));
        assert_eq!(c.baseline_medians.latency_p50_ms, Some(1.0));
        assert_eq!(c.ratios.latency_p50_ms, Some(2.0));
        assert_eq!(c.ratios.latency_max_ms, Some(2.5));
        assert_eq!(c.ratios.box_cpu_us_per_packet, Some(2.0));
        // 0.003 / 0.0005.
        let loss = c.ratios.loss_ratio.unwrap();
        assert!((loss - 6.0).abs() < 1e-9, "{loss}");
    }

    #[test]
    fn as_json_the_baseline_is_named_and_a_missing_ratio_is_null() {
        let c = Comparison::new(
            Baseline::Direct,
            vec![pair(
                run("spawn", [0.2, 1.0, 2.0, 4.0], Some(30.0), 0.0),
                run("direct", [0.1, 0.5, 1.0, 2.0], Some(10.0), 0.0),
            )],
        );
        let v = serde_json::to_value(&c).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(keys(&v), ["medians", "pairs", "ratios"]);
        assert_eq!(v["pairs"].as_array().unwrap().len(), 1);
        assert_eq!(keys(&v["pairs"][0]), ["direct", "relay"]);
        assert_eq!(v["pairs"][0]["relay"]["mode"], "spawn");
        assert_eq!(v["pairs"][0]["direct"]["mode"], "direct");
        assert_eq!(v["pairs"][0]["relay"]["latency_ms"]["p99"], 1.0);
        assert_eq!(keys(&v["medians"]), ["direct", "relay"]);
        assert_eq!(v["medians"]["direct"]["latency_max_ms"], 2.0);
        assert_eq!(v["ratios"]["latency_p99_ms"], 2.0);
        assert_eq!(v["ratios"]["box_cpu_us_per_packet"], 3.0);
        assert!(v["ratios"]["loss_ratio"].is_null(), "{v}");
    }

    #[test]
    fn the_table_shows_every_run_the_medians_and_the_ratios() {
        let mut relay = run("spawn", [0.2, 1.0, 2.0, 4.0], Some(30.0), 0.0);
        relay.warnings.push("the relay run's doubt".into());
        let mut direct = run("direct", [0.1, 0.5, 1.0, 2.0], None, 0.0);
        direct.warnings.push("the direct run's doubt".into());
        let t = table(&Comparison::new(
            Baseline::Direct,
            vec![pair(relay, direct)],
        ));
        assert!(
            t.starts_with(
                "spawn vs direct: 1 pairs of runs, 1 groups of audio-display-video, 2.0 s each\n\n"
            ),
            "{t}"
        );
        for row in [
            "run                  p50 ms     p99 ms   p99.9 ms     max ms  µs/packet     loss %",
            "relay 1               0.200      1.000      2.000      4.000      30.00     0.0000",
            "direct 1              0.100      0.500      1.000      2.000        n/a     0.0000",
            "median relay          0.200      1.000      2.000      4.000      30.00     0.0000",
            "median direct         0.100      0.500      1.000      2.000        n/a     0.0000",
            "relay / direct         2.00       2.00       2.00       2.00        n/a        n/a",
        ] {
            assert!(t.lines().any(|l| l == row), "no row {row:?} in\n{t}");
        }
        assert!(
            t.ends_with(
                "\nWARNING (relay 1): the relay run's doubt\n\nWARNING (direct 1): the direct run's doubt\n"
            ),
            "{t}"
        );
    }

    #[test]
    fn the_direct_baseline_runs_without_a_relay() {
        assert!(matches!(Baseline::Direct.mode(), Mode::Direct));
        assert_eq!(Baseline::Direct.name(), "direct");
        assert_eq!(Baseline::Direct.mode().name(), "direct");
    }
}
