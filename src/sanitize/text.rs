//! Byte-level scanning, character policies and escaping of user text.

use std::borrow::Cow;

use serde::Deserialize;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

use crate::error::{GuardError, GuardErrorKind};

/// One of `& < > " '`.
pub(crate) const SPECIAL: u8 = 1;
/// A C0 control other than tab, LF and CR, or DEL.
const CONTROL: u8 = 2;
/// A byte of a non-ASCII character.
pub(crate) const NON_ASCII: u8 = 4;

/// The union of the classes of all bytes of `text`: 0 means plain printable ASCII.
///
/// Branch-free, so the compiler can unroll and vectorise it: this is the fast path every
/// clean message takes.
pub(crate) fn classes(text: &str) -> u8 {
    byte_classes(text.as_bytes())
}

fn byte_classes(bytes: &[u8]) -> u8 {
    // Comparisons OR-ed into accumulators, with no early exit, so that the compiler can
    // vectorise the loop (a table lookup per byte cannot be), and as few of them as the
    // byte values allow: `&` `'` are 0x26 0x27 and `<` `>` 0x3C 0x3E, one comparison a
    // pair; tab and LF are 9 and 10, one subtraction; a non-ASCII byte has its top bit set,
    // which OR-ing the bytes keeps.
    let (mut special, mut control, mut all) = (false, false, 0u8);
    for &b in bytes {
        special |= (b == b'"') | ((b | 1) == b'\'') | ((b | 2) == b'>');
        control |= ((b < 0x20) & (b.wrapping_sub(b'\t') >= 2) & (b != b'\r')) | (b == 0x7f);
        all |= b;
    }
    (u8::from(special) * SPECIAL)
        | (u8::from(control) * CONTROL)
        | (u8::from(all >= 0x80) * NON_ASCII)
}

/// What is done to a class of unwanted characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CharPolicy {
    /// The message gets an `invalid_message` error.
    Reject,
    /// The characters are removed.
    Strip,
    /// The characters pass.
    Allow,
}

/// Which characters are refused or removed, and whether text is normalised.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CharRules {
    pub(crate) control: CharPolicy,
    pub(crate) bidi: CharPolicy,
    pub(crate) zero_width: CharPolicy,
    pub(crate) nfc: bool,
    pub(crate) max_chars: Option<usize>,
}

/// C0 (other than tab, LF, CR), DEL and C1 controls.
fn is_control(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{7f}'
}

/// Bidi embedding, override and isolate controls (the Trojan Source set).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Zero-width characters that hide text; ZWJ and ZWNJ are kept, since emoji sequences and
/// several scripts need them.
fn is_zero_width(c: char) -> bool {
    matches!(c, '\u{200B}' | '\u{2060}' | '\u{FEFF}')
}

impl CharRules {
    fn policy(&self, c: char) -> Option<(CharPolicy, &'static str)> {
        if is_control(c) {
            Some((self.control, "control characters are not allowed"))
        } else if is_bidi_control(c) {
            Some((
                self.bidi,
                "bidirectional control characters are not allowed",
            ))
        } else if is_zero_width(c) {
            Some((self.zero_width, "zero-width characters are not allowed"))
        } else {
            None
        }
    }

    /// Applies the character rules: normalisation, length in characters, then the
    /// control, bidi and zero-width policies. Returns the text unchanged (borrowed) when
    /// nothing applies.
    pub(crate) fn apply<'a>(&self, text: &'a str, classes: u8) -> Result<Cow<'a, str>, GuardError> {
        let mut text = Cow::Borrowed(text);
        if classes & NON_ASCII != 0 && self.nfc && is_nfc_quick(text.chars()) != IsNormalized::Yes {
            text = Cow::Owned(text.nfc().collect());
        }
        if let Some(max) = self.max_chars {
            // Plain ASCII has as many characters as bytes.
            let count = if classes & NON_ASCII == 0 {
                text.len()
            } else {
                text.chars().count()
            };
            if count > max {
                return Err(GuardError::new(
                    GuardErrorKind::MessageTooLarge,
                    format!("message over {max} characters"),
                ));
            }
        }
        if classes & (CONTROL | NON_ASCII) == 0 {
            return Ok(text);
        }
        let mut strip = false;
        for c in text.chars() {
            if let Some((policy, why)) = self.policy(c) {
                match policy {
                    CharPolicy::Reject => {
                        return Err(GuardError::new(GuardErrorKind::InvalidMessage, why));
                    }
                    CharPolicy::Strip => strip = true,
                    CharPolicy::Allow => {}
                }
            }
        }
        if strip {
            let kept = text
                .chars()
                .filter(|&c| !matches!(self.policy(c), Some((CharPolicy::Strip, _))))
                .collect();
            text = Cow::Owned(kept);
        }
        Ok(text)
    }
}

/// What each byte becomes when escaped, padded to 8 bytes, and how long it really is.
#[expect(
    clippy::indexing_slicing,
    reason = "const evaluation: `b` stays below 256"
)]
const ESCAPED: [([u8; 8], u8); 256] = {
    let mut table = [([0u8; 8], 1u8); 256];
    let mut b = 0;
    while b < 256 {
        table[b].0[0] = b as u8;
        b += 1;
    }
    table[b'&' as usize] = (*b"&amp;\0\0\0", 5);
    table[b'<' as usize] = (*b"&lt;\0\0\0\0", 4);
    table[b'>' as usize] = (*b"&gt;\0\0\0\0", 4);
    table[b'"' as usize] = (*b"&quot;\0\0", 6);
    table[b'\'' as usize] = (*b"&#x27;\0\0", 6);
    table
};

/// Escapes `& < > " '` as HTML entities, each exactly once; everything else is kept.
#[expect(clippy::indexing_slicing, reason = "a byte indexes a 256-entry table")]
pub(crate) fn escape(text: &str) -> String {
    let bytes = text.as_bytes();
    let total: usize = bytes
        .iter()
        .map(|&b| usize::from(ESCAPED[usize::from(b)].1))
        .sum();
    // Every byte writes a fixed 8-byte block (one store) and advances by its real length;
    // the slack at the end is cut off.
    let mut out = vec![0u8; total + 8];
    let mut at = 0;
    for &byte in bytes {
        let (block, len) = &ESCAPED[usize::from(byte)];
        if let Some(slot) = out.get_mut(at..at + 8) {
            slot.copy_from_slice(block);
        }
        at += usize::from(*len);
    }
    out.truncate(total);
    // Only ASCII bytes were replaced, by ASCII: the output is as valid UTF-8 as the input.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_value_lands_in_its_class() {
        let class = |b: u8| {
            let special = matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'');
            let control = (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f;
            (u8::from(special) * SPECIAL)
                | (u8::from(control) * CONTROL)
                | (u8::from(b >= 0x80) * NON_ASCII)
        };
        for a in 0..=u8::MAX {
            assert_eq!(byte_classes(&[a]), class(a), "byte {a:#04x}");
            for b in 0..=u8::MAX {
                // Long enough for the vectorised body, the bytes at both ends.
                let mut run = vec![b'x'; 40];
                run[0] = a;
                run[39] = b;
                assert_eq!(byte_classes(&run), class(a) | class(b), "{a:#04x} {b:#04x}");
            }
        }
    }

    const STRICT: CharRules = CharRules {
        control: CharPolicy::Reject,
        bidi: CharPolicy::Reject,
        zero_width: CharPolicy::Reject,
        nfc: false,
        max_chars: None,
    };

    fn apply(rules: CharRules, text: &str) -> Result<Cow<'_, str>, GuardError> {
        rules.apply(text, classes(text))
    }

    #[test]
    fn escapes_each_special_exactly_once() {
        assert_eq!(
            escape(r#"<script>alert('x' & "y")</script>"#),
            "&lt;script&gt;alert(&#x27;x&#x27; &amp; &quot;y&quot;)&lt;/script&gt;"
        );
        assert_eq!(escape("a<b"), "a&lt;b");
        assert_eq!(escape("&amp;"), "&amp;amp;");
        assert_eq!(escape("héllo 👋"), "héllo 👋");
        assert_eq!(escape(&"'".repeat(100)), "&#x27;".repeat(100));
        assert_eq!(escape(""), "");
    }

    #[test]
    fn plain_ascii_is_class_zero() {
        assert_eq!(classes("hello, world! 1+1=2 (ok) [yes] {no} #tag @you"), 0);
        assert_eq!(classes("tabs\tand\nnew lines\r\n"), 0);
        assert_eq!(classes("1 < 2"), SPECIAL);
        assert_eq!(classes("ça"), NON_ASCII);
        assert_eq!(classes("a\u{7}"), CONTROL);
    }

    #[test]
    fn clean_text_is_borrowed() {
        for text in [
            "hello",
            "ça va? 你好 👩\u{200D}👩\u{200D}👧",
            "שלום\u{200F} hi \u{200E}",
        ] {
            assert!(
                matches!(apply(STRICT, text).unwrap(), Cow::Borrowed(_)),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_controls_bidi_and_zero_width() {
        let cases = [
            "a\u{0}b",
            "bell\u{7}",
            "del\u{7f}",
            "c1\u{85}",
            "c1\u{9f}",
            "\u{202E}txt.exe",
            "a\u{2066}b",
            "\u{202A}",
            "zero\u{200B}width",
            "word\u{2060}joiner",
            "\u{FEFF}bom",
        ];
        for text in cases {
            assert_eq!(
                apply(STRICT, text).unwrap_err().code(),
                "invalid_message",
                "{text:?}"
            );
        }
        // Nearby characters sharing lead bytes pass; ZWJ and ZWNJ are kept.
        assert!(
            apply(
                STRICT,
                "\u{a0}\u{a9}\u{2014}\u{2026}\u{20ac}\u{200C}\u{200D}"
            )
            .is_ok()
        );
    }

    #[test]
    fn strip_removes_only_what_it_names() {
        let rules = CharRules {
            zero_width: CharPolicy::Strip,
            control: CharPolicy::Strip,
            ..STRICT
        };
        assert_eq!(
            apply(rules, "a\u{200B}b\u{7}c\u{200D}d").unwrap(),
            "abc\u{200D}d"
        );
        assert_eq!(
            apply(rules, "\u{202E}x").unwrap_err().code(),
            "invalid_message"
        );
    }

    #[test]
    fn nfc_runs_before_counting_characters() {
        let rules = CharRules {
            nfc: true,
            max_chars: Some(1),
            ..STRICT
        };
        // "e" + combining acute is two characters, one once composed.
        assert_eq!(apply(rules, "e\u{301}").unwrap(), "\u{e9}");
        let no_nfc = CharRules {
            nfc: false,
            ..rules
        };
        assert_eq!(
            apply(no_nfc, "e\u{301}").unwrap_err().code(),
            "message_too_large"
        );
    }
}
