//! Canonical JSON straight from a `Serialize` value, without the `Value` tree.
//!
//! [`write`] produces exactly the text [`super::canonical_json_by`] would produce from
//! `serde_json::to_value(value)`: the same
//! scalars (numbers through `serde_json::Number`, strings escaped as serde_json escapes
//! them, non-finite floats as `null`), the same shapes for options, enums and bytes, and
//! every object's keys sorted. Each object is written as it comes and, when its keys
//! arrived out of order (a struct's fields), its entries are rearranged in place: one
//! scratch copy per unsorted object instead of a tree of allocations per value.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::fmt::{Display, Write as _};
use std::ops::Range;

use serde::ser::{self, Serialize};

use super::{needs_escape, write_string, KeyOrder};

/// A value that cannot be written as canonical JSON (a map key that is not a string,
/// a number or a bool), or a `Serialize` implementation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// Appends the canonical JSON of `value` to `out`, leaving out the fields named in
/// `skip` of its outermost object.
pub fn write<T: Serialize + ?Sized>(
    out: &mut String,
    value: &T,
    order: KeyOrder,
    skip: &[&str],
) -> Result<(), Error> {
    thread_local! {
        static SCRATCH: RefCell<Scratch> = RefCell::default();
    }
    SCRATCH.with(|cell| {
        // A `Serialize` implementation that writes canonical JSON of its own while this
        // one is being written gets a scratch of its own.
        let mut fresh = Scratch::default();
        let mut held = cell.try_borrow_mut();
        let scratch = match held.as_deref_mut() {
            Ok(scratch) => scratch,
            Err(_) => &mut fresh,
        };
        let written = value.serialize(&mut Writer {
            out,
            order: Some(order),
            skip,
            scratch,
        });
        // An error may leave an object's entries behind.
        scratch.clear();
        written
    })
}

/// The compact JSON text of `value` with fields and map entries in the order they are
/// serialized: the text `serde_json::to_vec` writes for this crate's event types (a test
/// proves it on every output of the bench's mix), with a faster string escape.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    let mut out = String::with_capacity(1024);
    value.serialize(&mut Writer {
        out: &mut out,
        order: None,
        skip: &[],
        // Nothing is sorted: the scratch stays empty, and empty never allocates.
        scratch: &mut Scratch::default(),
    })?;
    Ok(out)
}

/// What sorting objects needs, shared by every object of a text and kept across texts
/// of a thread: the entries of the objects being written (a stack: a nested object's
/// entries are above its parent's and gone when it ends), the text of their map keys,
/// and a copy of an object's body while its entries are put in order.
#[derive(Default)]
struct Scratch {
    entries: Vec<Entry>,
    keys: String,
    body: String,
}

impl Scratch {
    fn clear(&mut self) {
        self.entries.clear();
        self.keys.clear();
        self.body.clear();
    }
}

/// An entry of an object being written, kept to sort the object when it ends.
struct Entry {
    key: Key,
    /// Where the entry (`"key":value`) is in the output.
    range: Range<usize>,
}

/// The key of an [`Entry`].
enum Key {
    /// A struct field's name.
    Field(&'static str),
    /// A map key: where its text is in [`Scratch::keys`].
    Held(Range<usize>),
}

impl Key {
    fn text<'k>(&self, keys: &'k str) -> &'k str {
        match self {
            Key::Field(name) => name,
            Key::Held(range) => &keys[range.clone()],
        }
    }
}

struct Writer<'a> {
    out: &'a mut String,
    /// How each object's keys are sorted; `None`: as serialized.
    order: Option<KeyOrder>,
    /// Fields left out of the next object written; nested objects keep all.
    skip: &'a [&'a str],
    scratch: &'a mut Scratch,
}

impl<'a> Writer<'a> {
    fn number(&mut self, n: impl Into<serde_json::Number>) {
        let _ = write!(self.out, "{}", n.into());
    }

    /// An integer, as `serde_json` writes it (with `itoa` too).
    fn integer(&mut self, n: impl itoa::Integer) {
        self.out.push_str(itoa::Buffer::new().format(n));
    }

    fn float(&mut self, f: f64) {
        match serde_json::Number::from_f64(f) {
            Some(n) => self.number(n),
            None => self.out.push_str("null"),
        }
    }

    fn object(&mut self) -> Object<'_, 'a> {
        let start = self.out.len();
        self.out.push('{');
        let skip = std::mem::take(&mut self.skip);
        let (entries, keys) = (self.scratch.entries.len(), self.scratch.keys.len());
        Object {
            writer: self,
            start,
            skip,
            first: true,
            entries,
            keys,
            key: PendingKey::None,
            variant: false,
        }
    }

    /// `{"variant":` of an externally tagged enum variant with content.
    fn variant(&mut self, variant: &str) {
        self.skip = &[];
        self.out.push('{');
        write_string(self.out, variant);
        self.out.push(':');
    }

    /// A value nested in this one: it keeps all its fields.
    fn nested(&mut self) -> Writer<'_> {
        Writer {
            out: self.out,
            order: self.order,
            skip: &[],
            scratch: self.scratch,
        }
    }
}

/// The key of a map entry, between `serialize_key` and `serialize_value`.
enum PendingKey {
    None,
    /// Kept until the value comes, in [`Scratch::keys`]: the entry may be left out or
    /// sorted.
    Held(Range<usize>),
    /// Already written to the output, with its `:`: entries go in as serialized.
    Written,
}

/// An object being written: its entries' keys and byte ranges in the output, sorted
/// when it ends.
struct Object<'w, 'a> {
    writer: &'w mut Writer<'a>,
    start: usize,
    skip: &'a [&'a str],
    first: bool,
    /// Where this object's entries begin in [`Scratch::entries`] (kept only when keys
    /// are sorted) and its map keys in [`Scratch::keys`].
    entries: usize,
    keys: usize,
    /// The key of a map entry whose value comes next.
    key: PendingKey,
    /// Whether this object is the content of an enum variant (`{"v":{...}}`).
    variant: bool,
}

impl Object<'_, '_> {
    fn entry<T: Serialize + ?Sized>(&mut self, key: Key, value: &T) -> Result<(), Error> {
        let writer = &mut *self.writer;
        let text = key.text(&writer.scratch.keys);
        if self.skip.contains(&text) {
            return Ok(());
        }
        if !self.first {
            writer.out.push(',');
        }
        self.first = false;
        let begin = writer.out.len();
        match key {
            Key::Field(name) => write_field_name(writer.out, name),
            Key::Held(_) => {
                write_string(writer.out, text);
                writer.out.push(':');
            }
        }
        value.serialize(&mut writer.nested())?;
        if writer.order.is_some() {
            let range = begin..writer.out.len();
            writer.scratch.entries.push(Entry { key, range });
        }
        Ok(())
    }

    fn end(self) {
        let Some(order) = self.writer.order else {
            self.writer.out.push('}');
            if self.variant {
                self.writer.out.push('}');
            }
            return;
        };
        let out = &mut *self.writer.out;
        let Scratch {
            entries: all,
            keys,
            body,
        } = &mut *self.writer.scratch;
        let entries = &mut all[self.entries..];
        let cmp = |a: &Entry, b: &Entry| order.cmp(a.key.text(keys), b.key.text(keys));
        if !entries
            .windows(2)
            .all(|w| cmp(&w[0], &w[1]) != Ordering::Greater)
        {
            entries.sort_by(cmp);
            let base = self.start + 1;
            body.clear();
            body.push_str(&out[base..]);
            out.truncate(base);
            for (i, entry) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&body[entry.range.start - base..entry.range.end - base]);
            }
        }
        all.truncate(self.entries);
        keys.truncate(self.keys);
        out.push('}');
        if self.variant {
            out.push('}');
        }
    }
}

/// `"name":` for a struct field. Field names are the `&'static str`s of `Serialize`
/// impls (Rust identifiers, or this crate's `rename`s), which never need an escape: they
/// skip the check every other string takes, a twentieth of an execution record's
/// instructions. Debug builds, which run the tests, still check each one.
fn write_field_name(out: &mut String, name: &'static str) {
    debug_assert!(!needs_escape(name), "field name {name:?} needs an escape");
    out.reserve(name.len() + 3);
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
}

/// Map keys, handed to a closure as text: strings as they are; numbers, bools and chars
/// as their text, as `serde_json` turns them into object keys.
struct KeyWriter<F>(F);

fn key_error() -> Error {
    Error("key must be a string".into())
}

macro_rules! key_display {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, v: $ty) -> Result<(), Error> {
            (self.0)(&v.to_string());
            Ok(())
        })*
    };
}

impl<F: FnOnce(&str)> ser::Serializer for KeyWriter<F> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    key_display!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char);

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        (self.0)(v);
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        (self.0)(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_f32(self, _: f32) -> Result<(), Error> {
        Err(key_error())
    }
    fn serialize_f64(self, _: f64) -> Result<(), Error> {
        Err(key_error())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Error> {
        Err(key_error())
    }
    fn serialize_none(self) -> Result<(), Error> {
        Err(key_error())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Error> {
        Err(key_error())
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Err(key_error())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        Err(key_error())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Err(key_error())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_error())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_error())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_error())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_error())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_error())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(key_error())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_error())
    }
}

/// An array being written.
struct Array<'w, 'a> {
    writer: &'w mut Writer<'a>,
    first: bool,
    /// Whether this array is the content of an enum variant (`{"v":[...]}`).
    variant: bool,
}

impl Array<'_, '_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.writer.out.push(',');
        }
        self.first = false;
        value.serialize(&mut self.writer.nested())
    }

    fn end(self) {
        self.writer.out.push(']');
        if self.variant {
            self.writer.out.push('}');
        }
    }
}

macro_rules! number {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, v: $ty) -> Result<(), Error> {
            self.integer(v);
            Ok(())
        })*
    };
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Array<'w, 'a>;
    type SerializeTuple = Array<'w, 'a>;
    type SerializeTupleStruct = Array<'w, 'a>;
    type SerializeTupleVariant = Array<'w, 'a>;
    type SerializeMap = Object<'w, 'a>;
    type SerializeStruct = Object<'w, 'a>;
    type SerializeStructVariant = Object<'w, 'a>;

    number!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64);

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        // As `serde_json::to_value`: within 64 bits or an error.
        match (i64::try_from(v), u64::try_from(v)) {
            (Ok(v), _) => self.integer(v),
            (_, Ok(v)) => self.integer(v),
            _ => return Err(Error("number out of range".into())),
        }
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        let v = u64::try_from(v).map_err(|_| Error("number out of range".into()))?;
        self.integer(v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.float(f64::from(v));
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.float(v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_string(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_string(self.out, v);
        Ok(())
    }
    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<(), Error> {
        // Written in place, then escaped only if it has to be: timestamps and UUIDs are
        // serialized this way, and never need it.
        let start = self.out.len();
        self.out.push('"');
        let _ = write!(self.out, "{value}");
        if needs_escape(&self.out[start + 1..]) {
            let text = self.out.split_off(start + 1);
            self.out.truncate(start);
            write_string(self.out, &text);
        } else {
            self.out.push('"');
        }
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        let mut array = ser::Serializer::serialize_seq(self, Some(v.len()))?;
        for byte in v {
            ser::SerializeSeq::serialize_element(&mut array, byte)?;
        }
        ser::SerializeSeq::end(array)
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.out.push_str("null");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.out.push_str("null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.variant(variant);
        value.serialize(&mut self.nested())?;
        self.out.push('}');
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        self.skip = &[];
        self.out.push('[');
        Ok(Array {
            writer: self,
            first: true,
            variant: false,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        self.variant(variant);
        self.out.push('[');
        Ok(Array {
            writer: self,
            first: true,
            variant: true,
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Ok(self.object())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Ok(self.object())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        self.variant(variant);
        let mut object = self.object();
        object.variant = true;
        Ok(object)
    }
}

impl ser::SerializeSeq for Array<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        Array::end(self);
        Ok(())
    }
}

impl ser::SerializeTuple for Array<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        Array::end(self);
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Array<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        Array::end(self);
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Array<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        Array::end(self);
        Ok(())
    }
}

impl ser::SerializeMap for Object<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        if self.writer.order.is_none() && self.skip.is_empty() {
            // Nothing to sort or leave out: the key goes straight to the output.
            let out = &mut *self.writer.out;
            if !self.first {
                out.push(',');
            }
            self.first = false;
            key.serialize(KeyWriter(|key: &str| write_string(out, key)))?;
            out.push(':');
            self.key = PendingKey::Written;
        } else {
            let keys = &mut self.writer.scratch.keys;
            let start = keys.len();
            key.serialize(KeyWriter(|key: &str| keys.push_str(key)))?;
            self.key = PendingKey::Held(start..keys.len());
        }
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        match std::mem::replace(&mut self.key, PendingKey::None) {
            PendingKey::Written => value.serialize(&mut self.writer.nested()),
            PendingKey::Held(key) => self.entry(Key::Held(key), value),
            PendingKey::None => Err(Error("map value without a key".into())),
        }
    }
    fn end(self) -> Result<(), Error> {
        Object::end(self);
        Ok(())
    }
}

impl ser::SerializeStruct for Object<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.entry(Key::Field(key), value)
    }
    fn end(self) -> Result<(), Error> {
        Object::end(self);
        Ok(())
    }
}

impl ser::SerializeStructVariant for Object<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.entry(Key::Field(key), value)
    }
    fn end(self) -> Result<(), Error> {
        Object::end(self);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;
    use serde_json::{json, Value};

    use super::*;
    use crate::canonical::canonical_json;

    fn written<T: Serialize>(value: &T, order: KeyOrder, skip: &[&str]) -> String {
        let mut out = String::new();
        write(&mut out, value, order, skip).expect("writes");
        out
    }

    /// What [`canonical_json`] makes of the value's tree.
    fn from_tree<T: Serialize>(value: &T) -> String {
        canonical_json(&serde_json::to_value(value).expect("to_value"))
    }

    #[derive(Serialize)]
    enum Shape {
        Unit,
        Newtype(u8),
        Tuple(i32, String),
        Struct { z: bool, a: Option<f64> },
    }

    #[derive(Serialize)]
    struct Record {
        zeta: String,
        alpha: Vec<Shape>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u32>,
        none: Option<u32>,
        bytes: serde_bytes_like::Bytes,
        nested: Nested,
        by_number: BTreeMap<u64, &'static str>,
        tuple: (u8, char),
        floats: [f64; 4],
        value: Value,
    }

    #[derive(Serialize)]
    struct Nested {
        zeta: i64,
        event_id: &'static str,
    }

    /// Bytes serialized as bytes (`serialize_bytes`), as `serde_bytes` would.
    mod serde_bytes_like {
        pub(super) struct Bytes(pub(super) Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }

    fn record() -> Record {
        Record {
            zeta: "line\nbreak \u{1} \"q\" \\ é \u{1F600}".into(),
            alpha: vec![
                Shape::Unit,
                Shape::Newtype(7),
                Shape::Tuple(-3, "t".into()),
                Shape::Struct {
                    z: true,
                    a: Some(1.5),
                },
                Shape::Struct { z: false, a: None },
            ],
            skipped: None,
            none: None,
            bytes: serde_bytes_like::Bytes(vec![0, 255, 16]),
            nested: Nested {
                zeta: i64::MIN,
                event_id: "kept: only the outermost object skips",
            },
            by_number: BTreeMap::from([(10, "ten"), (9, "nine")]),
            tuple: (1, 'c'),
            floats: [1.0, 1e20, f64::NAN, -0.25],
            value: json!({"\u{FF21}": 1, "\u{1F600}": [u64::MAX, 2.5, null], "b": {"y": {}, "x": []}, "": ""}),
        }
    }

    #[test]
    fn the_text_is_what_canonical_json_makes_of_the_tree() {
        let record = record();
        assert_eq!(written(&record, KeyOrder::Utf16, &[]), from_tree(&record));
        let value = serde_json::to_value(&record).expect("to_value");
        assert_eq!(
            written(&value, KeyOrder::Utf16, &[]),
            canonical_json(&value)
        );
    }

    #[test]
    fn to_json_writes_serde_jsons_text() {
        let record = record();
        assert_eq!(
            to_json(&record).expect("writes"),
            serde_json::to_string(&record).expect("serializes")
        );
        let value = serde_json::to_value(&record).expect("to_value");
        assert_eq!(
            to_json(&value).expect("writes"),
            serde_json::to_string(&value).expect("serializes")
        );
    }

    #[test]
    fn every_string_that_needs_an_escape_is_escaped_as_serde_json_does() {
        // Each special byte at each position of an eight-byte word, and past it.
        for special in (0u8..0x20).chain([b'"', b'\\', 0x7f]) {
            for len in 1..=17 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    let text = String::from_utf8(bytes).expect("ASCII");
                    assert_eq!(
                        to_json(&text).expect("writes"),
                        serde_json::to_string(&text).expect("serializes"),
                        "{text:?}"
                    );
                }
            }
        }
        for text in [
            "",
            "plain",
            "é\u{1F600}\u{2028}",
            "\u{80}\u{ff}",
            "]}\\u0000",
        ] {
            assert_eq!(
                to_json(text).expect("writes"),
                serde_json::to_string(text).expect("serializes")
            );
        }
    }

    #[test]
    fn skipped_fields_leave_only_the_outermost_object() {
        let record = record();
        let mut tree = serde_json::to_value(&record).expect("to_value");
        tree.as_object_mut().expect("object").remove("zeta");
        tree.as_object_mut().expect("object").remove("event_id");
        let text = written(&record, KeyOrder::Utf16, &["zeta", "event_id"]);
        assert_eq!(text, canonical_json(&tree));
        assert!(text.contains("\"nested\":{\"event_id\":"), "{text}");
    }

    #[test]
    fn keys_sort_by_utf16_or_by_bytes() {
        // U+1F600 is a surrogate pair in UTF-16 and sorts before U+FF21 there, after it
        // by bytes.
        let value = json!({"\u{FF21}": 1, "\u{1F600}": 2, "a": 3});
        assert_eq!(
            written(&value, KeyOrder::Utf16, &[]),
            "{\"a\":3,\"\u{1F600}\":2,\"\u{FF21}\":1}"
        );
        assert_eq!(
            written(&value, KeyOrder::Bytes, &[]),
            "{\"a\":3,\"\u{FF21}\":1,\"\u{1F600}\":2}"
        );
    }

    /// Field names are written without the escape check; debug builds, which run the
    /// tests, still refuse one that needs an escape.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "needs an escape")]
    fn a_field_name_that_needs_an_escape_fails_in_debug_builds() {
        #[derive(Serialize)]
        struct Odd {
            #[serde(rename = "a\"b")]
            field: u8,
        }
        let _ = to_json(&Odd { field: 1 });
    }

    #[test]
    fn a_map_key_that_is_not_text_is_an_error() {
        let map = BTreeMap::from([((1, 2), "pair")]);
        let mut out = String::new();
        assert!(write(&mut out, &map, KeyOrder::Bytes, &[]).is_err());
        assert!(serde_json::to_value(&map).is_err());
    }

    #[test]
    fn a_failed_text_leaves_nothing_behind_for_the_next() {
        // The error comes deep in an object whose entries and keys are held for sorting.
        let failing = json!({"z": {"y": 1, "b": [{"x": 2}]}, "a": 0});
        let bad = BTreeMap::from([((1, 2), "pair")]);
        let mut out = String::new();
        assert!(write(&mut out, &(failing.clone(), bad), KeyOrder::Bytes, &[]).is_err());
        assert_eq!(
            written(&failing, KeyOrder::Bytes, &[]),
            canonical_json(&failing)
        );
        let record = record();
        assert_eq!(written(&record, KeyOrder::Utf16, &[]), from_tree(&record));
    }

    /// A value whose `Serialize` writes canonical JSON of its own: a text inside a text.
    struct Digesting(Value);

    impl Serialize for Digesting {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let inner = written(&self.0, KeyOrder::Utf16, &[]);
            let mut map = s.serialize_map(Some(2))?;
            map.serialize_entry("text", &inner)?;
            map.serialize_entry("value", &self.0)?;
            map.end()
        }
    }

    #[derive(Serialize)]
    struct Around {
        zeta: Value,
        inner: Digesting,
        alpha: u8,
    }

    #[test]
    fn a_text_written_while_another_is_written_does_not_disturb_it() {
        let value = json!({"q": {"z": 1, "a": 2}, "b": [3]});
        // The outer object holds `zeta`'s entry, to sort, while `inner` writes its text.
        let around = Around {
            zeta: json!({"y": true, "d": false}),
            inner: Digesting(value.clone()),
            alpha: 1,
        };
        let expected = json!({
            "zeta": around.zeta,
            "inner": {"text": canonical_json(&value), "value": value},
            "alpha": 1,
        });
        assert_eq!(
            written(&around, KeyOrder::Utf16, &[]),
            canonical_json(&expected)
        );
    }
}
