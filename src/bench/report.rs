//! The bench's figures, its targets, and how they are printed (a table, or Markdown for
//! BENCHMARKS.md).

use std::fmt::Write as _;

use serde::Serialize;

use super::child::{ChildReport, Latency};
use super::cpu::CpuShares;

/// One measured run of a contender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Run {
    pub records: u64,
    /// From its first record to its last one done.
    pub records_per_sec: f64,
    /// CPU (user + system) of the process between its first and its last record, per
    /// record.
    pub cpu_us_per_record: f64,
    /// CPU of the whole process (start-up and shutdown included, from `wait4`), per
    /// record.
    pub process_cpu_us_per_record: f64,
}

impl Run {
    /// A run from the child's own report and the CPU the parent saw it use in all.
    pub fn from_report(report: &ChildReport, process_cpu_secs: f64) -> Run {
        let n = report.records.max(1) as f64;
        let secs = (report.end_secs - report.first_record_secs).max(1e-9);
        Run {
            records: report.records,
            records_per_sec: report.records as f64 / secs,
            cpu_us_per_record: (report.cpu_at_end_secs - report.cpu_at_first_record_secs) * 1e6 / n,
            process_cpu_us_per_record: process_cpu_secs * 1e6 / n,
        }
    }
}

/// The median of each figure over several runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Contender {
    pub name: &'static str,
    pub runs: Vec<Run>,
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

impl Contender {
    pub fn new(name: &'static str) -> Contender {
        Contender {
            name,
            runs: Vec::new(),
        }
    }

    pub fn measured(&self) -> bool {
        !self.runs.is_empty()
    }

    pub fn records_per_sec(&self) -> f64 {
        median(self.runs.iter().map(|r| r.records_per_sec).collect())
    }

    pub fn cpu_us_per_record(&self) -> f64 {
        median(self.runs.iter().map(|r| r.cpu_us_per_record).collect())
    }

    pub fn process_cpu_us_per_record(&self) -> f64 {
        median(
            self.runs
                .iter()
                .map(|r| r.process_cpu_us_per_record)
                .collect(),
        )
    }
}

/// In-process figures of one record kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InprocessFigures {
    pub kind: &'static str,
    pub records_per_sec: Vec<f64>,
    pub instructions_per_record: Option<f64>,
}

impl InprocessFigures {
    pub fn median_records_per_sec(&self) -> f64 {
        median(self.records_per_sec.clone())
    }
}

/// Everything one bench run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub machine: String,
    pub broker: String,
    pub records: u64,
    pub runs: usize,
    pub payload_bytes: (usize, usize, usize),
    pub null: Contender,
    pub pipeline: Contender,
    pub peer: Contender,
    pub peer_version: String,
    pub validation: InprocessFigures,
    pub execution: InprocessFigures,
    pub latency_rate: f64,
    pub latency: Option<Latency>,
    /// Where the CPU went while the latency's measured records were produced.
    pub latency_cpu: Option<CpuShares>,
    pub counter_bytes_per_key: f64,
    pub max_tracked_keys: usize,
    pub key_idle_ttl_secs: u64,
    /// Chain heads held per partition once saved (`chain.max_heads_per_partition`).
    pub max_chain_heads: usize,
    pub head_idle_ttl_secs: u64,
}

/// One target: what, the figure, the bound, met or not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub id: &'static str,
    pub what: &'static str,
    pub figure: String,
    pub bound: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
}

/// "While the measured records were produced (10.0 s), the 2 cores were 85 % busy (of all
/// cores' time: the pipeline 48 %, …)"; a process not watched is left out.
fn cpu_shares(cpu: &CpuShares) -> String {
    let mut text = format!(
        "While the measured records were produced ({:.1} s), the {} cores were {:.0} % busy",
        cpu.secs,
        cpu.cores,
        cpu.busy * 100.0
    );
    let parts: Vec<String> = [
        ("the pipeline", cpu.pipeline),
        ("the broker", cpu.broker),
        ("the producing client", cpu.load_producer),
    ]
    .into_iter()
    .filter_map(|(who, share)| Some(format!("{who} {:.0} %", share? * 100.0)))
    .collect();
    if !parts.is_empty() {
        let _ = write!(text, " (of all cores' time: {})", parts.join(", "));
    }
    text
}

fn check(value: f64, ok: impl Fn(f64) -> bool) -> Option<bool> {
    (!value.is_nan()).then(|| ok(value))
}

impl Report {
    pub fn throughput_ratio(&self) -> f64 {
        self.pipeline.records_per_sec() / self.null.records_per_sec()
    }

    pub fn cpu_ratio_to_peer(&self) -> f64 {
        self.pipeline.cpu_us_per_record() / self.peer.cpu_us_per_record()
    }

    pub fn cpu_ratio_to_null(&self) -> f64 {
        self.pipeline.cpu_us_per_record() / self.null.cpu_us_per_record()
    }

    /// Every target of the bench, judged.
    pub fn targets(&self) -> Vec<Target> {
        let lat = self.latency.map(|l| l.p99_ms).unwrap_or(f64::NAN);
        let v = self.validation.median_records_per_sec();
        let e = self.execution.median_records_per_sec();
        vec![
            Target {
                id: "1",
                what: "throughput (b)/(a)",
                figure: format!("{:.2}", self.throughput_ratio()),
                bound: ">= 0.90".into(),
                met: check(self.throughput_ratio(), |r| r >= 0.9),
            },
            Target {
                id: "2a",
                what: "CPU/record (b)/(c)",
                figure: format!("{:.3}", self.cpu_ratio_to_peer()),
                bound: "<= 0.10".into(),
                met: check(self.cpu_ratio_to_peer(), |r| r <= 0.1),
            },
            Target {
                id: "2b",
                what: "CPU/record (b)/(a)",
                figure: format!("{:.2}", self.cpu_ratio_to_null()),
                bound: "<= 5".into(),
                met: check(self.cpu_ratio_to_null(), |r| r <= 5.0),
            },
            Target {
                id: "3a",
                what: "in process, validation records/s (1 core)",
                figure: format!("{v:.0}"),
                bound: ">= 200000".into(),
                met: check(v, |r| r >= 200_000.0),
            },
            Target {
                id: "3b",
                what: "in process, execution records/s (1 core)",
                figure: format!("{e:.0}"),
                bound: ">= 100000".into(),
                met: check(e, |r| r >= 100_000.0),
            },
            Target {
                id: "4",
                what: "p99 latency at half the max rate",
                figure: format!("{lat:.1} ms"),
                bound: "<= 50 ms".into(),
                met: check(lat, |l| l <= 50.0),
            },
            Target {
                id: "5",
                what: "counter state per tracked key",
                figure: format!("{:.0} B", self.counter_bytes_per_key),
                bound: "<= 256 B".into(),
                met: check(self.counter_bytes_per_key, |b| b <= 256.0),
            },
        ]
    }

    /// Targets missed or not measured.
    pub fn missed(&self) -> Vec<Target> {
        self.targets()
            .into_iter()
            .filter(|t| t.met != Some(true))
            .collect()
    }

    fn contenders(&self) -> [&Contender; 3] {
        [&self.null, &self.pipeline, &self.peer]
    }

    /// The readable summary.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} records ({}..{} bytes, median {}), {} runs each, alternating; broker: {}",
            self.records,
            self.payload_bytes.0,
            self.payload_bytes.2,
            self.payload_bytes.1,
            self.runs,
            self.broker
        );
        let _ = writeln!(out, "machine: {}\n", self.machine);
        let _ = writeln!(
            out,
            "{:<34} {:>12} {:>16} {:>18}",
            "contender (median)", "records/s", "CPU µs/record", "process µs/record"
        );
        for c in self.contenders() {
            if c.measured() {
                let _ = writeln!(
                    out,
                    "{:<34} {:>12.0} {:>16.2} {:>18.2}",
                    c.name,
                    c.records_per_sec(),
                    c.cpu_us_per_record(),
                    c.process_cpu_us_per_record()
                );
            } else {
                let _ = writeln!(out, "{:<34} {:>12}", c.name, "not run");
            }
        }
        for f in [&self.validation, &self.execution] {
            let _ = writeln!(
                out,
                "in process, {:<22} {:>12.0} records/s, {} instructions/record",
                f.kind,
                f.median_records_per_sec(),
                f.instructions_per_record
                    .map_or("n/a".into(), |i| format!("{i:.0}"))
            );
        }
        if let Some(l) = self.latency {
            let _ = writeln!(
                out,
                "latency at {:.0} records/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} records; before them {} warm-up records, max {:.1} ms)",
                self.latency_rate, l.p50_ms, l.p99_ms, l.max_ms, l.samples, l.warmup_samples, l.warmup_max_ms
            );
            if l.input_wait_samples > 0 {
                let _ = writeln!(
                    out,
                    "  input wait, from record timestamp to the worker taking it (clients, broker): p50 {:.1} ms, p99 {:.1} ms",
                    l.input_wait_p50_ms, l.input_wait_p99_ms
                );
            }
        }
        if let Some(cpu) = &self.latency_cpu {
            let _ = writeln!(out, "  {}", cpu_shares(cpu));
        }
        let _ = writeln!(
            out,
            "counter state: {:.0} bytes per tracked key; at most {} keys per partition, idle TTL {} s; chain heads: at most {} per partition once saved, idle TTL {} s\n",
            self.counter_bytes_per_key,
            self.max_tracked_keys,
            self.key_idle_ttl_secs,
            self.max_chain_heads,
            self.head_idle_ttl_secs
        );
        for t in self.targets() {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "NOT MEASURED",
            };
            let _ = writeln!(
                out,
                "target {:<3} {:<44} {:>12} {:<10} {}",
                t.id, t.what, t.figure, t.bound, verdict
            );
        }
        out
    }

    /// The figures as a Markdown section for BENCHMARKS.md.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### Figures\n");
        let _ = writeln!(
            out,
            "{} records ({}–{} bytes, median {}), medians of {} alternating runs (a, b, c, a, b, c, …); broker: {}; machine: {}.\n",
            self.records, self.payload_bytes.0, self.payload_bytes.2, self.payload_bytes.1, self.runs, self.broker, self.machine
        );
        let _ = writeln!(
            out,
            "| contender | records/s | CPU µs/record (first to last record) | CPU µs/record (whole process) | runs (records/s) |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---|");
        for c in self.contenders() {
            if c.measured() {
                let runs: Vec<String> = c
                    .runs
                    .iter()
                    .map(|r| format!("{:.0}", r.records_per_sec))
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.2} | {:.2} | {} |",
                    c.name,
                    c.records_per_sec(),
                    c.cpu_us_per_record(),
                    c.process_cpu_us_per_record(),
                    runs.join(", ")
                );
            } else {
                let _ = writeln!(out, "| {} | not run | | | |", c.name);
            }
        }
        let _ = writeln!(
            out,
            "\n| in process (one core, no I/O) | records/s (median) | instructions/record (callgrind) |"
        );
        let _ = writeln!(out, "|---|---:|---:|");
        for f in [&self.validation, &self.execution] {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} |",
                f.kind,
                f.median_records_per_sec(),
                f.instructions_per_record
                    .map_or("n/a".into(), |i| format!("{i:.0}"))
            );
        }
        if let Some(l) = self.latency {
            let _ = write!(
                out,
                "\nLatency from record timestamp to acknowledged output at {:.0} records/s (half of (b)): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} records, after {} records of warm-up (their highest latency: {:.1} ms).",
                self.latency_rate, l.p50_ms, l.p99_ms, l.max_ms, l.samples, l.warmup_samples, l.warmup_max_ms
            );
            if l.input_wait_samples > 0 {
                let _ = write!(
                    out,
                    " From record timestamp to the pipeline's worker taking the record (the producing client, the broker, the consumer's fetch): p50 {:.1} ms, p99 {:.1} ms.",
                    l.input_wait_p50_ms, l.input_wait_p99_ms
                );
            }
            if let Some(cpu) = &self.latency_cpu {
                let _ = write!(out, " {}.", cpu_shares(cpu));
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(
            out,
            "\nCounter state: {:.0} bytes per tracked key (worst case over table sizes); at most {} keys per partition; idle TTL {} s. Chain heads: at most {} per partition once a checkpoint has saved them; idle TTL {} s.\n",
            self.counter_bytes_per_key,
            self.max_tracked_keys,
            self.key_idle_ttl_secs,
            self.max_chain_heads,
            self.head_idle_ttl_secs
        );
        let _ = writeln!(out, "| target | figure | bound | |\n|---|---:|---|---|");
        for t in self.targets() {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            };
            let _ = writeln!(
                out,
                "| {} {} | {} | {} | {} |",
                t.id, t.what, t.figure, t.bound, verdict
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rps: f64, cpu: f64) -> Run {
        Run {
            records: 1000,
            records_per_sec: rps,
            cpu_us_per_record: cpu,
            process_cpu_us_per_record: cpu * 1.1,
        }
    }

    #[test]
    fn a_run_is_timed_from_its_first_record_to_its_end() {
        let r = Run::from_report(
            &ChildReport {
                records: 1000,
                first_record_secs: 2.0,
                end_secs: 4.0,
                cpu_at_first_record_secs: 0.5,
                cpu_at_end_secs: 0.502,
                ..ChildReport::default()
            },
            0.6,
        );
        assert_eq!(r.records_per_sec, 500.0);
        assert!((r.cpu_us_per_record - 2.0).abs() < 1e-6);
        assert!((r.process_cpu_us_per_record - 600.0).abs() < 1e-6);
    }

    #[test]
    fn figures_are_medians_and_missed_targets_are_named() {
        let mut report = Report::default();
        report.null.runs = vec![run(100.0, 1.0), run(300.0, 9.0), run(200.0, 2.0)];
        report.pipeline.runs = vec![run(150.0, 4.0), run(190.0, 3.0), run(170.0, 5.0)];
        report.peer.runs = vec![run(50.0, 40.0)];
        report.validation.records_per_sec = vec![250_000.0];
        report.execution.records_per_sec = vec![90_000.0];
        report.latency = Some(Latency {
            samples: 10,
            p50_ms: 3.0,
            p99_ms: 20.0,
            max_ms: 30.0,
            warmup_samples: 4,
            warmup_max_ms: 900.0,
            input_wait_samples: 10,
            input_wait_p50_ms: 1.5,
            input_wait_p99_ms: 9.0,
        });
        report.counter_bytes_per_key = 150.0;
        assert_eq!(report.null.records_per_sec(), 200.0);
        assert_eq!(report.throughput_ratio(), 170.0 / 200.0);
        let missed: Vec<&str> = report.missed().iter().map(|t| t.id).collect();
        // 0.85 < 0.9; 4/40 = 0.1 is met; 4/2 = 2 is met; 90k < 100k.
        assert_eq!(missed, vec!["1", "3b"]);
        assert!(report.table().contains("MISSED"));
        assert!(report
            .table()
            .contains("the worker taking it (clients, broker): p50 1.5 ms, p99 9.0 ms"));
        assert!(report.markdown().contains(
            "p99 20.0 ms, max 30.0 ms over 10 records, after 4 records of warm-up (their highest latency: 900.0 ms). From record timestamp to the pipeline's worker taking the record (the producing client, the broker, the consumer's fetch): p50 1.5 ms, p99 9.0 ms.\n"
        ));
        assert!(report.markdown().contains(
            "| 3b in process, execution records/s (1 core) | 90000 | >= 100000 | **missed** |"
        ));
    }

    #[test]
    fn the_latency_names_where_the_cpu_went_while_its_records_were_produced() {
        let mut report = Report {
            latency: Some(Latency {
                samples: 10,
                p50_ms: 3.0,
                p99_ms: 20.0,
                ..Latency::default()
            }),
            ..Report::default()
        };
        assert!(!report.markdown().contains("busy"));
        report.latency_cpu = Some(CpuShares {
            cores: 2,
            secs: 10.04,
            busy: 0.853,
            pipeline: Some(0.481),
            broker: Some(0.296),
            load_producer: Some(0.088),
        });
        let shares = "While the measured records were produced (10.0 s), the 2 cores were 85 % busy (of all cores' time: the pipeline 48 %, the broker 30 %, the producing client 9 %)";
        assert!(report.table().contains(&format!("\n  {shares}\n")));
        assert!(report.markdown().contains(&format!(" {shares}.\n")));

        // A broker the bench did not start is not watched, and not named.
        report.latency_cpu = Some(CpuShares {
            broker: None,
            ..report.latency_cpu.unwrap()
        });
        assert!(report
            .table()
            .contains("(of all cores' time: the pipeline 48 %, the producing client 9 %)"));
    }

    #[test]
    fn a_contender_not_run_leaves_its_targets_not_measured_and_missed() {
        let report = Report {
            counter_bytes_per_key: f64::NAN,
            ..Report::default()
        };
        assert!(report.targets().iter().all(|t| t.met.is_none()));
        assert_eq!(report.missed().len(), 7);
        assert!(report.table().contains("NOT MEASURED"));
    }
}
