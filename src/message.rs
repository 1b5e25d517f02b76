//! The crate's own WebSocket message type, independent of any transport.
//!
//! Layers only ever see [`Message`]; conversions to and from axum's and
//! tokio-tungstenite's message types live behind the `axum` and `tungstenite` features.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

/// Close codes used by this crate.
///
/// The 4xxx codes live in the private range (as graphql-ws does) and mirror HTTP statuses;
/// the 1xxx codes are RFC 6455's.
pub mod close_code {
    /// 1000: normal closure.
    pub const NORMAL: u16 = 1000;
    /// 1001: the server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// 1007: a text message was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// 1008: policy violation (the fallback for rejections without a more specific code).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// 1009: a message was larger than the configured maximum.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// 1011: the server hit an internal error.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// 1013: try again later (a service the server depends on is unavailable).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// 4401: unauthenticated, or the token expired.
    pub const UNAUTHENTICATED: u16 = 4401;
    /// 4403: forbidden.
    pub const FORBIDDEN: u16 = 4403;
    /// 4408: no in-band authentication arrived in time.
    pub const AUTH_TIMEOUT: u16 = 4408;
    /// 4429: rate limited.
    pub const RATE_LIMITED: u16 = 4429;
}

/// UTF-8 text in shared [`Bytes`] (a `bytestring::ByteString`): cheap to clone, always
/// valid UTF-8, checked once when it is made (reading it as a `&str` costs nothing).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utf8Bytes(ByteString);

impl Utf8Bytes {
    /// Text from a static string, without copying.
    #[must_use]
    pub const fn from_static(text: &'static str) -> Self {
        Self(ByteString::from_static(text))
    }

    /// The text as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The underlying bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// Consumes the text and returns its bytes.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }
}

impl Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Self(ByteString::from(text))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Self(ByteString::from(text))
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = std::str::Utf8Error;

    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        ByteString::try_from(bytes).map(Self)
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Self {
        text.0.into_bytes()
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The longest close reason RFC 6455 allows (125 bytes of payload minus the 2-byte code).
pub const MAX_CLOSE_REASON: usize = 123;

/// A close frame: a code and a short reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code (see [`close_code`]).
    pub code: u16,
    /// The reason, at most [`MAX_CLOSE_REASON`] bytes.
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// A close frame with `code` and `reason`, the reason cut at a character boundary so
    /// that it fits in [`MAX_CLOSE_REASON`] bytes.
    #[must_use]
    pub fn new(code: u16, reason: impl Into<Utf8Bytes>) -> Self {
        let reason = reason.into();
        let reason = if reason.len() <= MAX_CLOSE_REASON {
            reason
        } else {
            let mut end = MAX_CLOSE_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            Utf8Bytes(reason.0.slice_ref(reason.get(..end).unwrap_or_default()))
        };
        Self { code, reason }
    }
}

/// A WebSocket message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the transport answers it.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close, with an optional code and reason.
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    #[must_use]
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::Text(text.into())
    }

    /// A binary message.
    #[must_use]
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::Binary(data.into())
    }

    /// A close message with `code` and `reason`.
    #[must_use]
    pub fn close(code: u16, reason: impl Into<Utf8Bytes>) -> Self {
        Self::Close(Some(CloseFrame::new(code, reason)))
    }

    /// The text of a text message.
    #[must_use]
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text.as_str()),
            _ => None,
        }
    }

    /// The payload length in bytes (0 for a close).
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Binary(data) | Self::Ping(data) | Self::Pong(data) => data.len(),
            Self::Close(_) => 0,
        }
    }

    /// Whether the payload is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a data message (text or binary), as opposed to a control frame.
    #[must_use]
    pub fn is_data(&self) -> bool {
        matches!(self, Self::Text(_) | Self::Binary(_))
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Self::text(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let frame = CloseFrame::new(close_code::POLICY_VIOLATION, reason);
        assert!(frame.reason.len() <= MAX_CLOSE_REASON);
        assert_eq!(frame.reason.len(), 122);
        assert!(frame.reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn utf8_bytes_rejects_invalid_utf8() {
        assert!(Utf8Bytes::try_from(Bytes::from_static(b"\xff")).is_err());
        assert_eq!(
            Utf8Bytes::try_from(Bytes::from_static(b"ok")).unwrap(),
            "ok"
        );
    }
}
