//! Byte-level scanning and escaping of user text.

use crate::error::{GuardError, GuardErrorKind};

/// What a byte means to the scanner.
const PLAIN: u8 = 0;
/// One of `& < > " '`: the text needs escaping.
const SPECIAL: u8 = 1;
/// A C0 control other than tab, LF and CR, or DEL.
const CONTROL: u8 = 2;
/// The lead byte of a character that may be forbidden (C1 controls, bidi controls).
const SUSPECT: u8 = 3;

const CLASSES: [u8; 256] = {
    let mut table = [PLAIN; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = CONTROL;
        b += 1;
    }
    table[b'\t' as usize] = PLAIN;
    table[b'\n' as usize] = PLAIN;
    table[b'\r' as usize] = PLAIN;
    table[0x7f] = CONTROL;
    table[b'&' as usize] = SPECIAL;
    table[b'<' as usize] = SPECIAL;
    table[b'>' as usize] = SPECIAL;
    table[b'"' as usize] = SPECIAL;
    table[b'\'' as usize] = SPECIAL;
    table[0xc2] = SUSPECT; // U+0080..U+00BF, among them the C1 controls
    table[0xe2] = SUSPECT; // U+2000..U+2FFF, among them the bidi controls
    table
};

/// Which characters are refused.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checks {
    pub(crate) control: bool,
    pub(crate) bidi: bool,
}

/// Bidi embedding, override and isolate controls (the Trojan Source set).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn is_c1_control(c: char) -> bool {
    matches!(c, '\u{80}'..='\u{9F}')
}

/// Scans `text` once: refuses forbidden characters, and says whether it needs escaping.
pub(crate) fn inspect(text: &str, checks: Checks) -> Result<bool, GuardError> {
    let bytes = text.as_bytes();
    let mut special = false;
    for (at, &byte) in bytes.iter().enumerate() {
        match CLASSES[usize::from(byte)] {
            PLAIN => {}
            SPECIAL => special = true,
            CONTROL => {
                if checks.control {
                    return Err(invalid("control characters are not allowed"));
                }
            }
            _ => {
                // `at` is a lead byte, so a char boundary.
                let c = text.get(at..).and_then(|rest| rest.chars().next());
                if let Some(c) = c {
                    if checks.control && is_c1_control(c) {
                        return Err(invalid("control characters are not allowed"));
                    }
                    if checks.bidi && is_bidi_control(c) {
                        return Err(invalid("bidirectional control characters are not allowed"));
                    }
                }
            }
        }
    }
    Ok(special)
}

fn invalid(why: &'static str) -> GuardError {
    GuardError::new(GuardErrorKind::InvalidMessage, why)
}

/// Escapes `& < > " '` as HTML entities, each exactly once; everything else is kept.
pub(crate) fn escape_into(text: &str, out: &mut String) {
    out.reserve(text.len() + text.len() / 8);
    let mut start = 0;
    for (at, byte) in text.bytes().enumerate() {
        let entity = match byte {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#x27;",
            _ => continue,
        };
        out.push_str(&text[start..at]);
        out.push_str(entity);
        start = at + 1;
    }
    out.push_str(&text[start..]);
}

/// [`escape_into`] a new string.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::new();
    escape_into(text, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Checks = Checks {
        control: true,
        bidi: true,
    };

    #[test]
    fn escapes_each_special_exactly_once() {
        assert_eq!(
            escape(r#"<script>alert('x' & "y")</script>"#),
            "&lt;script&gt;alert(&#x27;x&#x27; &amp; &quot;y&quot;)&lt;/script&gt;"
        );
        assert_eq!(escape("a<b"), "a&lt;b");
        assert_eq!(escape("&amp;"), "&amp;amp;");
        assert_eq!(escape("héllo 👋"), "héllo 👋");
    }

    #[test]
    fn clean_text_needs_nothing() {
        assert!(!inspect("hello, world — ça va? 你好 👩‍👩‍👧", ALL).unwrap());
        assert!(!inspect("tabs\tand\nnew lines\r\n", ALL).unwrap());
        assert!(inspect("1 < 2", ALL).unwrap());
    }

    #[test]
    fn refuses_controls_and_bidi_overrides() {
        for text in ["a\u{0}b", "bell\u{7}", "del\u{7f}", "c1\u{85}", "c1\u{9f}"] {
            let error = inspect(text, ALL).unwrap_err();
            assert_eq!(error.code(), "invalid_message", "{text:?}");
        }
        for text in ["\u{202E}txt.exe", "a\u{2066}b", "\u{202A}"] {
            assert_eq!(
                inspect(text, ALL).unwrap_err().code(),
                "invalid_message",
                "{text:?}"
            );
        }
        // Marks are not controls: RTL text keeps them.
        assert!(inspect("שלום\u{200F} hi \u{200E}", ALL).is_ok());
        // Nearby characters sharing the lead bytes pass.
        assert!(inspect("\u{a0}\u{a9}\u{2014}\u{2026}\u{20ac}", ALL).is_ok());
    }

    #[test]
    fn checks_can_be_turned_off() {
        let none = Checks {
            control: false,
            bidi: false,
        };
        assert!(inspect("a\u{0}\u{202E}\u{85}", none).is_ok());
    }
}
