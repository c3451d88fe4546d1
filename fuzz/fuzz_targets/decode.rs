//! `Decoder::decode` on arbitrary records: it never panics, and every record is an event
//! or a dead letter with a class, a message and a valid wire form.
//!
//! Input layout, so that seeds stay readable: one byte choosing the topic (`v`, `e`, `c`,
//! anything else an unknown topic), the message key up to the first newline, then the
//! payload.
#![no_main]

use std::sync::LazyLock;

use audit_stream::config::{IngestConfig, TopicsConfig};
use audit_stream::decode::{dead_letter, Decoder};
use audit_stream::record::Record;
use audit_stream::schema::{SchemaKind, Schemas};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    decoder: Decoder,
    schemas: Schemas,
    topics: TopicsConfig,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let topics = TopicsConfig::default();
    let ingest = IngestConfig {
        // Below libFuzzer's default input size, so the oversize path is reached too.
        max_payload_bytes: 2048,
        max_nesting_depth: 16,
        ..IngestConfig::default()
    };
    Fixture {
        decoder: Decoder::new(&topics, &ingest).expect("schemas compile"),
        schemas: Schemas::compile().expect("schemas compile"),
        topics,
    }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let topic = match selector {
        b'v' => f.topics.validation.clone(),
        b'e' => f.topics.execution.clone(),
        b'c' => f.topics.coordination.clone(),
        _ => "not.an.input".to_string(),
    };
    let (key, payload) = match rest.iter().position(|b| *b == b'\n') {
        Some(end) => (Some(rest[..end].to_vec()), &rest[end + 1..]),
        None => (None, rest),
    };
    let record = Record {
        topic,
        partition: 0,
        offset: 0,
        key,
        payload: payload.to_vec(),
        timestamp: None,
    };
    if let Err(error) = f.decoder.decode(&record) {
        assert!(!error.message.trim().is_empty(), "{error:?}");
        let dl = dead_letter(&record, &error);
        let wire = serde_json::to_value(&dl).expect("dead letters serialize");
        assert_eq!(
            f.schemas.validate(SchemaKind::DeadLetter, &wire),
            Ok(()),
            "{wire}"
        );
    }
});
