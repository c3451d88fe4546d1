//! The pure stages of the record path, one benchmark each: decode with the schema check,
//! the validation audit, the contract audit, and the canonical evidence digest.
//!
//! `cargo bench --bench stages`; under `cargo test --all-targets` each runs once, as a
//! check that it still works.

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use audit_stream::bench::dataset::{Generator, Mix, RECIPES};
use audit_stream::config::Config;
use audit_stream::decode::Decoder;
use audit_stream::event::{InputEvent, SourceRef};
use audit_stream::record::Record;
use audit_stream::validation::{self, CounterLimits, Recipes, ValidationState};
use audit_stream::{canonical, contract};

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default()
}

fn records(mix: Mix) -> Vec<Record> {
    Generator::new(42, &Config::default().topics, start(), mix).take(1_000)
}

fn source(record: &Record, event: &InputEvent) -> SourceRef {
    SourceRef {
        topic: record.topic.clone(),
        partition: record.partition,
        offset: record.offset,
        event_id: event.event_id(),
    }
}

fn stages(c: &mut Criterion) {
    let config = Config::default();
    let decoder = Decoder::new(&config.topics, &config.ingest).expect("schemas compile");
    let recipes = Recipes::parse(RECIPES).expect("bench recipes parse");
    let validation_records = records(Mix::Validation);
    let execution_records = records(Mix::Execution);
    let decoded = |rs: &[Record]| -> Vec<(SourceRef, InputEvent)> {
        rs.iter()
            .filter_map(|r| decoder.decode(r).ok().map(|e| (source(r, &e), e)))
            .collect()
    };
    let validations = decoded(&validation_records);
    let executions = decoded(&execution_records);

    let mut group = c.benchmark_group("stages");
    for (name, rs) in [
        ("decode_and_schema/validation", &validation_records),
        ("decode_and_schema/execution", &execution_records),
    ] {
        group.throughput(Throughput::Elements(rs.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                for r in rs {
                    let _ = black_box(decoder.decode(black_box(r)));
                }
            })
        });
    }

    group.throughput(Throughput::Elements(validations.len() as u64));
    group.bench_function("validation_evaluate", |b| {
        let limits = CounterLimits::default();
        let mut state = ValidationState::new(recipes.defaults().ring_capacity);
        b.iter(|| {
            for (source, event) in &validations {
                if let InputEvent::Validation(event) = event {
                    black_box(validation::evaluate(
                        &recipes, event, source, &mut state, &limits,
                    ));
                }
            }
        })
    });

    group.throughput(Throughput::Elements(executions.len() as u64));
    group.bench_function("contract_audit", |b| {
        b.iter(|| {
            for (source, event) in &executions {
                if let InputEvent::Execution(event) = event {
                    black_box(contract::audit(event, source, start()));
                }
            }
        })
    });

    let evidence: Vec<serde_json::Value> = execution_records
        .iter()
        .filter_map(|r| serde_json::from_slice(&r.payload).ok())
        .collect();
    group.throughput(Throughput::Elements(evidence.len() as u64));
    group.bench_function("canonical_digest", |b| {
        b.iter(|| {
            for value in &evidence {
                black_box(canonical::sha256_hex(
                    canonical::canonical_json(value).as_bytes(),
                ));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
