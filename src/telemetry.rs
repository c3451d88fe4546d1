//! Logging setup: structured logs to stderr, filtered by `RUST_LOG` (default `info`),
//! as JSON when `AUDIT_STREAM_LOG_FORMAT=json`.
//!
//! Log lines carry user-controlled strings (tenant ids, process names, keys, recipe
//! names, decode errors quoting payloads). Neither format lets one forge or split a
//! line or send a terminal escape sequence: JSON escapes newlines, ESC and every other
//! C0 control itself, and the text format writes every field value through
//! `escaped_fields`, which escapes control characters (C0, DEL, C1) and the Unicode line
//! separators. That holds for every field, whether it is recorded as a string, with `%`,
//! with `?` or as an error, so no call site has to remember it.

use std::fmt::{self, Write as _};

use tracing::Subscriber;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, from `main`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AUDIT_STREAM_LOG_FORMAT").is_ok_and(|v| v == "json");
    if json {
        json_subscriber(filter, std::io::stderr).init();
    } else {
        text_subscriber(filter, std::io::stderr).init();
    }
}

fn text_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .fmt_fields(escaped_fields())
        .finish()
}

fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .finish()
}

/// The text format's fields, each escaped: the message first and without a name, then
/// `name=value` pairs separated by spaces, as the default format writes them.
fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let mut out = Escaping(writer);
        if field.name() == "message" {
            write!(out, "{value:?}")
        } else {
            write!(out, "{}={value:?}", field.name())
        }
    })
    .delimited(" ")
}

/// Writes through, escaping what could forge a line or drive a terminal.
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(needs_escape) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                other => write!(self.0, "\\u{{{:x}}}", other as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// C0 and C1 control characters (newline, ESC, BEL, …), DEL, and the Unicode line and
/// paragraph separators that some viewers break lines at.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::event::{
        AuditDecision, DeadLetter, DeadLetterSource, DecisionKind, ErrorClass, Level, Phase,
        SourceRef,
    };
    use crate::metrics;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).expect("UTF-8 logs")
        }
    }

    /// A line break, a carriage return, an ANSI colour, a terminal-title (OSC) sequence,
    /// a C1 control and a Unicode line separator.
    const HOSTILE: &str =
        "acme\nFAKE level=ERROR\r\u{1b}[31mred\u{1b}]0;pwned\u{7}\u{9b}2J\u{2028}x";

    fn hostile_decision() -> AuditDecision {
        let at: DateTime<Utc> = "2026-11-01T10:00:00Z".parse().unwrap();
        AuditDecision {
            schema_version: 1,
            event_id: uuid::Uuid::nil(),
            tenant_id: HOSTILE.into(),
            key: format!("{HOSTILE}:{HOSTILE}:input:{HOSTILE}"),
            process: HOSTILE.into(),
            phase: Phase::Input,
            field: HOSTILE.into(),
            level: Level::B,
            decision: DecisionKind::Block,
            count: 4,
            threshold: 3,
            message: HOSTILE.into(),
            occurred_at: at,
            source: SourceRef {
                topic: "audit.validation.v1".into(),
                partition: 0,
                offset: 1,
                event_id: uuid::Uuid::nil(),
            },
        }
    }

    fn hostile_dead_letter() -> DeadLetter {
        DeadLetter {
            schema_version: 1,
            event_id: uuid::Uuid::nil(),
            error_class: ErrorClass::Schema,
            error: HOSTILE.into(),
            source: DeadLetterSource {
                topic: HOSTILE.into(),
                partition: 0,
                offset: 7,
            },
            payload_base64: String::new(),
            first_seen_at: DateTime::UNIX_EPOCH,
        }
    }

    /// Every kind of field: a string, `%` (Display), `?` (Debug), an error, and the
    /// domain events that log user strings.
    fn log_everything() {
        let error = io::Error::other(HOSTILE);
        tracing::warn!(tenant = HOSTILE, "plain string field");
        tracing::warn!(process = %HOSTILE, "display field");
        tracing::warn!(key = ?HOSTILE, "debug field");
        tracing::error!(error = &error as &dyn std::error::Error, "error field");
        tracing::warn!(recipe = %format!("process_recipes.{HOSTILE}.inputs[0]"), "recipe name");
        let span = tracing::warn_span!("span", tenant = %HOSTILE);
        span.in_scope(|| tracing::warn!("inside a span with a hostile field"));
        metrics::dead_lettered(&hostile_dead_letter());
        metrics::decision_emitted(&hostile_decision());
    }

    const EVENTS: usize = 8;

    /// One line per event, no line forged, and none of `forbidden` written raw.
    fn assert_clean(logs: &str, forbidden: &[&str]) {
        assert_eq!(logs.lines().count(), EVENTS, "one line per event:\n{logs}");
        for forbidden in forbidden {
            assert!(
                !logs.contains(forbidden),
                "{forbidden:?} reached the log:\n{logs}"
            );
        }
        assert!(
            !logs.lines().any(|l| l.starts_with("FAKE")),
            "a forged line:\n{logs}"
        );
    }

    #[test]
    fn text_logs_escape_user_strings_in_every_field() {
        let buffer = Buffer::default();
        let subscriber = text_subscriber(EnvFilter::new("debug"), buffer.clone());
        tracing::subscriber::with_default(subscriber, log_everything);
        let logs = buffer.text();
        assert_clean(
            &logs,
            &[
                "\r",
                "\u{1b}[31mred",
                "\u{1b}]0;pwned",
                "\u{7}",
                "\u{9b}",
                "\u{2028}",
            ],
        );
        assert!(
            logs.contains(r"acme\nFAKE level=ERROR\r\u{1b}[31mred"),
            "{logs}"
        );
    }

    #[test]
    fn json_logs_escape_user_strings_in_every_field() {
        let buffer = Buffer::default();
        let subscriber = json_subscriber(EnvFilter::new("debug"), buffer.clone());
        tracing::subscriber::with_default(subscriber, log_everything);
        let logs = buffer.text();
        // JSON escapes every C0 control; a C1 control or U+2028 stays a character inside
        // a JSON string, which no JSON-lines reader splits at.
        assert_clean(&logs, &["\r", "\u{1b}[31mred", "\u{1b}]0;pwned", "\u{7}"]);
        for line in logs.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("each line is JSON");
        }
    }

    #[test]
    fn the_default_fields_would_not_escape_a_display_field() {
        // Why the text format needs its own fields: the default writes `%` values raw.
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .fmt_fields(tracing_subscriber::fmt::format::DefaultFields::new())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(process = %HOSTILE, "display field");
        });
        assert!(buffer.text().contains("acme\nFAKE"));
    }
}
