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
            let (serialized, decoded) = serialize(text, Input::Raw)?;
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
            return serialize(&checked, Input::Prepared).map(|(serialized, _)| serialized);
        }
        let mut cleaned = self.builder.clean(&checked).to_string();
        if prepared.references_in_tags {
            // A reference in an attribute value is decoded by html5ever, not by the
            // pre-pass (`href="java&#x04;script:…"`): what it decoded to meets the character
            // policies too. Counting and normalising stay with the text as typed.
            let policies = CharRules {
                nfc: false,
                max_chars: None,
                ..*rules
            };
            if let Cow::Owned(changed) = policies.apply(&cleaned, classes(&cleaned))? {
                cleaned = changed;
            }
        }
        if !prepared.sentinels {
            return Ok(cleaned);
        }
        Ok(restore_sentinels(&cleaned))
    }

    /// The pre-pass (see the module docs).
    #[expect(
        clippy::indexing_slicing,
        reason = "every index is below `bytes.len()`, checked by the loop condition"
    )]
    pub(crate) fn prepare(&self, text: &str) -> Result<Prepared, GuardError> {
        if text.contains([LT, AMP]) {
            return Err(noncharacter());
        }
        let markup = self.markup(text)?;
        let bytes = text.as_bytes();
        let mut out = Prepared {
            // A sentinel is three bytes where `<` or `&` was one: room for the worst case
            // up front, rather than reallocating on hostile input.
            text: String::with_capacity(text.len() * 3),
            decoded: false,
            sentinels: false,
            tags: markup.len(),
            references_in_tags: false,
        };
        let mut tags = markup.iter().peekable();
        let mut copied = 0; // bytes of `text` already in `out`
        let mut at = 0;
        let mut raw_references = 0;
        while at < bytes.len() {
            // A tag ammonia is to see: copied as it is, but for bare `&`.
            if let Some(tag) = tags.next_if(|tag| tag.start == at) {
                while at < tag.end {
                    if bytes[at] == b'&' {
                        if decode_reference(bytes, at).is_some() {
                            // html5ever decodes it inside the value (a decoded `"` or tab
                            // would split the tag); counted, since that path is slow.
                            raw_references += 1;
                            out.references_in_tags = true;
                            if raw_references > MAX_RAW_REFERENCES {
                                return Err(invalid(
                                    "too many character references in tags".to_owned(),
                                ));
                            }
                        } else {
                            out.text.push_str(&text[copied..at]);
                            out.text.push(AMP);
                            out.sentinels = true;
                            copied = at + 1;
                        }
                    }
                    at += 1;
                }
                // html5ever drops a newline right after `<pre>`: keep the user's by doubling it.
                if tag.keeps_leading_newline && bytes.get(at) == Some(&b'\n') {
                    out.text.push_str(&text[copied..at]);
                    out.text.push('\n');
                    copied = at;
                }
                continue;
            }
            match bytes[at] {
                b'&' => {
                    out.text.push_str(&text[copied..at]);
                    let (c, len) = decode_reference(bytes, at).unwrap_or(('&', 1));
                    out.decoded |= len > 1;
                    match c {
                        '<' => out.text.push(LT),
                        '&' => out.text.push(AMP),
                        LT | AMP => return Err(noncharacter()),
                        c => out.text.push(c),
                    }
                    out.sentinels |= matches!(c, '<' | '&');
                    at += len;
                    copied = at;
                }
                b'<' => {
                    out.text.push_str(&text[copied..at]);
                    out.text.push(LT);
                    out.sentinels = true;
                    at += 1;
                    copied = at;
                }
                _ => at += 1,
            }
        }
        out.text.push_str(&text[copied..]);
        Ok(out)
    }

    /// The tags that are markup: allowlisted, well formed, and paired — a start tag with
    /// the end tag that closes it, properly nested (void elements stand alone). An unpaired
    /// or misnested tag is text the user typed (`a <b and c> d`, `use </p> to close`), and
    /// keeping it out of the parser's hands also keeps html5ever from re-opening formatting
    /// elements over and over (its adoption agency and reconstruction are quadratic).
    #[expect(
        clippy::indexing_slicing,
        reason = "`open` holds indices of `found`, which only grows"
    )]
    fn markup(&self, text: &str) -> Result<Vec<Markup>, GuardError> {
        let mut found: Vec<(Tag<'_>, bool)> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        for at in memchr_iter(b'<', text.as_bytes()) {
            let Some(tag) = self.tag_at(text, at) else {
                continue;
            };
            if found.last().is_some_and(|(last, _)| at < last.end) {
                continue; // inside the previous tag (a quoted `<`)
            }
            if tag.attributes > self.max_attributes {
                return Err(invalid(format!(
                    "a tag has more than {} attributes",
                    self.max_attributes
                )));
            }
            let index = found.len();
            if found.len() >= MAX_TAGS {
                return Err(invalid(format!("more than {MAX_TAGS} tags")));
            }
            let void = VOID.iter().any(|v| v.eq_ignore_ascii_case(tag.name));
            if tag.closing {
                if !void
                    && open
                        .last()
                        .is_some_and(|&top| found[top].0.name.eq_ignore_ascii_case(tag.name))
                {
                    let start = open.pop().unwrap_or(index);
                    found[start].1 = true;
                    found.push((tag, true));
                } else {
                    found.push((tag, false));
                }
            } else if void {
                found.push((tag, true));
            } else {
                open.push(index);
                if open.len() > self.max_depth {
                    return Err(invalid(format!(
                        "markup nested deeper than {}",
                        self.max_depth
                    )));
                }
                found.push((tag, false));
            }
        }
        Ok(found
            .into_iter()
            .filter(|(_, paired)| *paired)
            .map(|(tag, _)| Markup {
                start: tag.start,
                end: tag.end,
                keeps_leading_newline: !tag.closing && tag.name.eq_ignore_ascii_case("pre"),
            })
            .collect())
    }

    /// The complete tag starting at `at` (a `<`), if ammonia should see it.
    fn tag_at<'a>(&self, text: &'a str, at: usize) -> Option<Tag<'a>> {
        let tag = parse_tag(text, at)?;
        let wanted = match &self.tags {
            Tags::Any => true,
            Tags::Only(set) => set.iter().any(|t| t.eq_ignore_ascii_case(tag.name)),
        };
        wanted.then_some(tag)
    }
}

fn invalid(message: String) -> GuardError {
    GuardError::new(GuardErrorKind::InvalidMessage, message)
}

/// A tag the pre-pass hands to ammonia.
#[derive(Debug)]
struct Markup {
    start: usize,
    end: usize,
    keeps_leading_newline: bool,
}

/// Most tags in one message (a 64 KiB message of `<b></b>` pairs has about 9 000).
const MAX_TAGS: usize = 16 * 1024;

/// A tag found by the pre-pass.
#[derive(Debug, PartialEq, Eq)]
struct Tag<'a> {
    /// Index of its `<`.
    start: usize,
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
#[expect(
    clippy::indexing_slicing,
    reason = "every index is below `bytes.len()`, checked by the loop condition"
)]
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
            b'\t' | b'\n' | b'\x0c' | b'\r' | b' ' | b'/' | b'>' | b'<'
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
        if b == b'<' {
            // Outside a quoted value, a `<` means this was text: stop here, so that a run
            // of `<a` is not rescanned to its end from every `<`.
            return None;
        }
        if b == b'>' {
            return Some(Tag {
                start: at,
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
    /// A tag holds a character reference, which html5ever decodes.
    pub(crate) references_in_tags: bool,
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

/// How [`serialize`] treats `&` and the sentinels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Raw user text: references are decoded; a sentinel is refused (it cannot be typed).
    Raw,
    /// The pre-pass's output: `&` is text; the sentinels stand for `<` and `&`.
    Prepared,
}

/// Writes text as html5ever's serializer writes a text node (`&`, `<`, `>` and U+00A0
/// escaped, CR LF and CR as LF, NUL dropped), in one linear pass. For raw input it also says
/// whether a reference was decoded (the character rules must then see the result).
fn serialize(text: &str, input: Input) -> Result<(String, bool), GuardError> {
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len() * 2);
    let mut decoded = false;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let next = bytes.get(at + 1).copied();
        at += 1;
        match byte {
            b'&' => match decode_reference(bytes, at - 1).filter(|_| input == Input::Raw) {
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
            // The sentinels U+FDD0 and U+FDD1 are EF B7 90 and EF B7 91.
            0xEF if next == Some(0xB7) && matches!(bytes.get(at + 1), Some(0x90 | 0x91)) => {
                if input == Input::Raw {
                    return Err(noncharacter());
                }
                let lt = bytes.get(at + 1) == Some(&0x90);
                out.extend_from_slice(if lt { b"&lt;" } else { b"&amp;" });
                at += 2;
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
    let rest = bytes.get(at + 1..bytes.len().min(at + 12))?;
    let end = rest.iter().position(|&b| b == b';')?;
    let body = rest.get(..end)?;
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

/// A numeric reference's character, as a browser decodes it: 0, surrogates and values
/// beyond Unicode are U+FFFD, and 0x80–0x9F name the Windows-1252 characters (`&#150;` is
/// an en dash), not C1 controls.
fn numeric(digits: &str, radix: u32) -> char {
    const WINDOWS_1252: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}',
        '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}',
        '\u{178}',
    ];
    let Ok(n) = u32::from_str_radix(digits, radix) else {
        return '\u{FFFD}';
    };
    match n {
        0x80..=0x9F => WINDOWS_1252
            .get((n - 0x80) as usize)
            .copied()
            .unwrap_or('\u{FFFD}'),
        0 => '\u{FFFD}',
        n => char::from_u32(n).unwrap_or('\u{FFFD}'),
    }
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
