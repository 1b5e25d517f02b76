//! The sanitizer itself: the checks and the mode applied to one piece of user text.

use std::borrow::Cow;

use super::html::{Html, has_markup};
use super::json::{self, Fields};
use super::text::{CharRules, NON_ASCII, SPECIAL, classes, escape};
use crate::error::{GuardError, GuardErrorKind};
use crate::message::{Message, Utf8Bytes};

/// The mode, ready to run.
#[derive(Debug)]
pub(crate) enum Mode {
    Escape,
    Html(Box<Html>),
    Reject,
}

/// What is done with binary messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BinaryPolicy {
    /// Binary messages pass untouched (default).
    #[default]
    Pass,
    /// Binary messages get an `invalid_message` error.
    Reject,
    /// Binary messages must be UTF-8; they are sanitized and forwarded as text messages.
    Text,
}

/// How a message is read.
#[derive(Debug)]
pub(crate) enum Format {
    Text,
    Json { fields: Fields, max_depth: usize },
}

/// A validated sanitizer, shared by all connections.
#[derive(Debug)]
pub(crate) struct Sanitizer {
    pub(crate) mode: Mode,
    pub(crate) format: Format,
    pub(crate) max_bytes: usize,
    pub(crate) rules: CharRules,
    pub(crate) binary: BinaryPolicy,
    pub(crate) allow_empty: bool,
}

impl Sanitizer {
    /// Sanitizes one piece of user text: character rules, then the mode, then the
    /// emptiness check. `None` when the text is fine as it is.
    pub(crate) fn text(&self, text: &str) -> Result<Option<String>, GuardError> {
        let classes = classes(text);
        let checked = self.rules.apply(text, classes)?;
        let classes = match &checked {
            Cow::Borrowed(_) => classes,
            Cow::Owned(owned) => super::text::classes(owned),
        };
        let marked = classes & SPECIAL != 0;
        let result: Cow<'_, str> = match &self.mode {
            Mode::Escape if marked => Cow::Owned(escape(&checked)),
            Mode::Html(html)
                if marked || (classes & NON_ASCII != 0 && has_nbsp_or_sentinel(&checked)) =>
            {
                Cow::Owned(html.run(&checked, &self.rules)?)
            }
            Mode::Reject if has_markup(&checked) => {
                return Err(GuardError::new(
                    GuardErrorKind::InvalidMessage,
                    "markup is not allowed",
                ));
            }
            _ => checked,
        };
        let blank = !self.allow_empty
            && match self.mode {
                Mode::Html(_) => is_blank_html(&result),
                _ => result.trim().is_empty(),
            };
        if blank {
            return Err(GuardError::new(
                GuardErrorKind::EmptyMessage,
                "the message is empty",
            ));
        }
        Ok(match result {
            Cow::Borrowed(_) => None,
            Cow::Owned(owned) => Some(owned),
        })
    }

    /// Sanitizes a message in place; a message needing no change is left as it is.
    pub(crate) fn message(&self, message: &mut Message) -> Result<(), GuardError> {
        if let Message::Binary(data) = message {
            match self.binary {
                BinaryPolicy::Pass => return Ok(()),
                BinaryPolicy::Reject => {
                    return Err(GuardError::new(
                        GuardErrorKind::InvalidMessage,
                        "binary messages are not accepted",
                    ));
                }
                BinaryPolicy::Text => {
                    if data.len() > self.max_bytes {
                        return Err(self.too_large());
                    }
                    let text = Utf8Bytes::try_from(data.clone()).map_err(|_| {
                        GuardError::new(
                            GuardErrorKind::InvalidMessage,
                            "binary message is not UTF-8",
                        )
                    })?;
                    *message = Message::Text(text);
                }
            }
        }
        let Message::Text(text) = message else {
            return Ok(());
        };
        if text.len() > self.max_bytes {
            return Err(self.too_large());
        }
        let replacement = match &self.format {
            Format::Text => self.text(text)?,
            Format::Json { fields, max_depth } => json::sanitize(text, self, fields, *max_depth)?,
        };
        if let Some(replacement) = replacement {
            *message = Message::text(replacement);
        }
        Ok(())
    }

    /// Sanitizes one string field of a decoded message in place: the size in bytes, then
    /// [`Sanitizer::text`]. The format (`json`) and the binary policy do not apply: the
    /// field is the user text.
    pub(crate) fn field(&self, text: &mut String) -> Result<(), GuardError> {
        if text.len() > self.max_bytes {
            return Err(self.too_large());
        }
        if let Some(clean) = self.text(text)? {
            *text = clean;
        }
        Ok(())
    }

    fn too_large(&self) -> GuardError {
        GuardError::new(
            GuardErrorKind::MessageTooLarge,
            format!("message over {} bytes", self.max_bytes),
        )
        .closing()
    }
}

/// Text the markup path must see although it holds no `< > & " '`: U+00A0 (written as
/// `&nbsp;` by the serializer) and the noncharacters the pre-pass uses as sentinels (which
/// it refuses).
fn has_nbsp_or_sentinel(text: &str) -> bool {
    text.contains(['\u{a0}', '\u{FDD0}', '\u{FDD1}'])
}

/// Markup that renders as nothing: only tags, `&nbsp;` and whitespace.
fn is_blank_html(html: &str) -> bool {
    let mut rest = html;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return true;
        }
        if let Some(after) = rest.strip_prefix("&nbsp;") {
            rest = after;
        } else if rest.starts_with('<') {
            // Text never contains a raw `<` after sanitizing: this is a tag.
            match rest.find('>') {
                Some(end) => rest = &rest[end + 1..],
                None => return false,
            }
        } else {
            return false;
        }
    }
}
