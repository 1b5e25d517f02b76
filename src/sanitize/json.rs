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
    Pointers(Vec<Pointer>),
    /// Every string value (not object keys).
    AllStrings,
}

/// A JSON Pointer, as configured and as its unescaped reference tokens.
#[derive(Clone, Debug)]
pub(crate) struct Pointer {
    text: String,
    /// Each token, with the array index it names when it reads as one.
    tokens: Vec<(String, Option<usize>)>,
}

impl Pointer {
    pub(crate) fn new(text: &str) -> Self {
        let tokens = text
            .split('/')
            .skip(1)
            .map(|token| {
                let token = token.replace("~1", "/").replace("~0", "~");
                let index = token.parse::<usize>().ok();
                (token, index)
            })
            .collect();
        Self {
            text: text.to_owned(),
            tokens,
        }
    }
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
    if passes_in_one_read(text, sanitizer, fields, max_depth) {
        return Ok(None);
    }
    if depth_exceeds(text, max_depth) {
        return Err(invalid("the JSON message is nested too deeply"));
    }
    full(text, sanitizer, fields)
}

/// The whole document parsed, its user-text fields sanitized, and written out again when
/// one changed.
fn full(text: &str, sanitizer: &Sanitizer, fields: &Fields) -> Result<Option<String>, GuardError> {
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
                            format!("`{}` must be a string", pointer.text),
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
    pointer: &Pointer,
) -> Result<Option<&'a mut Value>, GuardError> {
    let mut current = document;
    for (token, index) in &pointer.tokens {
        current = match current {
            Value::Object(map) => match map.get_mut(token) {
                Some(value) => value,
                None => return Ok(None),
            },
            Value::Array(items) => match index {
                Some(index) => match items.get_mut(*index) {
                    Some(value) => value,
                    None => return Ok(None),
                },
                None => {
                    return Err(GuardError::new(
                        GuardErrorKind::InvalidMessage,
                        format!("an array where `{}` expects an object", pointer.text),
                    ));
                }
            },
            _ => return Ok(None),
        };
    }
    Ok(Some(current))
}

/// Whether `text` would come through [`sanitize`] unchanged and unrefused, decided in one
/// read without building a [`Value`]: valid JSON without a duplicate key, whose user-text
/// strings all pass the sanitizer as they are, with nothing at a pointer but a string or
/// `null` and no array where a pointer names a key, nested no deeper than `max_depth`.
/// Anything else, or an object of more than [`MAX_KEYS_IN_ONE_READ`] keys, answers
/// `false`, and the full path decides (and words the error): this read only ever skips
/// work. (serde_json's own recursion limit bounds it before the depth is known.)
fn passes_in_one_read(
    text: &str,
    sanitizer: &Sanitizer,
    fields: &Fields,
    max_depth: usize,
) -> bool {
    let pointers = match fields {
        Fields::Pointers(pointers) if pointers.len() > 64 => return false,
        Fields::Pointers(pointers) => pointers.as_slice(),
        Fields::AllStrings => &[],
    };
    let read = Read {
        sanitizer,
        all_strings: matches!(fields, Fields::AllStrings),
        pointers,
        max_depth,
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let node = Node {
        read: &read,
        depth: 0,
        watched: mask_of(pointers.len()),
    };
    de::DeserializeSeed::deserialize(node, &mut deserializer).is_ok() && deserializer.end().is_ok()
}

/// Objects with more keys than this are left to the full path, which finds duplicates in
/// a map: the one read compares each key with the ones before it.
const MAX_KEYS_IN_ONE_READ: usize = 32;

/// The bits of the first `n` pointers.
fn mask_of(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// What the one read checks against.
struct Read<'a> {
    sanitizer: &'a Sanitizer,
    all_strings: bool,
    pointers: &'a [Pointer],
    max_depth: usize,
}

/// One value in the one read: `depth` tokens from the root, on the path of the pointers
/// whose bits are set in `watched`.
#[derive(Clone, Copy)]
struct Node<'a> {
    read: &'a Read<'a>,
    depth: usize,
    watched: u64,
}

/// Why the one read stopped: the full path decides.
const UNDECIDED: &str = "undecided";

impl Node<'_> {
    /// Whether a watched pointer ends at this value.
    fn is_target(&self) -> bool {
        self.pointers()
            .any(|pointer| pointer.tokens.len() == self.depth)
    }

    fn pointers(&self) -> impl Iterator<Item = &Pointer> + '_ {
        self.read
            .pointers
            .iter()
            .enumerate()
            .filter(|(i, _)| self.watched & (1 << i) != 0)
            .map(|(_, pointer)| pointer)
    }

    /// The child reached by `matches` on the token at this depth.
    fn child(&self, matches: impl Fn(&(String, Option<usize>)) -> bool) -> Self {
        let mut watched = 0;
        for (i, pointer) in self.read.pointers.iter().enumerate() {
            if self.watched & (1 << i) != 0 && pointer.tokens.get(self.depth).is_some_and(&matches)
            {
                watched |= 1 << i;
            }
        }
        Self {
            read: self.read,
            depth: self.depth + 1,
            watched,
        }
    }

    /// An array or object here is nested `depth + 1` deep.
    fn container<E: de::Error>(self) -> Result<(), E> {
        if self.depth >= self.read.max_depth {
            return Err(E::custom(UNDECIDED));
        }
        Ok(())
    }

    fn scalar<E: de::Error>(self) -> Result<(), E> {
        if self.is_target() {
            return Err(E::custom(UNDECIDED));
        }
        Ok(())
    }

    fn string<E: de::Error>(self, text: &str) -> Result<(), E> {
        if (self.read.all_strings || self.is_target())
            && !matches!(self.read.sanitizer.text(text), Ok(None))
        {
            return Err(E::custom(UNDECIDED));
        }
        Ok(())
    }
}

impl<'de> de::DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        // `null` at a pointer is no text.
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        self.string(text)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.container()?;
        // An array at a pointer's end is not a string; one where a pointer names a key is
        // refused by the full path.
        let keyed = self.pointers().any(|pointer| {
            pointer
                .tokens
                .get(self.depth)
                .is_none_or(|(_, index)| index.is_none())
        });
        if keyed {
            return Err(de::Error::custom(UNDECIDED));
        }
        let mut index = 0;
        while seq
            .next_element_seed(self.child(|(_, at)| *at == Some(index)))?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.container()?;
        if self.is_target() {
            return Err(de::Error::custom(UNDECIDED));
        }
        let mut keys: Vec<Key<'de>> = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if keys.len() == MAX_KEYS_IN_ONE_READ || keys.contains(&key) {
                return Err(de::Error::custom(UNDECIDED));
            }
            map.next_value_seed(self.child(|(token, _)| *token == *key.0))?;
            keys.push(key);
        }
        Ok(())
    }
}

/// An object key, borrowed from the text when it has no escapes.
#[derive(PartialEq)]
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
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
    use crate::sanitize::SanitizeConfig;

    #[test]
    fn the_one_read_passes_only_what_the_full_path_passes_unchanged() {
        let sanitizer = SanitizeConfig::default().build().unwrap();
        let pointers =
            |list: &[&str]| Fields::Pointers(list.iter().map(|p| Pointer::new(p)).collect());
        let configs = [
            pointers(&["/content"]),
            pointers(&["/content", "/meta/title", "/list/1", "/a~1b", "/t~0"]),
            pointers(&[""]),
            Fields::AllStrings,
        ];
        let inputs = [
            r#"{"type":"send_message","room":"lobby","content":"hello"}"#,
            r#"{"content":"<b>hi</b>"}"#,
            r#"{"content":null}"#,
            r#"{"content":5}"#,
            r#"{"content":{"x":"y"}}"#,
            r#"{"content":["a"]}"#,
            r#"{"content":"a","content":"b"}"#,
            r#"{"content":"a","\u0063ontent":"b"}"#,
            r#"{"cont\u0065nt":"\u003cscript\u003e"}"#,
            r#"{"content":"caf\u00e9 \"quoted\""}"#,
            r#"{"content":"ok"} trailing"#,
            r#"{"content":"ok""#,
            r#"["send_message","lobby","<img src=x onerror=alert(1)>"]"#,
            r#"{"meta":{"title":"fine","title":"dup"}}"#,
            r#"{"meta":{"title":"<i>x</i>"}}"#,
            r#"{"meta":["title"]}"#,
            r#"{"meta":"a string"}"#,
            r#"{"list":["zero","one",2]}"#,
            r#"{"list":["zero","<one>"]}"#,
            r#"{"list":{"1":"keyed"}}"#,
            r#"{"list":{"1":"<keyed>"}}"#,
            r#"{"a/b":"<slash>","t~":"ok"}"#,
            r#"{"t~":"<tilde>"}"#,
            r#"{"other":"<not user text>","n":[1,2.5,-3,1e400,true,false,null]}"#,
            r#""<a top-level string>""#,
            r#""plain""#,
            r#"42"#,
            r#"{"content":"x\u0000y"}"#,
            r#"{"content":"\u202eevil"}"#,
            r#"{"content":"   "}"#,
            r#"{"deep":{"deeper":{"deepest":["<x>"]}}}"#,
            r#"{"deep":{"deeper":{"deepest":"at the limit"}}}"#,
            r#"{"deep":{"deeper":{"deepest":[]}}}"#,
        ];
        let mut many = String::from("{");
        for i in 0..40 {
            many.push_str(&format!("\"k{i}\":\"v\","));
        }
        many.push_str("\"content\":\"ok\"}");
        let mut one_read = 0;
        for fields in &configs {
            for input in inputs.iter().copied().chain([many.as_str()]) {
                let passes = passes_in_one_read(input, &sanitizer, fields, 3);
                let full = if depth_exceeds(input, 3) {
                    Err(invalid("the JSON message is nested too deeply"))
                } else {
                    full(input, &sanitizer, fields)
                };
                if passes {
                    one_read += 1;
                    assert!(
                        matches!(full, Ok(None)),
                        "{input} under {fields:?}: {full:?}"
                    );
                } else if matches!(full, Ok(None)) {
                    // Left to the full path although it passes: only the key cap may do that.
                    assert_eq!(input, many, "{input} under {fields:?}");
                }
            }
        }
        assert!(
            one_read >= 20,
            "the one read decides the common cases ({one_read})"
        );
    }

    // A differential run: generated documents (escaped keys, duplicates, tricky strings
    // and numbers, objects around the 32-key cap, truncation, trailing data) under random
    // pointers, depths and sanitizer configs; the one read never passes what the full path
    // would change or refuse. `JSON_DIFFERENTIAL_N` runs more (an adversarial review ran a
    // million, plus two million mutations and an exhaustive enumeration of short token
    // sequences).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
            list[self.below(list.len())]
        }
    }

    const KEYS: &[&str] = &[
        "content",
        "\\u0063ontent",
        "cont\\u0065nt",
        "\\u0063\\u006f\\u006e\\u0074\\u0065\\u006e\\u0074",
        "a/b",
        "a\\/b",
        "a~1b",
        "t~",
        "t~0",
        "~",
        "~1",
        "",
        "0",
        "1",
        "01",
        "+1",
        "-",
        "list",
        "meta",
        "title",
        "tit\\u006ce",
        "x",
        "type",
        "\\ud800",
        "\\u0000",
        "conten",
        "contentt",
        "Content",
        "\\uFEFFcontent",
    ];
    const STRINGS: &[&str] = &[
        "",
        " ",
        "a",
        "hello",
        "<b>",
        "\\u003c",
        "\\u003cscript\\u003e",
        "&amp;",
        "&",
        "'",
        "\\\"",
        "\\u0000",
        "\\ud800",
        "\\udc00",
        "\\ud800\\udc00",
        "\\ud83d\\ude00",
        "\\u202e",
        "\\u200b",
        "\\ufeff",
        "caf\\u00e9",
        "e\\u0301",
        "\\u00a0",
        "\\ufdd0",
        "x\\ty",
        "\\/",
        "\\\\",
        "\\n",
        "\\u007f",
        "\\u0085",
        "\\u2028",
        "\\u200d",
        "a<b",
        ">",
        "\\u003e",
        "\\u0026",
        "\\u0027",
        "\\u0022",
        "\\t",
        "\\r\\n",
        "<i>x</i>",
        "<p></p>",
        "&nbsp;",
        "x\u{a0}y",
        "é",
        "e\u{301}",
        "\u{202e}",
        "\u{200b}",
        "\u{feff}",
        "\u{7f}",
        "\u{85}",
        "<",
        "\\u0041",
        "\\uD800\\uDBFF",
        "\\u",
        "\\x41",
        "\\ud800\\u0041",
        "abcdefghij",
    ];
    const SAFE: &[&str] = &[
        "a",
        "hello",
        "\\u0041",
        "caf\\u00e9",
        "\\/",
        "\\n",
        "x y",
        "\\ud83d\\ude00",
        "\\u200d",
        "é",
    ];
    const NUMBERS: &[&str] = &[
        "0",
        "-0",
        "1",
        "1.5",
        "-3",
        "1e400",
        "-1e400",
        "1e-400",
        "18446744073709551616",
        "-9223372036854775809",
        "01",
        "1.",
        ".5",
        "+1",
        "NaN",
        "1E5",
        "0.0e0",
    ];
    const POINTERS: &[&str] = &[
        "",
        "/",
        "/content",
        "/\\u0063ontent",
        "/a~1b",
        "/a/b",
        "/t~0",
        "/t~",
        "/~",
        "/~0",
        "/~1",
        "/list/0",
        "/list/1",
        "/list/01",
        "/list/+1",
        "/list/-",
        "/0",
        "/1",
        "/01",
        "/+1",
        "/-",
        "/meta/title",
        "/content/0",
        "/content/x",
        "//",
        "/~01",
        "/list/0/content",
        "/x/x/x",
        "/list/18446744073709551616",
        "/meta",
        "/list",
        "/0/0",
        "/1/content",
        "/2",
    ];

    fn gen_value(rng: &mut Rng, out: &mut String, depth: usize) {
        let containers = if depth > 6 { 0 } else { 4 };
        match rng.below(10 + containers) {
            0 => out.push_str("null"),
            1 => out.push_str(if rng.below(2) == 0 { "true" } else { "false" }),
            2 => out.push_str(rng.pick(NUMBERS)),
            3..=9 => {
                out.push('"');
                let parts = rng.below(3) + 1;
                for _ in 0..parts {
                    if rng.0 & 0x3000 != 0 {
                        out.push_str(rng.pick(SAFE));
                    } else {
                        out.push_str(rng.pick(STRINGS));
                    }
                }
                out.push('"');
            }
            10 | 11 => {
                out.push('[');
                let n = if rng.below(20) == 0 { 40 } else { rng.below(4) };
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    gen_value(rng, out, depth + 1);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                let n = match rng.below(20) {
                    0 => 31 + rng.below(4),
                    _ => rng.below(5),
                };
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    if n > 8 && rng.below(3) != 0 {
                        out.push_str(&format!("k{i}"));
                    } else {
                        out.push_str(rng.pick(KEYS));
                    }
                    out.push_str("\":");
                    if rng.below(8) == 0 {
                        out.push(' ');
                    }
                    gen_value(rng, out, depth + 1);
                }
                out.push('}');
            }
        }
    }

    fn gen_doc(rng: &mut Rng) -> String {
        let mut out = String::new();
        match rng.below(30) {
            0 => out.push('\u{feff}'),
            1 => out.push_str(" \n\t\r"),
            _ => {}
        }
        gen_value(rng, &mut out, 0);
        match rng.below(30) {
            0 => out.push(' '),
            1 => out.push_str(" x"),
            2 => out.push('\u{0}'),
            3 => out.push_str("{}"),
            4 => out.push('\u{feff}'),
            5 => {
                let cut = rng.below(out.len() + 1);
                if out.is_char_boundary(cut) {
                    out.truncate(cut);
                }
            }
            _ => {}
        }
        out
    }

    fn configs() -> Vec<(String, Sanitizer)> {
        use super::super::text::CharPolicy;
        use crate::sanitize::SanitizeMode;
        let mut list = Vec::new();
        for mode in [
            SanitizeMode::Escape,
            SanitizeMode::Clean,
            SanitizeMode::Reject,
            SanitizeMode::Strip,
        ] {
            for variant in 0..5 {
                let mut config = SanitizeConfig::default().mode(mode);
                match variant {
                    1 => {
                        config.control = CharPolicy::Strip;
                        config.bidi = CharPolicy::Strip;
                        config.zero_width = CharPolicy::Strip;
                    }
                    2 => {
                        config.control = CharPolicy::Allow;
                        config.bidi = CharPolicy::Allow;
                        config.zero_width = CharPolicy::Allow;
                        config.allow_empty = true;
                    }
                    3 => {
                        config.normalize_nfc = true;
                        config.max_chars = Some(3);
                    }
                    4 => config.allow_empty = true,
                    _ => {}
                }
                list.push((format!("{mode:?}/{variant}"), config.build().unwrap()));
            }
        }
        list
    }

    fn show(fields: &Fields) -> String {
        match fields {
            Fields::AllStrings => "all".into(),
            Fields::Pointers(p) if p.len() > 8 => format!("{} pointers", p.len()),
            Fields::Pointers(p) => format!(
                "{:?}",
                p.iter().map(|p| p.text.as_str()).collect::<Vec<_>>()
            ),
        }
    }

    fn reference(
        text: &str,
        sanitizer: &Sanitizer,
        fields: &Fields,
        depth: usize,
    ) -> Result<Option<String>, GuardError> {
        if depth_exceeds(text, depth) {
            return Err(invalid("the JSON message is nested too deeply"));
        }
        full(text, sanitizer, fields)
    }

    #[test]
    fn generated_documents_pass_in_one_read_only_when_the_full_path_passes_them() {
        let configs = configs();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut passes = 0u64;
        let mut declines_ok = 0u64;
        let mut total = 0u64;
        let iterations: usize = std::env::var("JSON_DIFFERENTIAL_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        for _ in 0..iterations {
            let text = gen_doc(&mut rng);
            let fields = if rng.below(4) == 0 {
                Fields::AllStrings
            } else {
                let n = rng.below(4) + 1;
                Fields::Pointers((0..n).map(|_| Pointer::new(rng.pick(POINTERS))).collect())
            };
            let depth = [1usize, 2, 3, 4, 5, 32, 127, 128, 129, 200][rng.below(10)];
            let (name, sanitizer) = &configs[rng.below(configs.len())];
            total += 1;
            let one = passes_in_one_read(&text, sanitizer, &fields, depth);
            let reference = reference(&text, sanitizer, &fields, depth);
            if one {
                passes += 1;
                assert!(
                    matches!(reference, Ok(None)),
                    "DEFECT: {text:?} under {} {name} depth {depth}: {reference:?}",
                    show(&fields)
                );
            } else if matches!(reference, Ok(None)) {
                declines_ok += 1;
            }
        }
        // The one read decides most documents, and declines a passing one only for its
        // caps (over 32 keys in an object).
        assert!(passes * 4 > total, "{passes} of {total} passed in one read");
        assert!(
            declines_ok * 100 < total,
            "{declines_ok} of {total} declined though passing"
        );
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        assert!(!depth_exceeds(r#"{"a":[1,{"b":"[[[[[[["}]}"#, 3));
        assert!(depth_exceeds(r#"[[[[1]]]]"#, 3));
        assert!(!depth_exceeds(r#"["\"[[[[["]"#, 1));
    }
}
