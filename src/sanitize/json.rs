//! The `json` format: only the configured string fields are user text.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::sanitizer::Sanitizer;
use crate::error::{GuardError, GuardErrorKind};

/// Where the user text is in a JSON message.
#[derive(Clone, Debug)]
pub(crate) enum Fields {
    /// The string values at these JSON Pointers.
    Pointers(Vec<String>),
    /// Every string value (not object keys).
    AllStrings,
}

fn invalid(message: &'static str) -> GuardError {
    GuardError::new(GuardErrorKind::InvalidMessage, message)
}

/// The nesting depth of a JSON text, counted without parsing it (strings skipped).
fn depth_exceeds(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Sanitizes the user-text fields of a JSON message; `None` when nothing changed.
pub(crate) fn sanitize(
    text: &str,
    sanitizer: &Sanitizer,
    fields: &Fields,
    max_depth: usize,
) -> Result<Option<String>, GuardError> {
    if depth_exceeds(text, max_depth) {
        return Err(invalid("the JSON message is nested too deeply"));
    }
    let Strict(mut document) = serde_json::from_str(text).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE) {
            invalid("the JSON message has a duplicate key")
        } else {
            invalid("the message is not valid JSON")
        }
    })?;
    let mut changed = false;
    let mut visit = |field: &mut String| -> Result<(), GuardError> {
        if let Some(clean) = sanitizer.text(field)? {
            *field = clean;
            changed = true;
        }
        Ok(())
    };
    match fields {
        Fields::Pointers(pointers) => {
            for pointer in pointers {
                match field_mut(&mut document, pointer)? {
                    None | Some(Value::Null) => {}
                    Some(Value::String(field)) => visit(field)?,
                    Some(_) => {
                        return Err(GuardError::new(
                            GuardErrorKind::InvalidMessage,
                            format!("`{pointer}` must be a string"),
                        ));
                    }
                }
            }
        }
        Fields::AllStrings => walk(&mut document, &mut visit)?,
    }
    Ok(changed.then(|| document.to_string()))
}

const DUPLICATE: &str = "duplicate key";

/// The value at a JSON Pointer, refusing an array where the pointer names an object key:
/// serde's derived structs also accept arrays (fields by position), so `["send_message",
/// "lobby", "<img …>"]` would reach such an application as `content` without ever being at
/// `/content`.
fn field_mut<'a>(
    document: &'a mut Value,
    pointer: &str,
) -> Result<Option<&'a mut Value>, GuardError> {
    let mut current = document;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        current = match current {
            Value::Object(map) => match map.get_mut(&token) {
                Some(value) => value,
                None => return Ok(None),
            },
            Value::Array(items) => match token.parse::<usize>() {
                Ok(index) => match items.get_mut(index) {
                    Some(value) => value,
                    None => return Ok(None),
                },
                Err(_) => {
                    return Err(GuardError::new(
                        GuardErrorKind::InvalidMessage,
                        format!("an array where `{pointer}` expects an object"),
                    ));
                }
            },
            _ => return Ok(None),
        };
    }
    Ok(Some(current))
}

/// A JSON value parsed with duplicate keys refused: with them, which value a consumer sees
/// depends on its parser (serde_json keeps the last, others the first), so a sanitizer
/// that checked one could pass the other on unchecked.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

fn walk(
    value: &mut Value,
    visit: &mut impl FnMut(&mut String) -> Result<(), GuardError>,
) -> Result<(), GuardError> {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => items.iter_mut().try_for_each(|item| walk(item, visit)),
        Value::Object(map) => map.values_mut().try_for_each(|item| walk(item, visit)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_counted_outside_strings() {
        assert!(!depth_exceeds(r#"{"a":[1,{"b":"[[[[[[["}]}"#, 3));
        assert!(depth_exceeds(r#"[[[[1]]]]"#, 3));
        assert!(!depth_exceeds(r#"["\"[[[[["]"#, 1));
    }
}
