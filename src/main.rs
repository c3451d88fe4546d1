//! The `audit-stream` binary: parse the command line, set up telemetry, dispatch.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;

use audit_stream::cli::{Cli, Command};
use audit_stream::config::{Config, StoreKind};
use audit_stream::gate::{self, Action};
use audit_stream::pipeline::{offline, recipe_source, worker::Shared, Operator};
use audit_stream::{bench, demo, metrics, produce, service, telemetry, verify};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Bench(args) => {
            let report = bench::run(&args).await?;
            print!(
                "{}",
                if args.markdown {
                    report.markdown()
                } else {
                    report.table()
                }
            );
            let (success, lines) = bench::verdict(&report, args.report_only);
            for line in lines {
                eprintln!("{line}");
            }
            return Ok(if success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::BenchChild(args) => {
            bench::child::run(args).await?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Bench(_) | Command::BenchChild(_) => unreachable!("dispatched above"),
        Command::Run => {
            let metrics = metrics::install().map_err(anyhow::Error::msg)?;
            let store = service::open_store(&config).await?;
            let runtime = service::Runtime {
                store,
                metrics: Some(metrics),
                shared: Arc::new(Shared::default()),
                serve_http: true,
            };
            let stats = service::run(config, runtime, service::shutdown_on_signals()).await?;
            tracing::info!(
                records = stats.records_in,
                done = stats.records_done,
                "Stopped"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            let report = demo::run().await?;
            print!("{report}");
            Ok(if report.accounted() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Process { input, recipes } => {
            let recipes_path = recipes.or(config.recipes.path.clone());
            let recipes = recipe_source::load_optional(recipes_path.as_deref())?;
            let operator = Operator::new(&config)?;
            let file = std::fs::File::open(&input)
                .with_context(|| format!("cannot open {}", input.display()))?;
            let stdout = std::io::stdout().lock();
            let summary = offline::process(
                &operator,
                &recipes,
                std::io::BufReader::new(file),
                std::io::BufWriter::new(stdout),
                chrono::Utc::now,
            )
            .with_context(|| input.display().to_string())?;
            eprintln!(
                "processed {} records of {}: {} output records",
                summary.records,
                input.display(),
                summary.outputs
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Produce { input } => {
            let records = produce::read_records(&input)?;
            let summary =
                produce::publish(&config.kafka, &input.display().to_string(), &records).await?;
            eprint!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            match config.store.kind {
                StoreKind::Embedded => {
                    let store = service::open_store(&config).await?;
                    store.ping().await?;
                    println!(
                        "embedded store {}: schema is up to date",
                        config.store.embedded_path.display()
                    );
                }
                StoreKind::Scylla => {
                    for line in audit_stream::store::scylla::migrate(&config.store.scylla).await? {
                        println!("{line}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { tenant } => {
            let store = service::open_store(&config).await?;
            let progress = verify::progress_bar();
            let report = verify::verify(store.as_ref(), tenant.as_deref(), &progress).await?;
            progress.finish_and_clear();
            print!("{report}");
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Gate {
            contract_id,
            contract,
            tenant,
            revision,
        } => {
            let contract = match (contract_id, contract) {
                (Some(c), None) | (None, Some(c)) => c,
                (Some(a), Some(b)) if a == b => a,
                (Some(_), Some(_)) => {
                    bail!("give the contract once, positionally or with --contract")
                }
                (None, None) => bail!("which contract? give it positionally or with --contract"),
            };
            let store = service::open_store(&config).await?;
            let status = store.rollout_status(&tenant, &contract).await?;
            let answer = gate::decide(
                &tenant,
                &contract,
                status.as_ref(),
                revision,
                &service::gate_policy(&config),
                chrono::Utc::now(),
            );
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &answer)?;
            writeln!(out)?;
            Ok(ExitCode::from(match answer.action {
                Action::Proceed => 0,
                Action::Wait => 10,
                Action::Rollback => 11,
                Action::Escalate => 12,
            }))
        }
    }
}
