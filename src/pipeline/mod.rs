//! The pipeline: the only place that knows stage order and owns effects.
//!
//! - [`operator`]: record → outputs, pure apart from measuring a verdict's duration;
//!   shared by the offline `process` command and the live service, which is what makes
//!   their outputs identical by construction.
//! - [`offline`]: `process`, the whole pipeline over a record file.
//! - [`offsets`]: which input offset may be committed: only one whose every derived
//!   output is acknowledged and every derived audit record is durable.
//! - [`sink`]: the one path by which audit records reach the store: batched, retried
//!   with backoff, never dropped.
//! - [`checkpoints`]: when operator state is snapshotted and when a snapshot may be
//!   saved: only once every record it covers is done.
//! - [`restore`]: checkpoints restored on assignment, saved on revoke.
//! - [`recipe_source`]: the recipes in force, reloaded from their file.
//! - [`worker`]: the live consumer loop.
//! - [`dead_letter_rate`]: the dead-letter share per input kind against its limit.

pub mod checkpoints;
pub mod dead_letter_rate;
pub mod offline;
pub mod offsets;
pub mod operator;
pub mod recipe_source;
pub mod restore;
pub mod sink;
pub mod worker;

pub use operator::{Operator, Output, PartitionState, Publication};
