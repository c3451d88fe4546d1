//! Deterministic output ids (SPEC §5).
//!
//! Every id audit-stream mints is a UUIDv5 of the source event's id, the output's kind
//! and its ordinal among outputs of that kind, so a replay, a retry or a re-published
//! source event yields the same ids and a replayed write is a no-op.

use sha1::{Digest, Sha1};
use uuid::{Builder, Uuid};

/// Namespace of every id audit-stream derives (a UUIDv5 of the product name in the URL
/// namespace, fixed forever: changing it would change every stored id).
const NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_2c9a_58a4_5b1e_9d3c_0a7b_4e2f_8c61);

/// What an id is minted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// `AuditDecision.event_id`.
    Decision,
    /// `AuditVerdict.event_id`.
    Verdict,
    /// `AuditVerdict.audit_id`.
    VerdictAudit,
    /// `CoordinationRecord.audit_id` when the producer supplied none.
    CoordinationAudit,
    /// `DeadLetter.event_id`; its "source id" is the record's position, not an event id.
    DeadLetter,
}

impl OutputKind {
    fn label(self) -> &'static str {
        match self {
            OutputKind::Decision => "decision",
            OutputKind::Verdict => "verdict",
            OutputKind::VerdictAudit => "verdict-audit",
            OutputKind::CoordinationAudit => "coordination-audit",
            OutputKind::DeadLetter => "dead-letter",
        }
    }
}

/// The id of the `ordinal`-th output of `kind` derived from `source`.
///
/// `source` is the source event's `event_id` as text (or, for dead letters, the
/// record's `topic/partition/offset`).
///
/// This is `Uuid::new_v5(&NAMESPACE, "{source}/{kind}/{ordinal}")`, hashed without
/// building the name (a test compares the two).
pub fn output_id(source: &str, kind: OutputKind, ordinal: u32) -> Uuid {
    let mut hasher = Sha1::new();
    hasher.update(NAMESPACE.as_bytes());
    hasher.update(source.as_bytes());
    hasher.update(b"/");
    hasher.update(kind.label().as_bytes());
    hasher.update(b"/");
    hasher.update(itoa::Buffer::new().format(ordinal).as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    Builder::from_sha1_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_source_kind_and_ordinal_give_the_same_id() {
        let a = output_id(
            "0b8f1a2e-6c1d-4c7e-9f4b-1d2e3f4a5b6c",
            OutputKind::Decision,
            0,
        );
        let b = output_id(
            "0b8f1a2e-6c1d-4c7e-9f4b-1d2e3f4a5b6c",
            OutputKind::Decision,
            0,
        );
        assert_eq!(a, b);
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn kind_and_ordinal_each_change_the_id() {
        let src = "0b8f1a2e-6c1d-4c7e-9f4b-1d2e3f4a5b6c";
        let base = output_id(src, OutputKind::Decision, 0);
        assert_ne!(base, output_id(src, OutputKind::Decision, 1));
        assert_ne!(base, output_id(src, OutputKind::Verdict, 0));
        assert_ne!(base, output_id("other", OutputKind::Decision, 0));
    }

    #[test]
    fn ids_are_the_uuid_v5_of_the_name() {
        let kinds = [
            OutputKind::Decision,
            OutputKind::Verdict,
            OutputKind::VerdictAudit,
            OutputKind::CoordinationAudit,
            OutputKind::DeadLetter,
        ];
        let sources = [
            "",
            "0b8f1a2e-6c1d-4c7e-9f4b-1d2e3f4a5b6c",
            "validation/2/123456789",
            "é/ü/\u{1F600} and a source long enough to take the name past one SHA-1 block of 64 bytes",
        ];
        for source in sources {
            for kind in kinds {
                for ordinal in [0, 1, 9, 10, 4_294_967_295] {
                    let name = format!("{source}/{}/{ordinal}", kind.label());
                    assert_eq!(
                        output_id(source, kind, ordinal),
                        Uuid::new_v5(&NAMESPACE, name.as_bytes()),
                        "{name}"
                    );
                }
            }
        }
    }
}
