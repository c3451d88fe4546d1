//! Page cursors: the position of the last record of a page in the listing order
//! (source topic, partition, offset, id), opaque to callers.
//!
//! A cursor is keyset-based, not an offset into the result, so records written while a
//! caller pages through a listing never make it skip or repeat one. It names its
//! listing, so a cursor of one listing handed to another is refused instead of silently
//! starting at an unrelated position.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreError;

/// The last position a page returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// The listing: `decision`, `verdict` or `coordination`.
    #[serde(rename = "k")]
    pub(crate) listing: String,
    #[serde(rename = "t")]
    pub(crate) topic: String,
    #[serde(rename = "p")]
    pub(crate) partition: i32,
    #[serde(rename = "o")]
    pub(crate) offset: i64,
    #[serde(rename = "i")]
    pub(crate) id: Uuid,
}

impl Cursor {
    /// URL-safe text, so a cursor can travel in a query string.
    pub(crate) fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a cursor always serializes");
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a cursor handed out by a `listing` page. A cursor that is not one is a
    /// caller's bug: retrying cannot help, so it is a permanent error.
    pub(crate) fn decode(text: &str, listing: &str) -> Result<Cursor, StoreError> {
        let invalid = || StoreError::Permanent(format!("invalid page cursor for {listing}s"));
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if cursor.listing != listing {
            return Err(invalid());
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> Cursor {
        Cursor {
            listing: "decision".into(),
            topic: "audit.validation.v1".into(),
            partition: 2,
            offset: 41,
            id: Uuid::from_u128(7),
        }
    }

    #[test]
    fn a_cursor_reads_back_as_itself() {
        let c = cursor();
        assert_eq!(Cursor::decode(&c.encode(), "decision").unwrap(), c);
    }

    #[test]
    fn a_cursor_of_another_listing_is_refused() {
        let err = Cursor::decode(&cursor().encode(), "verdict").unwrap_err();
        assert!(!err.is_retryable());
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        assert!(Cursor::decode("not a cursor!", "decision").is_err());
        assert!(Cursor::decode("e30", "decision").is_err());
    }
}
