//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// audit-stream: audits what automated systems do.
#[derive(Debug, Parser)]
#[command(name = "audit-stream", version, about)]
pub struct Cli {
    /// TOML configuration file; every key can be overridden by an AUDIT_STREAM__* variable.
    #[arg(long, short, global = true, env = "AUDIT_STREAM_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: consume, audit, publish, store, serve HTTP.
    Run,
    /// Run the whole pipeline on an in-process Kafka and the embedded store with sample
    /// traffic, and print a summary. Exits non-zero if any record is unaccounted for.
    Demo,
    /// Run the pipeline offline over a record file; output records go to stdout.
    Process {
        /// JSON Lines record file: {"topic": …, "key": …, "value": …} per line.
        #[arg(long, short)]
        input: PathBuf,
        /// Theus recipe file (overrides recipes.path of the configuration).
        #[arg(long)]
        recipes: Option<PathBuf>,
    },
    /// Publish a record file to its topics, with its keys.
    Produce {
        /// JSON Lines record file.
        #[arg(long, short)]
        input: PathBuf,
    },
    /// Create the store's schema (idempotent) and print what was done.
    Migrate,
    /// Recompute the hash chains of the stored audit records and check every stored
    /// record against them; report modified, deleted, inserted and reordered records.
    ///
    /// Exit status: 0 nothing found, 3 tampering found, 1 the check could not run.
    Verify {
        /// Only this tenant (default: every tenant in the store).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Ask the rollout gate whether a contract's rollout may proceed.
    ///
    /// Exit status: 0 proceed, 10 wait, 11 rollback, 12 escalate.
    Gate {
        /// The contract id (alternatively --contract).
        contract_id: Option<String>,
        #[arg(long)]
        contract: Option<String>,
        #[arg(long)]
        tenant: String,
        /// Only a verdict for this contract revision counts.
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Measure throughput and CPU per record against a null consumer and a quixstreams
    /// peer on one broker, the pure stages in process, latency and counter memory.
    ///
    /// Prints the figures and ratios; exits 1 naming every target missed.
    Bench(crate::bench::BenchArgs),
    /// One measured process of `bench` (started by it).
    #[command(hide = true)]
    BenchChild(crate::bench::child::ChildArgs),
}
