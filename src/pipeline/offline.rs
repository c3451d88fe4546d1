//! `process`: the whole pipeline over a record file, without Kafka or a store.
//!
//! Line i of the file is offset i of partition 0 of its topic. Output records
//! (decisions, verdicts, dead letters) are written one per line, in order, as the same
//! bytes the live service publishes: apart from `audited_at` and `duration_ms`, the
//! output is identical on every run and identical to the service's for the same
//! records.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Operator, PartitionState};
use crate::record::{RecordFileError, RecordLine};
use crate::validation::Recipes;

/// What one `process` run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProcessSummary {
    pub records: u64,
    pub outputs: u64,
}

/// Why `process` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{0}")]
    Line(#[from] RecordFileError),
    #[error("reading input: {0}")]
    Read(std::io::Error),
    #[error("writing output: {0}")]
    Write(std::io::Error),
}

#[derive(Serialize)]
struct OutputLineRef<'a> {
    topic: &'a str,
    key: Option<&'a str>,
    value: &'a RawValue,
}

/// Runs every line of `input` through `operator` and writes the output records to
/// `output`. `now` stands for the wall clock (`audited_at`).
pub fn process(
    operator: &Operator,
    recipes: &Recipes,
    input: impl BufRead,
    mut output: impl Write,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<ProcessSummary, ProcessError> {
    let mut states: HashMap<String, PartitionState> = HashMap::new();
    let mut summary = ProcessSummary::default();
    for (index, line) in input.lines().enumerate() {
        let line = line.map_err(ProcessError::Read)?;
        let record = RecordLine::parse(&line, index + 1)?.into_record(0, index as i64);
        let state = states
            .entry(record.topic.clone())
            .or_insert_with(|| PartitionState::new(recipes));
        for out in operator.process(&record, recipes, state, now()) {
            let Some(publication) = out.publication(operator.topics()) else {
                continue;
            };
            let text = std::str::from_utf8(&publication.payload).expect("serde_json writes UTF-8");
            let value: &RawValue = serde_json::from_str(text).expect("serde_json output is JSON");
            let line = OutputLineRef {
                topic: &publication.topic,
                key: publication.key.as_deref(),
                value,
            };
            serde_json::to_writer(&mut output, &line).map_err(|e| ProcessError::Write(e.into()))?;
            output.write_all(b"\n").map_err(ProcessError::Write)?;
            summary.outputs += 1;
        }
        summary.records += 1;
    }
    output.flush().map_err(ProcessError::Write)?;
    Ok(summary)
}
