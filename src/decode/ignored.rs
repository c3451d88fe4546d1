//! Notes whether a deserialization ignored anything: a field its types do not name.
//!
//! serde's derived types skip a field they do not name by deserializing its value as
//! [`IgnoredAny`](serde::de::IgnoredAny), that is, by calling `deserialize_ignored_any`.
//! [`Noting`] wraps a deserializer, and everything it hands out (visitors, map, sequence
//! and enum accesses, seeds), at every depth, and sets a flag when that call is made.
//! Everything else is forwarded as it is, so the value read is the one the wrapped
//! deserializer gives.
//!
//! `serde_ignored` does the same and also reports the path of each ignored field, for
//! which it copies every map key it passes into a `String`: about 8,000 instructions of
//! an execution record's decode, for a path the decode never reads.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// `inner`, reporting into `ignored` when anything under it is ignored.
pub(crate) struct Noting<'a, T> {
    inner: T,
    ignored: &'a Cell<bool>,
}

impl<'a, T> Noting<'a, T> {
    pub(crate) fn new(inner: T, ignored: &'a Cell<bool>) -> Noting<'a, T> {
        Noting { inner, ignored }
    }

    fn wrap<U>(&self, inner: U) -> Noting<'a, U> {
        Noting::new(inner, self.ignored)
    }
}

macro_rules! forward_deserialize {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            let visitor = self.wrap(visitor);
            self.inner.$method(visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Noting<'_, D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier
    );

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.ignored.set(true);
        self.inner.deserialize_ignored_any(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(visitor);
        self.inner.deserialize_enum(name, variants, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<E: serde::de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Noting<'_, V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    forward_visit!(
        visit_bool: bool,
        visit_i8: i8,
        visit_i16: i16,
        visit_i32: i32,
        visit_i64: i64,
        visit_i128: i128,
        visit_u8: u8,
        visit_u16: u16,
        visit_u32: u32,
        visit_u64: u64,
        visit_u128: u128,
        visit_f32: f32,
        visit_f64: f64,
        visit_char: char,
        visit_str: &str,
        visit_borrowed_str: &'de str,
        visit_string: String,
        visit_bytes: &[u8],
        visit_borrowed_bytes: &'de [u8],
        visit_byte_buf: Vec<u8>
    );

    fn visit_none<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let deserializer = self.wrap(deserializer);
        self.inner.visit_some(deserializer)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        let deserializer = self.wrap(deserializer);
        self.inner.visit_newtype_struct(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let seq = self.wrap(seq);
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let map = self.wrap(map);
        self.inner.visit_map(map)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let data = self.wrap(data);
        self.inner.visit_enum(data)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Noting<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        let deserializer = self.wrap(deserializer);
        self.inner.deserialize(deserializer)
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Noting<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Noting<'_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'a, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Noting<'a, A> {
    type Error = A::Error;
    type Variant = Noting<'a, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let seed = self.wrap(seed);
        let ignored = self.ignored;
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((value, Noting::new(variant, ignored)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Noting<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.inner.struct_variant(fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::Value;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    enum Kind {
        Unit,
        Newtype(Inner),
        Tuple(u8, Inner),
        Struct { inner: Inner },
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Inner {
        a: u8,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Outer {
        name: String,
        maybe: Option<Inner>,
        list: Vec<Inner>,
        map: BTreeMap<String, Inner>,
        kinds: Vec<Kind>,
        free: Value,
        pair: (Inner, bool),
    }

    /// The value read through [`Noting`], and whether it noted anything ignored; the
    /// value must be the one read without it.
    fn read(text: &str) -> (Outer, bool) {
        let ignored = Cell::new(false);
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = Outer::deserialize(Noting::new(&mut deserializer, &ignored)).expect("reads");
        let plain: Outer = serde_json::from_str(text).expect("reads");
        assert_eq!(value, plain);
        (value, ignored.get())
    }

    const BASE: &str = r#"{"name":"n","maybe":{"a":1},"list":[{"a":2}],"map":{"k":{"a":3}},
        "kinds":["Unit",{"Newtype":{"a":4}},{"Tuple":[5,{"a":6}]},{"Struct":{"inner":{"a":7}}}],
        "free":{"x":[1,{"y":null}]},"pair":[{"a":8},true]}"#;

    #[test]
    fn nothing_ignored_is_noted_as_nothing() {
        let (value, ignored) = read(BASE);
        assert!(!ignored);
        assert_eq!(value.kinds.len(), 4);
    }

    #[test]
    fn a_field_ignored_at_any_depth_is_noted() {
        let places = [
            (r#""name":"n""#, r#""name":"n","extra":1"#),
            (r#""maybe":{"a":1}"#, r#""maybe":{"a":1,"extra":[1]}"#),
            (r#""list":[{"a":2}]"#, r#""list":[{"a":2,"extra":{}}]"#),
            (
                r#""map":{"k":{"a":3}}"#,
                r#""map":{"k":{"a":3,"extra":null}}"#,
            ),
            (
                r#"{"Newtype":{"a":4}}"#,
                r#"{"Newtype":{"a":4,"extra":"x"}}"#,
            ),
            (r#"{"a":6}"#, r#"{"a":6,"extra":true}"#),
            (r#"{"inner":{"a":7}}"#, r#"{"inner":{"a":7},"extra":2}"#),
            (r#"{"a":8}"#, r#"{"a":8,"extra":2.5}"#),
        ];
        for (from, to) in places {
            assert!(BASE.contains(from), "{from}");
            let (_, ignored) = read(&BASE.replacen(from, to, 1));
            assert!(ignored, "{to}");
        }
    }
}
