//! `bench`: audit-stream measured side by side with a null consumer and a
//! stream-processing peer, on one broker and the same pre-loaded records.
//!
//! - (a) null consumer: the pipeline's consumer and settings; reads and discards.
//! - (b) the pipeline: `service::run` with the embedded store; a record counts once its
//!   outputs are acknowledged by the broker and its audit records are durable.
//! - (c) the peer: a quixstreams application (`bench/peers/quix_audit.py`) doing the
//!   validation audit's per-key counting with its state store, on the same records.
//!
//! Each contender runs as its own child process, alternating a, b, c, a, b, c, …; its CPU
//! time (user + system) comes from the process itself between its first and its last
//! record, and in all from `getrusage(RUSAGE_CHILDREN)` around its `wait`. Then: the
//! pure stages in process (records/s on one core, and instructions per record under
//! callgrind), latency at half of (b)'s rate with where the machine's CPU went meanwhile
//! ([`cpu`]), and the counter state's bytes per key.
//! Figures are medians; the targets are judged in [`report`], and the command exits
//! non-zero naming every target missed.

pub mod child;
pub mod cpu;
pub mod dataset;
pub mod report;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt as _;
use indicatif::{ProgressBar, ProgressStyle};

use self::child::{topics, ChildReport, InprocessKind};
use self::dataset::{Generator, Mix, RECIPES};
use self::report::{Contender, InprocessFigures, Report, Run};
use crate::config::{ChainConfig, KafkaConfig, ValidationConfig};
use crate::kafka::producer::RecordPublisher;
use crate::validation::{AuditDefaults, FailureCounter, RingLog};

/// Why the bench could not measure.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("broker: {0}")]
    Broker(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("kafka: {0}")]
    Kafka(#[from] crate::kafka::KafkaError),
    #[error("preload: {0}")]
    Produce(#[from] crate::produce::ProduceError),
    #[error("{0}")]
    Child(String),
    #[error("schemas: {0}")]
    Schema(#[from] crate::schema::SchemaError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Service(#[from] crate::service::ServiceError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// Arguments of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Records pre-loaded and read by each contender.
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Runs of each contender (alternating); figures are medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Use this broker (host:port) instead of starting Tansu.
    #[arg(long)]
    pub brokers: Option<String>,
    /// The Tansu binary to start (and to create topics with).
    #[arg(long, env = "TANSU_BIN")]
    pub tansu: Option<PathBuf>,
    /// Do not run the quixstreams peer (c).
    #[arg(long)]
    pub skip_peer: bool,
    /// Directory of the peer (its script, requirements and setup.sh).
    #[arg(long)]
    pub peer_dir: Option<PathBuf>,
    /// Do not count instructions under valgrind.
    #[arg(long)]
    pub skip_callgrind: bool,
    /// How long the latency measurement produces records, after its warm-up.
    #[arg(long, default_value_t = 10)]
    pub latency_secs: u64,
    /// How long records are produced at the latency measurement's rate before it starts:
    /// the pipeline's first fetches and sends (connections, metadata, a fresh store)
    /// are not its latency at that rate. Their highest latency is reported apart.
    #[arg(long, default_value_t = 2)]
    pub latency_warmup_secs: u64,
    /// Records per in-process measurement.
    #[arg(long, default_value_t = 100_000)]
    pub inprocess_records: u64,
    /// Print the figures as Markdown (for BENCHMARKS.md) instead of a table.
    #[arg(long)]
    pub markdown: bool,
    /// Print the figures and judge the targets, but exit 0 even when one is missed.
    #[arg(long)]
    pub report_only: bool,
}

/// A scratch directory, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(what: &str) -> Result<WorkDir, BenchError> {
        let dir = std::env::temp_dir().join(format!(
            "audit-stream-{what}-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        ));
        std::fs::create_dir_all(&dir).map_err(io("temp dir"))?;
        Ok(WorkDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker the bench started: killed and reaped on drop.
struct OwnBroker {
    child: std::process::Child,
    _dir: WorkDir,
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("no free loopback port"))
}

fn tansu_bin(args: &BenchArgs) -> Option<PathBuf> {
    args.tansu.clone().filter(|p| p.is_file()).or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = Path::new(&home).join(".cache/audit-stream/tansu-0.6.0/bin/tansu");
        p.is_file().then_some(p)
    })
}

fn start_tansu(bin: &Path) -> Result<(OwnBroker, String), BenchError> {
    let port = free_port()?;
    let dir = WorkDir::new("tansu")?;
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("tansu.log")).map_err(io("tansu log"))?;
    let child = Command::new(bin)
        .current_dir(dir.path())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(io(format!("cannot start {}", bin.display())))?;
    let broker = OwnBroker { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(BenchError::Broker(format!(
                "tansu did not listen on {port} within 30 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((broker, format!("127.0.0.1:{port}")))
}

/// Creates topics with 3 partitions and an explicit retention (quixstreams reads it).
fn create_topics(tansu: &Path, brokers: &str, names: &[String]) -> Result<(), BenchError> {
    for name in names {
        let status = Command::new(tansu)
            .args(["topic", "create", name, "--partitions", "3"])
            .args(["--config", "retention.ms=604800000"])
            .args(["--broker", &format!("tcp://{brokers}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(io("tansu topic create"))?;
        if !status.success() {
            return Err(BenchError::Broker(format!(
                "tansu topic create {name} failed: {status}"
            )));
        }
    }
    Ok(())
}

/// CPU time (user + system) of every child reaped so far, seconds.
fn children_cpu_secs() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(f64::NAN)
}

/// Runs a measured child to its end: its report (last stdout line) and the CPU it used
/// in all. `on_line` sees every other stdout line as it comes (the `ready` of latency).
fn measure(
    what: &str,
    mut command: Command,
    mut on_line: impl FnMut(&str, u32),
) -> Result<(ChildReport, f64), BenchError> {
    let before = children_cpu_secs();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .map_err(io(format!("cannot start {what}")))?;
    let pid = child.id();
    let mut last = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(io(format!("{what}: stdout")))?;
            if line.starts_with('{') {
                last = Some(line);
            } else {
                on_line(&line, pid);
            }
        }
    }
    let status = child.wait().map_err(io(format!("{what}: wait")))?;
    let cpu = children_cpu_secs() - before;
    if !status.success() {
        return Err(BenchError::Child(format!("{what} failed: {status}")));
    }
    let line = last.ok_or_else(|| BenchError::Child(format!("{what} printed no report")))?;
    let report = serde_json::from_str(&line)
        .map_err(|e| BenchError::Child(format!("{what}: unreadable report {line:?}: {e}")))?;
    Ok((report, cpu))
}

fn self_command() -> Result<Command, BenchError> {
    let exe = std::env::current_exe().map_err(io("path of this binary"))?;
    Ok(Command::new(exe))
}

/// The command of (b): this binary, or, to profile the pipeline, this binary under the
/// command in `AUDIT_STREAM_BENCH_PROFILE` (for example
/// `valgrind --tool=callgrind --callgrind-out-file=pipeline.cg`).
fn pipeline_command() -> Result<Command, BenchError> {
    let exe = std::env::current_exe().map_err(io("path of this binary"))?;
    let wrapper = std::env::var("AUDIT_STREAM_BENCH_PROFILE").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    Ok(match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(exe);
            cmd
        }
        None => Command::new(exe),
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, load average {load} at start")
}

/// The peer's directory: `--peer-dir`, else `bench/peers` here, else in the source tree.
fn peer_dir(args: &BenchArgs) -> PathBuf {
    if let Some(dir) = &args.peer_dir {
        return dir.clone();
    }
    let here = PathBuf::from("bench/peers");
    if here.join("quix_audit.py").is_file() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/peers")
}

/// The peer's Python (after creating its venv) and the quixstreams version.
fn set_up_peer(dir: &Path) -> Result<(PathBuf, String), BenchError> {
    let out = Command::new(dir.join("setup.sh"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(io("bench/peers/setup.sh"))?;
    if !out.status.success() {
        return Err(BenchError::Child(format!(
            "bench/peers/setup.sh failed: {}",
            out.status
        )));
    }
    let python = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let version = Command::new(&python)
        .args(["-c", "import quixstreams; print(quixstreams.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Ok((python, version))
}

/// Counter state per key, worst case over table sizes, for realistic keys.
fn counter_bytes_per_key() -> f64 {
    let mut counter = FailureCounter::new();
    let mut ring = RingLog::new(0);
    let defaults = AuditDefaults::default();
    let mut worst: f64 = 0.0;
    for i in 0..20_000i64 {
        let key = format!(
            "tenant-{:03}:p_transfer_{}:output:domain.balance",
            i % 200,
            i
        );
        let stamp = crate::validation::Stamp {
            at: chrono::DateTime::from_timestamp(1_790_000_000 + i, 0).unwrap_or_default(),
            offset: i,
        };
        counter.log_fail(&mut ring, &defaults, &key, None, None, stamp);
        let n = counter.tracked_keys();
        // Right after the table grows is the worst case; sample there and along the way.
        let after_growth = n == 7 * n.next_power_of_two() / 8 + 1;
        if n >= 8 && (after_growth || n.is_power_of_two() || n % 997 == 0) {
            let bytes = std::mem::size_of::<FailureCounter>() + counter.heap_bytes();
            worst = worst.max(bytes as f64 / n as f64);
        }
    }
    worst
}

/// Progress on a terminal: one step per measurement.
fn progress(steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Whether the bench succeeds (every target met, or `report_only`), and the lines that
/// say so: one per target missed or not measured.
pub fn verdict(report: &Report, report_only: bool) -> (bool, Vec<String>) {
    let missed = report.missed();
    if missed.is_empty() {
        return (true, vec!["every target met".into()]);
    }
    let lines = missed
        .iter()
        .map(|t| {
            format!(
                "target {} {}: {} (bound {}): {}",
                t.id,
                t.what,
                t.figure,
                t.bound,
                if t.met.is_none() {
                    "not measured"
                } else {
                    "missed"
                }
            )
        })
        .collect();
    (report_only, lines)
}

/// Runs the whole bench and returns its report.
pub async fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    let work = WorkDir::new("bench")?;
    let tansu = tansu_bin(args);
    let machine = machine();
    let (own, brokers) = match (&args.brokers, &tansu) {
        (Some(b), _) => (None, b.clone()),
        (None, Some(bin)) => {
            let (own, brokers) = start_tansu(bin)?;
            (Some(own), brokers)
        }
        (None, None) => {
            return Err(BenchError::Broker(
                "no broker: give --brokers, or --tansu / TANSU_BIN to start Tansu".into(),
            ))
        }
    };
    let peer = if args.skip_peer {
        None
    } else {
        Some(set_up_peer(&peer_dir(args))?)
    };
    let steps = 1 + 3 * args.runs as u64 + 1 + 2 * args.runs as u64 + 2;
    let bar = progress(steps);

    // Topics, recipes and the records.
    let prefix = format!(
        "bench-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let main = topics(&prefix);
    let lat_prefix = format!("{prefix}-lat");
    let lat = topics(&lat_prefix);
    let peer_out = format!("{prefix}.peer-out");
    let mut names: Vec<String> = Vec::new();
    for t in [&main, &lat] {
        names.extend(
            t.inputs()
                .iter()
                .chain(t.outputs().iter())
                .map(|s| s.to_string()),
        );
    }
    names.push(peer_out.clone());
    names.push(warm_up_topic(&lat_prefix));
    match &tansu {
        Some(bin) => create_topics(bin, &brokers, &names)?,
        None => {
            return Err(BenchError::Broker(
                "topics are created with the tansu CLI: give --tansu or TANSU_BIN".into(),
            ))
        }
    }
    let recipes_yaml = work.path().join("recipes.yaml");
    std::fs::write(&recipes_yaml, RECIPES).map_err(io("recipes"))?;
    let recipes_json = work.path().join("recipes.json");
    let recipes_value: serde_json::Value =
        serde_yaml_ng::from_str(RECIPES).map_err(|e| BenchError::Child(e.to_string()))?;
    std::fs::write(&recipes_json, recipes_value.to_string()).map_err(io("recipes"))?;

    bar.set_message(format!("pre-loading {} records", args.records));
    let start = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
    let records = Generator::new(1, &main, start, Mix::All)
        .take(usize::try_from(args.records).unwrap_or(usize::MAX));
    let mut sizes: Vec<usize> = records.iter().map(|r| r.payload.len()).collect();
    sizes.sort_unstable();
    let payload_bytes = (
        sizes.first().copied().unwrap_or(0),
        sizes.get(sizes.len() / 2).copied().unwrap_or(0),
        sizes.last().copied().unwrap_or(0),
    );
    let kafka = KafkaConfig {
        bootstrap_servers: brokers.clone(),
        ..KafkaConfig::default()
    };
    crate::produce::publish(&kafka, "bench records", &records).await?;
    drop(records);
    bar.inc(1);

    let mut report = Report {
        machine,
        broker: if args.brokers.is_some() {
            brokers.clone()
        } else {
            "Tansu 0.6.0 (memory storage), started by the bench".into()
        },
        records: args.records,
        runs: args.runs,
        payload_bytes,
        null: Contender::new("(a) null consumer"),
        pipeline: Contender::new("(b) audit-stream pipeline"),
        peer: Contender::new("(c) quixstreams peer"),
        peer_version: peer.as_ref().map(|p| p.1.clone()).unwrap_or_default(),
        validation: InprocessFigures {
            kind: "validation",
            ..InprocessFigures::default()
        },
        execution: InprocessFigures {
            kind: "execution",
            ..InprocessFigures::default()
        },
        ..Report::default()
    };
    let n = args.records.to_string();
    for i in 0..args.runs {
        // (a)
        bar.set_message(format!("run {}/{}: (a) null consumer", i + 1, args.runs));
        let mut cmd = self_command()?;
        cmd.args([
            "bench-child",
            "null",
            "--records",
            &n,
            "--brokers",
            &brokers,
        ])
        .args(["--topics", &prefix, "--group", &format!("{prefix}-a{i}")]);
        let (r, cpu) =
            tokio::task::block_in_place(|| measure("(a) null consumer", cmd, |_, _| {}))?;
        report.null.runs.push(Run::from_report(&r, cpu));
        bar.inc(1);

        // (b)
        bar.set_message(format!("run {}/{}: (b) pipeline", i + 1, args.runs));
        let mut cmd = pipeline_command()?;
        cmd.args([
            "bench-child",
            "pipeline",
            "--records",
            &n,
            "--brokers",
            &brokers,
        ])
        .args(["--topics", &prefix, "--group", &format!("{prefix}-b{i}")])
        .arg("--store")
        .arg(work.path().join(format!("store-{i}.db")))
        .arg("--recipes")
        .arg(&recipes_yaml);
        let (r, cpu) = tokio::task::block_in_place(|| measure("(b) pipeline", cmd, |_, _| {}))?;
        report.pipeline.runs.push(Run::from_report(&r, cpu));
        bar.inc(1);

        // (c)
        if let Some((python, _)) = &peer {
            bar.set_message(format!("run {}/{}: (c) quixstreams peer", i + 1, args.runs));
            let group = format!("{prefix}-c{i}");
            // The changelog of the peer's state store, as quixstreams names it; created
            // up front like every topic (Tansu needs the explicit retention).
            if let Some(bin) = &tansu {
                let changelog = format!("changelog__{group}--{}--default", main.validation);
                create_topics(bin, &brokers, &[changelog])?;
            }
            let mut cmd = Command::new(python);
            // Its dependencies' deprecation warnings are noise on the bench's terminal.
            cmd.env("PYTHONWARNINGS", "ignore")
                .arg(peer_dir(args).join("quix_audit.py"))
                .args(["--brokers", &brokers, "--group", &group])
                .args(["--validation", &main.validation])
                .args(["--execution", &main.execution])
                .args(["--coordination", &main.coordination])
                .args(["--output", &peer_out, "--records", &n])
                .arg("--recipes")
                .arg(&recipes_json)
                .arg("--state-dir")
                .arg(work.path().join(format!("quix-state-{i}")));
            let (r, cpu) =
                tokio::task::block_in_place(|| measure("(c) quixstreams peer", cmd, |_, _| {}))?;
            report.peer.runs.push(Run::from_report(&r, cpu));
        }
        bar.inc(1);
    }

    // In process, one core, no I/O.
    let m = args.inprocess_records.to_string();
    for (kind, label) in [
        (InprocessKind::Validation, "validation"),
        (InprocessKind::Execution, "execution"),
    ] {
        let figures = match kind {
            InprocessKind::Validation => &mut report.validation,
            InprocessKind::Execution => &mut report.execution,
        };
        for i in 0..args.runs {
            bar.set_message(format!("in process: {label} {}/{}", i + 1, args.runs));
            let mut cmd = self_command()?;
            cmd.args(["bench-child", "inprocess", "--kind", label, "--records", &m]);
            let (r, cpu) = tokio::task::block_in_place(|| measure("in process", cmd, |_, _| {}))?;
            figures
                .records_per_sec
                .push(Run::from_report(&r, cpu).records_per_sec);
            bar.inc(1);
        }
        if !args.skip_callgrind {
            bar.set_message(format!("callgrind: {label}"));
            figures.instructions_per_record =
                tokio::task::block_in_place(|| callgrind(label, work.path()))?;
        }
        bar.inc(1);
    }

    // Latency at half of (b)'s rate.
    let rate = (report.pipeline.records_per_sec() / 2.0).max(100.0);
    bar.set_message(format!("latency at {rate:.0} records/s"));
    report.latency_rate = rate;
    let broker_pid = own.as_ref().map(|own| own.child.id());
    let (latency, cpu) = latency(
        args,
        &brokers,
        broker_pid,
        &prefix,
        &recipes_yaml,
        work.path(),
        rate,
    )
    .await?;
    report.latency = Some(latency);
    report.latency_cpu = cpu;
    bar.inc(1);

    let limits = ValidationConfig::default();
    report.counter_bytes_per_key = counter_bytes_per_key();
    report.max_tracked_keys = limits.max_tracked_keys;
    report.key_idle_ttl_secs = limits.key_idle_ttl_secs;
    let heads = ChainConfig::default();
    report.max_chain_heads = heads.max_heads_per_partition;
    report.head_idle_ttl_secs = heads.head_idle_ttl_secs;
    bar.finish_and_clear();
    Ok(report)
}

/// Instructions per record of the in-process loop, counted by callgrind over 2,000
/// records; `None` when valgrind is not installed.
fn callgrind(kind: &str, work: &Path) -> Result<Option<f64>, BenchError> {
    const RECORDS: u64 = 2_000;
    let exe = std::env::current_exe().map_err(io("path of this binary"))?;
    let out = work.join(format!("callgrind-{kind}.out"));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--toggle-collect=*measured_loop*")
        .arg(&exe)
        .args(["bench-child", "inprocess", "--kind", kind, "--records"])
        .arg(RECORDS.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("valgrind")(e)),
        Ok(s) if !s.success() => {
            return Err(BenchError::Child(format!("valgrind failed: {s}")));
        }
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(&out).map_err(io("callgrind output"))?;
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| BenchError::Child("callgrind output without totals".into()))?;
    Ok(Some(total / RECORDS as f64))
}

/// The topic the latency measurement's publisher warms up on, apart from the pipeline's.
fn warm_up_topic(latency_prefix: &str) -> String {
    format!("{latency_prefix}.warm-up")
}

/// Starts the pipeline on empty topics, produces at `rate` for `--latency-secs`, and
/// returns the pipeline's latency percentiles, and where the machine's CPU went while
/// the records were produced (the pipeline, the broker `broker_pid` if the bench started
/// it, the producing client).
async fn latency(
    args: &BenchArgs,
    brokers: &str,
    broker_pid: Option<u32>,
    prefix: &str,
    recipes: &Path,
    work: &Path,
    rate: f64,
) -> Result<(child::Latency, Option<cpu::CpuShares>), BenchError> {
    let prefix = format!("{prefix}-lat");
    let t = topics(&prefix);
    let warmup = (rate * args.latency_warmup_secs as f64).round() as u64;
    let total = warmup + (rate * args.latency_secs as f64).round().max(1.0) as u64;
    let mut cmd = self_command()?;
    cmd.args(["bench-child", "pipeline", "--latency", "--records"])
        .arg(total.to_string())
        .args(["--latency-warmup", &warmup.to_string()])
        .args(["--brokers", brokers, "--topics", &prefix])
        .args(["--group", &format!("{prefix}-g")])
        .arg("--store")
        .arg(work.join("store-latency.db"))
        .arg("--recipes")
        .arg(recipes);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let child = std::thread::spawn(move || {
        measure("(b) pipeline, latency", cmd, |line, pid| {
            if line == "ready" {
                let _ = ready_tx.send(pid);
            }
        })
    });
    // Wait for the assignment, so that no record waits for the group to form.
    let ready = tokio::task::block_in_place(|| ready_rx.recv_timeout(Duration::from_secs(60)));
    let Ok(pipeline_pid) = ready else {
        let result = child.join();
        return Err(BenchError::Child(format!(
            "the latency pipeline did not get its partitions: {:?}",
            result.map(|r| r.map(|_| ()))
        )));
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let kafka = KafkaConfig {
        bootstrap_servers: brokers.to_string(),
        ..KafkaConfig::default()
    };
    let publisher = RecordPublisher::new(&kafka)?;
    // A new publisher's first acknowledgement takes about a second (its producer id and
    // the topics' metadata); records stamped meanwhile would reach the pipeline late and
    // all at once, a backlog of a second at the start. One record to a topic of its own,
    // acknowledged before the clock starts, takes that second out of the measurement.
    publisher
        .publish(&warm_up_topic(&prefix), None, b"warm-up", None)
        .await?
        .await?;
    let mut generator = Generator::new(2, &t, chrono::Utc::now(), Mix::All);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut pending = FuturesUnordered::new();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    // The CPU is watched over the measured records, from the end of the warm-up.
    let mut cpu = None;
    while sent < total {
        tick.tick().await;
        if sent >= warmup && cpu.is_none() {
            cpu = Some(cpu::Window::start(Some(pipeline_pid), broker_pid));
        }
        let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
        while sent < due {
            let record = generator.next_record();
            // No timestamp: the client stamps the record as it is produced.
            let delivery = publisher
                .publish(&record.topic, record.key.as_deref(), &record.payload, None)
                .await?;
            pending.push(delivery);
            sent += 1;
        }
        while let Some(Some(result)) = pending.next().now_or_never() {
            result?;
        }
    }
    while let Some(result) = pending.next().await {
        result?;
    }
    let cpu = cpu.flatten().and_then(cpu::Window::end);
    let (report, _) = tokio::task::block_in_place(|| child.join())
        .map_err(|_| BenchError::Child("latency measurement panicked".into()))??;
    let latency = report
        .latency
        .ok_or_else(|| BenchError::Child("the latency pipeline reported no latency".into()))?;
    Ok((latency, cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_target_fails_the_bench_and_is_named_unless_report_only() {
        let report = Report {
            counter_bytes_per_key: 300.0,
            ..Report::default()
        };
        let (success, lines) = verdict(&report, false);
        assert!(!success);
        assert!(
            lines
                .iter()
                .any(|l| l
                    == "target 5 counter state per tracked key: 300 B (bound <= 256 B): missed")
        );
        assert!(lines
            .iter()
            .any(|l| l.starts_with("target 1 ") && l.ends_with("not measured")));
        assert!(verdict(&report, true).0);
    }

    #[test]
    fn counter_state_is_measured_within_its_bound() {
        let bytes = counter_bytes_per_key();
        assert!((64.0..=256.0).contains(&bytes), "{bytes}");
    }
}
