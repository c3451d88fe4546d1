//! audit-stream: audits what automated systems do.
//!
//! Services publish validation, execution and coordination events to Kafka;
//! audit-stream judges them, publishes decisions and verdicts back to Kafka, keeps every
//! audit record in a store (ScyllaDB in production), and answers whether a rollout may
//! proceed.
//!
//! # Layout, in flow order
//!
//! - [`record`]: a Kafka record as the pipeline sees it, and the JSON Lines record files.
//! - [`decode`]: record → typed input event, or a dead letter with its error class.
//! - [`event`]: wire types of every input and output event, and deterministic ids.
//! - [`schema`]: the JSON Schemas of those events, compiled once, checked at ingest.
//! - [`canonical`]: canonical JSON (from a tree, or written straight from typed values) and
//!   SHA-256, for evidence digests, content digests and the hash chain.
//! - [`validation`]: Theus recipes, rule checks, failure counters and the ring log.
//! - [`contract`]: the seven-check contract audit and its verdict.
//! - [`coordination`]: coordination decisions kept as audit records.
//! - [`gate`]: may this rollout proceed?
//! - [`pipeline`]: the per-record operator shared by `process` and `run`, the offset
//!   tracker, and the live partition worker: the only place that knows stage order.
//! - [`kafka`]: consumer and producer; nothing else touches rdkafka.
//! - [`store`]: the one write path of audit records.
//! - [`chain`]: the hash chain that makes stored records tamper-evident; [`verify`]
//!   recomputes it.
//! - [`config`], [`metrics`], [`http`], [`telemetry`]: running it.
//! - [`cli`], [`service`], [`produce`], [`demo`]: the commands of the binary.
//! - [`bench`]: the `bench` command, audit-stream measured against a null consumer and
//!   a stream-processing peer.
//!
//! `event`, `decode`, `validation`, `contract`, `coordination` and `gate` are pure: no
//! I/O, no clock, outputs returned as values.

pub mod bench;
pub mod canonical;
pub mod chain;
pub mod cli;
pub mod config;
pub mod contract;
pub mod coordination;
pub mod decode;
pub mod demo;
pub mod event;
pub mod eviction;
pub mod gate;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod produce;
pub mod record;
pub mod schema;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod validation;
pub mod verify;
