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

    /// Cleans `text`: pre-pass, then ammonia.
    pub(crate) fn run(&self, text: &str) -> Result<String, GuardError> {
        let prepared = self.prepare(text)?;
        Ok(self.builder.clean(&prepared).to_string())
    }

    /// The pre-pass (see the module docs).
    pub(crate) fn prepare<'a>(&self, text: &'a str) -> Result<Cow<'a, str>, GuardError> {
        let bytes = text.as_bytes();
        let mut out: Option<String> = None;
        let mut copied = 0; // bytes of `text` already accounted for in `out`
        let mut open: Vec<&str> = Vec::new();
        let mut at = 0;
        let escape = |out: &mut Option<String>, copied: &mut usize, at: usize, entity: &str| {
            let buffer = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
            buffer.push_str(&text[*copied..at]);
            buffer.push_str(entity);
            *copied = at + 1;
        };
        while at < bytes.len() {
            match bytes[at] {
                b'&' => {
                    if !char_reference_at(bytes, at) {
                        escape(&mut out, &mut copied, at, "&amp;");
                    }
                    at += 1;
                }
                b'<' => match self.tag_at(text, at)? {
                    Some(tag) => {
                        self.track(&mut open, &tag)?;
                        // `&` inside the tag gets the same treatment as in text.
                        at += 1;
                        while at < tag.end {
                            if bytes[at] == b'&' && !char_reference_at(bytes, at) {
                                escape(&mut out, &mut copied, at, "&amp;");
                            }
                            at += 1;
                        }
                    }
                    None => {
                        escape(&mut out, &mut copied, at, "&lt;");
                        at += 1;
                    }
                },
                _ => at += 1,
            }
        }
        Ok(match out {
            None => Cow::Borrowed(text),
            Some(mut buffer) => {
                buffer.push_str(&text[copied..]);
                Cow::Owned(buffer)
            }
        })
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

/// Whether a complete character reference (`&name;`, `&#123;`, `&#x1F600;`) starts at
/// `at`.
fn char_reference_at(bytes: &[u8], at: usize) -> bool {
    let rest = &bytes[at + 1..bytes.len().min(at + 34)];
    let (digits, body): (fn(&u8) -> bool, &[u8]) = match rest {
        [b'#', b'x' | b'X', body @ ..] => (u8::is_ascii_hexdigit, body),
        [b'#', body @ ..] => (u8::is_ascii_digit, body),
        [first, ..] if first.is_ascii_alphabetic() => (u8::is_ascii_alphanumeric, rest),
        _ => return false,
    };
    let len = body.iter().take_while(|b| digits(b)).count();
    len > 0 && body.get(len) == Some(&b';')
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

    fn chat_allowlist() -> Html {
        let tags: Vec<String> = ["a", "b", "i", "em", "strong", "code", "br", "p"]
            .map(String::from)
            .to_vec();
        let mut tag_attributes = HashMap::new();
        tag_attributes.insert("a".to_owned(), vec!["href".to_owned()]);
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
            assert_eq!(html.run(input).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn allowlisted_markup_stays_and_the_rest_is_shown_as_text() {
        let html = chat_allowlist();
        assert_eq!(
            html.run("<b>bold</b> and <i>it</i>").unwrap(),
            "<b>bold</b> and <i>it</i>"
        );
        assert_eq!(
            html.run(r#"<a href="https://x.test/?a=1&currency=2">x</a>"#)
                .unwrap(),
            r#"<a href="https://x.test/?a=1&amp;currency=2" rel="noopener noreferrer">x</a>"#
        );
        assert_eq!(
            html.run(r#"<a href="javascript:alert(1)">x</a>"#).unwrap(),
            r#"<a rel="noopener noreferrer">x</a>"#
        );
        assert_eq!(
            html.run("<script>alert(1)</script>").unwrap(),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(html.run("<b onclick=alert(1)>x</b>").unwrap(), "<b>x</b>");
    }

    #[test]
    fn caps_refuse_deep_nesting_and_attribute_floods() {
        let html = chat_allowlist();
        assert!(html.run(&"<b>".repeat(8)).is_ok());
        assert_eq!(
            html.run(&"<b>".repeat(9)).unwrap_err().code(),
            "invalid_message"
        );
        // Unmatched end tags do not pop: the parser would keep nesting.
        assert!(html.run(&"<b></i>".repeat(9)).is_err());
        assert!(html.run(&"<b></b>".repeat(100)).is_ok());
        assert!(html.run("<b a b c d>x</b>").is_ok());
        assert!(html.run("<b a b c d e>x</b>").is_err());
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
        for yes in ["&amp;", "&lt;", "&#60;", "&#x3c;", "&Aacute;"] {
            assert!(char_reference_at(yes.as_bytes(), 0), "{yes}");
        }
        for no in ["&", "& ", "&amp", "&#;", "&#x;", "&currency=", "&#12a;"] {
            assert!(!char_reference_at(no.as_bytes(), 0), "{no}");
        }
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
