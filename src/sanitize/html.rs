//! Markup: the pre-pass that keeps plain text readable, and ammonia for the rest.
//!
//! ammonia parses its input as HTML, so text that merely contains `<` or `&` is mangled
//! (`a<b` loses `b`, `&currency=` becomes `¤cy=`). The pre-pass escapes every `<` that
//! does not open a complete tag ammonia is meant to see, and every `&` that does not start
//! a complete character reference, and refuses input nested or attributed past the caps
//! (html5ever is quadratic on deep nesting). It only ever escapes, so it cannot create
//! markup: safety still rests on ammonia, which parses what the pre-pass produced.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::text::{CharRules, classes};
use crate::error::{GuardError, GuardErrorKind};

/// Elements that never have content.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];

/// Elements an allowlist may not contain: script and style content is removed by ammonia
/// (and allowing them would panic it), raw-text and foreign-content elements change how
/// the rest of the input is parsed.
pub(crate) const FORBIDDEN_TAGS: &[&str] = &[
    "script",
    "style",
    "textarea",
    "title",
    "xmp",
    "iframe",
    "noembed",
    "noframes",
    "noscript",
    "plaintext",
    "template",
    "svg",
    "math",
    "object",
    "embed",
    "base",
    "meta",
    "link",
    "form",
];

/// A `&'static str` for a configured name. Names come from configuration, so the set is
/// small and bounded; ammonia's builder borrows them for as long as the layer lives.
pub(crate) fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(&known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Which tags the pre-pass hands to ammonia.
#[derive(Debug)]
pub(crate) enum Tags {
    /// Only these (clean mode); others are shown as text.
    Only(HashSet<&'static str>),
    /// Every well-formed tag (strip mode: ammonia removes them all).
    Any,
}

/// Markup handling for the `clean` and `strip` modes.
pub(crate) struct Html {
    builder: ammonia::Builder<'static>,
    tags: Tags,
    max_depth: usize,
    max_attributes: usize,
}

impl std::fmt::Debug for Html {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Html")
            .field("tags", &self.tags)
            .field("max_depth", &self.max_depth)
            .field("max_attributes", &self.max_attributes)
            .finish_non_exhaustive()
    }
}

/// What clean mode lets through (already validated).
pub(crate) struct Allowlist<'c> {
    pub(crate) tags: &'c [String],
    pub(crate) tag_attributes: &'c HashMap<String, Vec<String>>,
    pub(crate) generic_attributes: &'c [String],
    pub(crate) url_schemes: &'c [String],
    pub(crate) link_rel: Option<&'c str>,
}

impl Html {
    /// Clean mode: the allowlisted markup stays (attributes and URLs checked by ammonia).
    pub(crate) fn clean(allow: &Allowlist<'_>, max_depth: usize, max_attributes: usize) -> Self {
        let set = |names: &[String]| names.iter().map(|n| intern(n)).collect::<HashSet<_>>();
        let tags = set(allow.tags);
        let mut builder = ammonia::Builder::empty();
        builder
            .tags(tags.clone())
            .tag_attributes(
                allow
                    .tag_attributes
                    .iter()
                    .map(|(tag, attributes)| (intern(tag), set(attributes)))
                    .collect(),
            )
            .generic_attributes(set(allow.generic_attributes))
            .url_schemes(set(allow.url_schemes))
            .link_rel(allow.link_rel.map(intern))
            .clean_content_tags(["script", "style"].into_iter().collect())
            .strip_comments(true);
        Self {
            builder,
            tags: Tags::Only(tags),
            max_depth,
            max_attributes,
        }
    }

    /// Strip mode: every tag goes, text stays (escaped).
    pub(crate) fn strip(max_depth: usize, max_attributes: usize) -> Self {
        let mut builder = ammonia::Builder::empty();
        builder
            .clean_content_tags(["script", "style"].into_iter().collect())
            .strip_comments(true);
        Self {
            builder,
            tags: Tags::Any,
            max_depth,
            max_attributes,
        }
    }

    /// Cleans `text`: pre-pass, character rules on what references decoded to, ammonia,
    /// then the sentinels back to entities.
    pub(crate) fn run(&self, text: &str, rules: &CharRules) -> Result<String, GuardError> {
        if !has_tag_start(text) {
            // No tag anywhere: nothing for ammonia to judge. One linear pass writes the text
            // as ammonia would, whatever the input (html5ever is slow on runs of `<` or of
            // character references).
            let (serialized, decoded) = serialize_plain(text)?;
            return if decoded {
                rules
                    .apply(&serialized, classes(&serialized))
                    .map(Cow::into_owned)
            } else {
                Ok(serialized)
            };
        }
        let prepared = self.prepare(text)?;
        let checked = if prepared.decoded {
            rules.apply(&prepared.text, classes(&prepared.text))?
        } else {
            Cow::Borrowed(prepared.text.as_str())
        };
        if prepared.tags == 0 {
            // No markup for ammonia to judge: serialize the text as it would, in linear
            // time whatever the input (html5ever is slow on runs of `<` or references).
            return Ok(serialize_text(&checked));
        }
        let cleaned = self.builder.clean(&checked).to_string();
        if !prepared.sentinels {
            return Ok(cleaned);
        }
        Ok(restore_sentinels(&cleaned))
    }

    /// The pre-pass (see the module docs).
    pub(crate) fn prepare(&self, text: &str) -> Result<Prepared, GuardError> {
        if text.contains([LT, AMP]) {
            return Err(invalid(
                "noncharacters U+FDD0 and U+FDD1 are not allowed".to_owned(),
            ));
        }
        let bytes = text.as_bytes();
        let mut out = Prepared {
            // A sentinel is three bytes where `<` or `&` was one: room for the worst case
            // up front, rather than reallocating on hostile input.
            text: String::with_capacity(text.len() * 3),
            decoded: false,
            sentinels: false,
            tags: 0,
        };
        let mut open: Vec<&str> = Vec::new();
        let mut copied = 0; // bytes of `text` already in `out`
        let mut at = 0;
        // Inside a tag that ammonia will see, up to this index.
        let mut tag_end = 0;
        let mut raw_references = 0;
        while at < bytes.len() {
            match bytes[at] {
                b'&' => {
                    let reference = decode_reference(bytes, at);
                    if at < tag_end && matches!(reference, Some(('"' | '\'' | '>', _))) {
                        // Decoded, it would end an attribute value or the tag: html5ever
                        // decodes it in place instead (counted, since that path is slow).
                        raw_references += 1;
                        if raw_references > MAX_RAW_REFERENCES {
                            return Err(invalid(
                                "too many character references in tags".to_owned(),
                            ));
                        }
                        at += 1;
                        continue;
                    }
                    out.text.push_str(&text[copied..at]);
                    let (c, len) = reference.unwrap_or(('&', 1));
                    if c == LT || c == AMP {
                        return Err(invalid(
                            "noncharacters U+FDD0 and U+FDD1 are not allowed".to_owned(),
                        ));
                    }
                    out.decoded |= len > 1;
                    match c {
                        '<' => out.text.push(LT),
                        '&' => out.text.push(AMP),
                        c => out.text.push(c),
                    }
                    out.sentinels |= matches!(c, '<' | '&');
                    at += len;
                    copied = at;
                }
                b'<' if at >= tag_end => match self.tag_at(text, at)? {
                    Some(tag) => {
                        self.track(&mut open, &tag)?;
                        out.tags += 1;
                        tag_end = tag.end;
                        at += 1;
                    }
                    None => {
                        out.text.push_str(&text[copied..at]);
                        out.text.push(LT);
                        out.sentinels = true;
                        at += 1;
                        copied = at;
                    }
                },
                _ => at += 1,
            }
        }
        out.text.push_str(&text[copied..]);
        Ok(out)
    }

    /// Keeps the pre-pass's idea of the open elements, to cap nesting.
    fn track<'a>(&self, open: &mut Vec<&'a str>, tag: &Tag<'a>) -> Result<(), GuardError> {
        if tag.attributes > self.max_attributes {
            return Err(invalid(format!(
                "a tag has more than {} attributes",
                self.max_attributes
            )));
        }
        if tag.closing {
            if let Some(depth) = open
                .iter()
                .rposition(|name| name.eq_ignore_ascii_case(tag.name))
            {
                open.truncate(depth);
            }
        } else if !tag.self_closing && !VOID.iter().any(|v| v.eq_ignore_ascii_case(tag.name)) {
            open.push(tag.name);
            if open.len() > self.max_depth {
                return Err(invalid(format!(
                    "markup nested deeper than {}",
                    self.max_depth
                )));
            }
        }
        Ok(())
    }

    /// The complete tag starting at `at` (a `<`), if ammonia should see it.
    fn tag_at<'a>(&self, text: &'a str, at: usize) -> Result<Option<Tag<'a>>, GuardError> {
        let Some(tag) = parse_tag(text, at) else {
            return Ok(None);
        };
        let wanted = match &self.tags {
            Tags::Any => true,
            Tags::Only(set) => set.iter().any(|t| t.eq_ignore_ascii_case(tag.name)),
        };
        Ok(wanted.then_some(tag))
    }
}

fn invalid(message: String) -> GuardError {
    GuardError::new(GuardErrorKind::InvalidMessage, message)
}

/// A tag found by the pre-pass.
#[derive(Debug, PartialEq, Eq)]
struct Tag<'a> {
    name: &'a str,
    closing: bool,
    self_closing: bool,
    attributes: usize,
    /// Index just past the closing `>`.
    end: usize,
}

/// Parses `<name …>` or `</name …>` at `at`, the way an HTML tokenizer would: attribute
/// values may be quoted, and a quote only opens a value after `=`. `None` when `<` does not
/// start a tag or the tag is never closed.
fn parse_tag(text: &str, at: usize) -> Option<Tag<'_>> {
    let bytes = text.as_bytes();
    let mut i = at + 1;
    let closing = bytes.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    if !bytes.get(i)?.is_ascii_alphabetic() {
        return None;
    }
    let name_start = i;
    while i < bytes.len()
        && !matches!(
            bytes[i],
            b'\t' | b'\n' | b'\x0c' | b'\r' | b' ' | b'/' | b'>'
        )
    {
        i += 1;
    }
    let name = &text[name_start..i];
    if !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        BeforeAttribute,
        Name,
        AfterName,
        BeforeValue,
        Unquoted,
    }
    let mut state = State::BeforeAttribute;
    let mut attributes = 0;
    let mut last = 0u8;
    while i < bytes.len() {
        let b = bytes[i];
        let space = matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ');
        if b == b'>' {
            return Some(Tag {
                name,
                closing,
                self_closing: last == b'/',
                attributes,
                end: i + 1,
            });
        }
        state = match state {
            State::BeforeAttribute | State::AfterName if space => state,
            State::BeforeAttribute | State::AfterName | State::Name if b == b'/' => {
                State::BeforeAttribute
            }
            State::AfterName | State::Name if b == b'=' => State::BeforeValue,
            State::BeforeAttribute | State::AfterName if is_name_start(b) => {
                attributes += 1;
                State::Name
            }
            State::Name if is_name_char(b) => State::Name,
            State::Name if space => State::AfterName,
            State::BeforeValue if space => State::BeforeValue,
            State::BeforeValue if b == b'"' || b == b'\'' => {
                let close = text[i + 1..].find(b as char)?;
                i += close + 1;
                State::BeforeAttribute
            }
            State::BeforeValue | State::Unquoted if !space => State::Unquoted,
            State::Unquoted => State::BeforeAttribute,
            // Anything else does not look like an attribute: this is text, not a tag.
            _ => return None,
        };
        last = b;
        i += 1;
    }
    None
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || matches!(b, b'_' | b':')
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.')
}

/// The sentinel standing for a `<` that is text: a noncharacter, so no real text holds it,
/// and html5ever passes it through untouched (character references are ~100x slower).
const LT: char = '\u{FDD0}';
/// The sentinel standing for a `&` that is text.
const AMP: char = '\u{FDD1}';

/// Character references left for html5ever to decode inside tags, at most.
const MAX_RAW_REFERENCES: usize = 256;

/// The pre-pass's output.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) text: String,
    /// A character reference was decoded: the character rules must see the result.
    pub(crate) decoded: bool,
    /// Sentinels are in the text and must become entities again.
    pub(crate) sentinels: bool,
    /// How many tags were left for ammonia.
    pub(crate) tags: usize,
}

/// Whether a `<` is followed by a letter or by `/` and a letter anywhere: the only way a
/// tag can start.
fn has_tag_start(text: &str) -> bool {
    let bytes = text.as_bytes();
    memchr_iter(b'<', bytes).any(|at| match bytes.get(at + 1) {
        Some(b) if b.is_ascii_alphabetic() => true,
        Some(b'/') => bytes.get(at + 2).is_some_and(u8::is_ascii_alphabetic),
        _ => false,
    })
}

fn memchr_iter(needle: u8, haystack: &[u8]) -> impl Iterator<Item = usize> + '_ {
    haystack
        .iter()
        .enumerate()
        .filter_map(move |(at, &b)| (b == needle).then_some(at))
}

/// Text with no tag in it, written in one pass as ammonia would write it: references
/// decoded (numeric and the basic named ones; others shown as typed), then `&`, `<`, `>`
/// and U+00A0 escaped, CR LF and CR as LF, NUL dropped. Also says whether a reference was
/// decoded (the character rules must then see the result).
fn serialize_plain(text: &str) -> Result<(String, bool), GuardError> {
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len() * 2);
    let mut decoded = false;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let next = bytes.get(at + 1).copied();
        at += 1;
        match byte {
            b'&' => match decode_reference(bytes, at - 1) {
                None => out.extend_from_slice(b"&amp;"),
                Some((c, len)) => {
                    decoded = true;
                    at += len - 1;
                    match c {
                        '&' => out.extend_from_slice(b"&amp;"),
                        '<' => out.extend_from_slice(b"&lt;"),
                        '>' => out.extend_from_slice(b"&gt;"),
                        '\u{a0}' => out.extend_from_slice(b"&nbsp;"),
                        '\0' => {}
                        LT | AMP => return Err(noncharacter()),
                        c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
            },
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            0 => {}
            b'\r' => {
                out.push(b'\n');
                if next == Some(b'\n') {
                    at += 1;
                }
            }
            0xC2 if next == Some(0xA0) => {
                out.extend_from_slice(b"&nbsp;");
                at += 1;
            }
            // U+FDD0 and U+FDD1 (EF B7 90/91) stand for `<` and `&` on the other path.
            0xEF if next == Some(0xB7) && matches!(bytes.get(at + 1), Some(0x90 | 0x91)) => {
                return Err(noncharacter());
            }
            _ => out.push(byte),
        }
    }
    // Whole characters were copied or replaced by ASCII: still valid UTF-8.
    let out = String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Ok((out, decoded))
}

fn noncharacter() -> GuardError {
    invalid("noncharacters U+FDD0 and U+FDD1 are not allowed".to_owned())
}

/// Writes text as html5ever's serializer writes a text node (`&`, `<`, `>` and U+00A0
/// escaped, CR LF and CR as LF, NUL dropped), with the sentinels as `&lt;` and `&amp;`.
fn serialize_text(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len() * 2);
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let next = bytes.get(at + 1).copied();
        match byte {
            b'<' => out.extend_from_slice(b"&lt;"),
            b'&' => out.extend_from_slice(b"&amp;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            0 => {}
            b'\r' => {
                out.push(b'\n');
                if next == Some(b'\n') {
                    at += 1;
                }
            }
            0xC2 if next == Some(0xA0) => {
                out.extend_from_slice(b"&nbsp;");
                at += 1;
            }
            // The sentinels U+FDD0 and U+FDD1 are EF B7 90 and EF B7 91.
            0xEF if next == Some(0xB7) && matches!(bytes.get(at + 2), Some(0x90 | 0x91)) => {
                let lt = bytes.get(at + 2) == Some(&0x90);
                out.extend_from_slice(if lt { b"&lt;" } else { b"&amp;" });
                at += 2;
            }
            _ => out.push(byte),
        }
        at += 1;
    }
    // Whole characters were copied or replaced by ASCII: still valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Replaces the sentinels in ammonia's output with `&lt;` and `&amp;`.
fn restore_sentinels(html: &str) -> String {
    let mut out = String::with_capacity(html.len() + 16);
    for c in html.chars() {
        match c {
            LT => out.push_str("&lt;"),
            AMP => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

/// Decodes a complete character reference at `at`: numeric (`&#60;`, `&#x3c;`) or one of
/// `&amp; &lt; &gt; &quot; &apos; &nbsp;`. Any other `&` is text.
fn decode_reference(bytes: &[u8], at: usize) -> Option<(char, usize)> {
    if !bytes
        .get(at + 1)
        .is_some_and(|b| *b == b'#' || b.is_ascii_alphabetic())
    {
        return None;
    }
    let rest = &bytes[at + 1..bytes.len().min(at + 12)];
    let end = rest.iter().position(|&b| b == b';')?;
    let body = &rest[..end];
    let len = end + 2;
    let c = match body {
        b"amp" => '&',
        b"lt" => '<',
        b"gt" => '>',
        b"quot" => '"',
        b"apos" => '\'',
        b"nbsp" => '\u{a0}',
        [b'#', b'x' | b'X', hex @ ..]
            if !hex.is_empty() && hex.iter().all(u8::is_ascii_hexdigit) =>
        {
            numeric(std::str::from_utf8(hex).ok()?, 16)
        }
        [b'#', digits @ ..] if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            numeric(std::str::from_utf8(digits).ok()?, 10)
        }
        _ => return None,
    };
    Some((c, len))
}

/// A numeric reference's character; what HTML maps to U+FFFD (0, surrogates, beyond
/// Unicode) becomes U+FFFD.
fn numeric(digits: &str, radix: u32) -> char {
    u32::from_str_radix(digits, radix)
        .ok()
        .filter(|&n| n != 0)
        .and_then(char::from_u32)
        .unwrap_or('\u{FFFD}')
}

/// Whether `text` contains anything an HTML parser would treat as markup: a `<` followed
/// by a letter, `/`, `!` or `?` (terminated or not).
pub(crate) fn has_markup(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(at, &b)| {
        b == b'<'
            && bytes.get(at + 1).is_some_and(|next| {
                next.is_ascii_alphabetic() || matches!(next, b'/' | b'!' | b'?')
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: CharRules = CharRules {
        control: super::super::text::CharPolicy::Reject,
        bidi: super::super::text::CharPolicy::Reject,
        zero_width: super::super::text::CharPolicy::Reject,
        nfc: false,
        max_chars: None,
    };

    impl Html {
        fn run_default(&self, text: &str) -> Result<String, GuardError> {
            self.run(text, &RULES)
        }
    }

    fn chat_allowlist() -> Html {
        let tags: Vec<String> = ["a", "b", "i", "em", "strong", "code", "br", "p"]
            .map(String::from)
            .to_vec();
        let mut tag_attributes = HashMap::new();
        tag_attributes.insert("a".to_owned(), vec!["href".to_owned(), "title".to_owned()]);
        Html::clean(
            &Allowlist {
                tags: &tags,
                tag_attributes: &tag_attributes,
                generic_attributes: &[],
                url_schemes: &["http".to_owned(), "https".to_owned()],
                link_rel: Some("noopener noreferrer"),
            },
            8,
            4,
        )
    }

    #[test]
    fn plain_text_with_angle_brackets_stays_readable() {
        let html = chat_allowlist();
        let cases = [
            ("1 < 2", "1 &lt; 2"),
            ("a<b", "a&lt;b"),
            ("<3", "&lt;3"),
            ("</3 love", "&lt;/3 love"),
            ("<<title>>", "&lt;&lt;title&gt;&gt;"),
            ("price&currency=EUR", "price&amp;currency=EUR"),
            ("Tom & Jerry", "Tom &amp; Jerry"),
            ("if (a<b && c>d) {}", "if (a&lt;b &amp;&amp; c&gt;d) {}"),
        ];
        for (input, expected) in cases {
            assert_eq!(html.run_default(input).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn allowlisted_markup_stays_and_the_rest_is_shown_as_text() {
        let html = chat_allowlist();
        assert_eq!(
            html.run_default("<b>bold</b> and <i>it</i>").unwrap(),
            "<b>bold</b> and <i>it</i>"
        );
        assert_eq!(
            html.run_default(r#"<a href="https://x.test/?a=1&currency=2">x</a>"#)
                .unwrap(),
            r#"<a href="https://x.test/?a=1&amp;currency=2" rel="noopener noreferrer">x</a>"#
        );
        assert_eq!(
            html.run_default(r#"<a href="javascript:alert(1)">x</a>"#)
                .unwrap(),
            r#"<a rel="noopener noreferrer">x</a>"#
        );
        assert_eq!(
            html.run_default("<script>alert(1)</script>").unwrap(),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(
            html.run_default("<b onclick=alert(1)>x</b>").unwrap(),
            "<b>x</b>"
        );
    }

    #[test]
    fn caps_refuse_deep_nesting_and_attribute_floods() {
        let html = chat_allowlist();
        assert!(html.run_default(&"<b>".repeat(8)).is_ok());
        assert_eq!(
            html.run_default(&"<b>".repeat(9)).unwrap_err().code(),
            "invalid_message"
        );
        // Unmatched end tags do not pop: the parser would keep nesting.
        assert!(html.run_default(&"<b></i>".repeat(9)).is_err());
        assert!(html.run_default(&"<b></b>".repeat(100)).is_ok());
        assert!(html.run_default("<b a b c d>x</b>").is_ok());
        assert!(html.run_default("<b a b c d e>x</b>").is_err());
    }

    #[test]
    fn text_without_tags_skips_ammonia_with_the_same_result() {
        let html = chat_allowlist();
        for text in [
            "a < b & c > d \u{a0} x\r\ny\rz",
            "&lt;&amp;&gt;",
            "<<<&&&",
            "x",
        ] {
            let prepared = html.prepare(text).unwrap();
            assert_eq!(prepared.tags, 0);
            let via_ammonia = restore_sentinels(&html.builder.clean(&prepared.text).to_string());
            assert_eq!(html.run_default(text).unwrap(), via_ammonia, "{text:?}");
        }
    }

    #[test]
    fn tags_parse_like_a_tokenizer() {
        let tag = parse_tag(r#"<a title="x > y" href='z'>"#, 0).unwrap();
        assert_eq!((tag.name, tag.attributes, tag.end), ("a", 2, 26));
        assert!(parse_tag("<a title=\"open", 0).is_none());
        assert!(parse_tag("< b>", 0).is_none());
        assert!(parse_tag("<br/>", 0).unwrap().self_closing);
        assert!(
            parse_tag("<a x'y>", 0).is_none(),
            "not an attribute name: text"
        );
        assert!(parse_tag("<b && c>", 0).is_none());
        let tag = parse_tag("<a href=x title = \"t\" hidden data-x>", 0).unwrap();
        assert_eq!(tag.attributes, 4);
    }

    #[test]
    fn character_references() {
        let cases = [
            ("&amp;", '&'),
            ("&lt;", '<'),
            ("&#60;", '<'),
            ("&#x3c;", '<'),
            ("&#X3C;", '<'),
            ("&nbsp;", '\u{a0}'),
            ("&#0;", '\u{FFFD}'),
            ("&#xD800;", '\u{FFFD}'),
            ("&#x110000;", '\u{FFFD}'),
        ];
        for (input, c) in cases {
            assert_eq!(
                decode_reference(input.as_bytes(), 0),
                Some((c, input.len())),
                "{input}"
            );
        }
        for no in [
            "&",
            "& ",
            "&amp",
            "&#;",
            "&#x;",
            "&currency=",
            "&#12a;",
            "&copy;",
        ] {
            assert_eq!(decode_reference(no.as_bytes(), 0), None, "{no}");
        }
    }

    #[test]
    fn references_decode_before_the_character_rules() {
        let html = chat_allowlist();
        assert_eq!(
            html.run_default("&#x202E;txt").unwrap_err().code(),
            "invalid_message"
        );
        assert_eq!(
            html.run_default("&#xFDD0;").unwrap_err().code(),
            "invalid_message"
        );
        assert_eq!(
            html.run_default("\u{FDD1}").unwrap_err().code(),
            "invalid_message"
        );
        assert_eq!(
            html.run_default("&lt;b&gt; &#38; &copy;").unwrap(),
            "&lt;b&gt; &amp; &amp;copy;"
        );
        assert_eq!(
            html.run_default(r#"<a title="say &quot;hi&quot;" href="https://x.test/">x</a>"#)
                .unwrap(),
            r#"<a title="say &quot;hi&quot;" href="https://x.test/" rel="noopener noreferrer">x</a>"#
        );
    }

    #[test]
    fn markup_detection_for_reject_mode() {
        for yes in ["<b>", "a<b", "</x", "<!-- c -->", "<?xml"] {
            assert!(has_markup(yes), "{yes}");
        }
        for no in ["1 < 2", "<3", "a <= b", "->", "<"] {
            assert!(!has_markup(no), "{no}");
        }
    }
}
