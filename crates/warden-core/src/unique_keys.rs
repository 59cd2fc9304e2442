//! Duplicate object keys in request JSON.
//!
//! RFC 8259 leaves a repeated key's meaning to the parser: serde_json keeps the last value, a
//! typed struct refuses the document, another parser in front of Warden may keep the first. A
//! request that two components read differently is a policy bypass (`{"tool": "crm.read",
//! "tool": "send_email"}`), so every front door refuses such a request, at any depth, with the
//! same error: [`reject_duplicate_keys`] runs on the text before it is decided.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// A key repeated in one object of a request; converts into the request error every front door
/// answers with ([`crate::request::RequestError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {MESSAGE}")]
pub struct DuplicateKey {
    /// Path of the repeated key (`args.to`, `[2].tool`).
    pub field: String,
}

/// What a [`DuplicateKey`] says about its field.
pub const MESSAGE: &str = "duplicate key (a key may appear once per object)";

/// Objects with at most this many keys are checked by a linear scan, larger ones with a hash
/// set.
const LINEAR_SCAN_KEYS: usize = 16;

/// Refuses JSON text in which an object holds one key twice, at any depth, naming the key by
/// its path (`args.to`, `[2].tool`). Text that is not valid JSON passes: the parser that runs
/// next reports it (with its own message).
pub fn reject_duplicate_keys(bytes: &[u8]) -> Result<(), DuplicateKey> {
    let path = RefCell::new(Vec::new());
    // serde_json's recursion limit stays: text nested past it is refused by the parser anyway.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let walk = Walk { path: &path };
    let result = walk.deserialize(&mut de);
    match result {
        Ok(()) => Ok(()),
        Err(_) => {
            let mut segments = path.into_inner();
            if segments.is_empty() {
                // A syntax error or another parser error: left to the parser.
                return Ok(());
            }
            segments.reverse();
            let mut field = String::new();
            for segment in segments {
                match segment {
                    Segment::Key(key) => {
                        if !field.is_empty() {
                            field.push('.');
                        }
                        field.push_str(&key);
                    }
                    Segment::Index(i) => {
                        field.push('[');
                        field.push_str(&i.to_string());
                        field.push(']');
                    }
                }
            }
            Err(DuplicateKey { field })
        }
    }
}

/// Where a duplicate was found, innermost first (recorded only on the way out of an error).
enum Segment {
    Key(String),
    Index(usize),
}

/// Walks one JSON value without building it.
#[derive(Clone, Copy)]
struct Walk<'p> {
    path: &'p RefCell<Vec<Segment>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// An object key, borrowed from the text when it holds no escape.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(())) => index += 1,
                Ok(None) => return Ok(()),
                Err(e) => {
                    if !self.path.borrow().is_empty() {
                        self.path.borrow_mut().push(Segment::Index(index));
                    }
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        let mut set: Option<std::collections::HashSet<Cow<'de, str>>> = None;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let duplicate = match &mut set {
                Some(set) => !set.insert(key.clone()),
                None => keys.contains(&key),
            };
            if duplicate {
                self.path.borrow_mut().push(Segment::Key(key.into_owned()));
                return Err(de::Error::custom("duplicate key"));
            }
            if let Err(e) = map.next_value_seed(self) {
                if !self.path.borrow().is_empty() {
                    self.path.borrow_mut().push(Segment::Key(key.into_owned()));
                }
                return Err(e);
            }
            if set.is_none() {
                keys.push(key);
                if keys.len() > LINEAR_SCAN_KEYS {
                    set = Some(keys.drain(..).collect());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn field(text: &str) -> Option<String> {
        reject_duplicate_keys(text.as_bytes())
            .err()
            .map(|e| e.field)
    }

    #[test]
    fn duplicates_are_named_by_path_at_any_depth() {
        assert_eq!(field(r#"{"tool":"a","tool":"b"}"#).as_deref(), Some("tool"));
        assert_eq!(
            field(r#"{"tool":"t","args":{"to":"a","cc":[],"to":"b"}}"#).as_deref(),
            Some("args.to")
        );
        assert_eq!(
            field(r#"[{"tool":"t"},{"args":{"x":[{"a":1,"a":2}]}}]"#).as_deref(),
            Some("[1].args.x[0].a")
        );
        // An escaped spelling of the same key is the same key.
        assert_eq!(
            field(r#"{"tool":"a","t\u006fol":"b"}"#).as_deref(),
            Some("tool")
        );
        // Many keys: the hash set path.
        let mut many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        many.push("\"k7\":0".to_owned());
        assert_eq!(
            field(&format!("{{{}}}", many.join(","))).as_deref(),
            Some("k7")
        );
    }

    #[test]
    fn distinct_keys_and_invalid_json_pass() {
        for text in [
            r#"{"tool":"a","args":{"tool":"b"}}"#,
            r#"[{"a":1},{"a":2}]"#,
            r#"{"a":{"b":1},"b":{"a":1}}"#,
            "not json",
            r#"{"a":1"#,
            "",
        ] {
            assert!(reject_duplicate_keys(text.as_bytes()).is_ok(), "{text}");
        }
    }
}
