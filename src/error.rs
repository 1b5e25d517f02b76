//! Rejections: [`GuardError`], its stable codes, and its mapping to error frames and closes.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::message::{CloseFrame, Message, close_code};

/// The boxed error type of the message face, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a guard rejected a message or a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GuardErrorKind {
    /// No valid credential: code `unauthenticated`, close 4401.
    Unauthenticated,
    /// The credential expired: code `token_expired`, close 4401.
    TokenExpired,
    /// Authenticated but not allowed: code `forbidden`, close 4403.
    Forbidden,
    /// No in-band authentication in time: code `auth_timeout`, close 4408.
    AuthTimeout,
    /// Too many messages: code `rate_limited`, close 4429.
    RateLimited,
    /// The message's content is not acceptable: code `invalid_message`, close 1008.
    InvalidMessage,
    /// The message is over the size limit: code `message_too_large`, close 1009.
    MessageTooLarge,
    /// Nothing is left of the message after sanitizing: code `empty_message`, close 1008.
    EmptyMessage,
    /// A service the check depends on (the Redis store of per-user limits) cannot answer
    /// and the policy is to refuse: code `unavailable`, close 1013. Not the client's fault:
    /// it never counts as a violation.
    Unavailable,
}

impl GuardErrorKind {
    /// The stable string code used in error frames.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::TokenExpired => "token_expired",
            Self::Forbidden => "forbidden",
            Self::AuthTimeout => "auth_timeout",
            Self::RateLimited => "rate_limited",
            Self::InvalidMessage => "invalid_message",
            Self::MessageTooLarge => "message_too_large",
            Self::EmptyMessage => "empty_message",
            Self::Unavailable => "unavailable",
        }
    }

    /// The close code used when the rejection closes the connection.
    #[must_use]
    pub fn close_code(self) -> u16 {
        match self {
            Self::Unauthenticated | Self::TokenExpired => close_code::UNAUTHENTICATED,
            Self::Forbidden => close_code::FORBIDDEN,
            Self::AuthTimeout => close_code::AUTH_TIMEOUT,
            Self::RateLimited => close_code::RATE_LIMITED,
            Self::InvalidMessage | Self::EmptyMessage => close_code::POLICY_VIOLATION,
            Self::MessageTooLarge => close_code::MESSAGE_TOO_BIG,
            Self::Unavailable => close_code::TRY_AGAIN_LATER,
        }
    }
}

/// What the connection driver does with a rejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Disposition {
    /// Send one JSON error frame; the connection stays open.
    ErrorFrame,
    /// Close the connection with the kind's close code.
    Close,
}

/// A typed rejection from a guard layer.
///
/// The driver turns it into an error frame (`{"type":"error","code":…}`) or a close,
/// according to its [`Disposition`].
#[derive(Clone, Debug)]
pub struct GuardError {
    kind: GuardErrorKind,
    message: Cow<'static, str>,
    retry_after: Option<Duration>,
    disposition: Disposition,
}

impl GuardError {
    /// A rejection of `kind` with a human-readable `message`, answered with an error frame.
    #[must_use]
    pub fn new(kind: GuardErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
            disposition: Disposition::ErrorFrame,
        }
    }

    /// Sets how long the client should wait before trying again.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Makes this rejection close the connection instead of sending an error frame.
    #[must_use]
    pub fn closing(mut self) -> Self {
        self.disposition = Disposition::Close;
        self
    }

    /// The kind.
    #[must_use]
    pub fn kind(&self) -> GuardErrorKind {
        self.kind
    }

    /// The stable string code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The human-readable message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// How long the client should wait, when known.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// What the driver does with it.
    #[must_use]
    pub fn disposition(&self) -> Disposition {
        self.disposition
    }

    /// The JSON error frame: `{"type":"error","code":…,"message":…,"retry_after_ms":…}`.
    #[must_use]
    pub fn to_error_frame(&self) -> Message {
        #[derive(serde::Serialize)]
        struct ErrorFrame<'a> {
            r#type: &'static str,
            code: &'static str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            retry_after_ms: Option<u64>,
        }
        let frame = ErrorFrame {
            r#type: "error",
            code: self.code(),
            message: &self.message,
            retry_after_ms: self.retry_after.map(retry_after_millis),
        };
        Message::text(serde_json::to_string(&frame).unwrap_or_default())
    }

    /// The close frame: the kind's close code and the message as reason (cut to fit).
    #[must_use]
    pub fn to_close_frame(&self) -> CloseFrame {
        CloseFrame::new(self.kind.close_code(), self.message.as_ref())
    }

    /// What the driver sends: an error frame, or a close.
    #[must_use]
    pub fn to_message(&self) -> Message {
        match self.disposition {
            Disposition::ErrorFrame => self.to_error_frame(),
            Disposition::Close => Message::Close(Some(self.to_close_frame())),
        }
    }
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message)
    }
}

impl std::error::Error for GuardError {}

/// A trailers-only gRPC response: HTTP 200 with `grpc-status` and a percent-encoded
/// `grpc-message`, which is how a gRPC server answers before any message.
pub(crate) fn grpc_status<B: Default>(code: u8, message: &str) -> http::Response<B> {
    let mut response = http::Response::new(B::default());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", http::HeaderValue::from(u16::from(code)));
    if let Ok(message) = http::HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", message);
    }
    response
}

/// A wait in whole milliseconds, rounded up: a client that waits exactly this long must
/// succeed.
pub(crate) fn retry_after_millis(retry_after: Duration) -> u64 {
    u64::try_from(retry_after.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The retry hint of a gRPC refusal, in milliseconds rounded up: `retry-after-ms` (read by
/// applications) and `grpc-retry-pushback-ms` (read by gRPC clients' retry policies, gRFC A6).
pub(crate) fn insert_grpc_retry_after(headers: &mut http::HeaderMap, retry_after: Duration) {
    let millis = http::HeaderValue::from(retry_after_millis(retry_after));
    headers.insert("retry-after-ms", millis.clone());
    headers.insert("grpc-retry-pushback-ms", millis);
}

/// Whether a request is gRPC (`content-type: application/grpc…`).
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// Percent-encodes everything outside printable ASCII and `%`, as gRPC wants its messages.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frame_has_the_documented_shape() {
        let error = GuardError::new(GuardErrorKind::RateLimited, "slow down")
            .with_retry_after(Duration::from_micros(1_199_001));
        let Message::Text(text) = error.to_error_frame() else {
            panic!("not text")
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type":"error","code":"rate_limited","message":"slow down","retry_after_ms":1200})
        );
    }

    #[test]
    fn every_kind_has_its_documented_close_code() {
        use GuardErrorKind::*;
        let expected = [
            (Unauthenticated, 4401),
            (TokenExpired, 4401),
            (Forbidden, 4403),
            (AuthTimeout, 4408),
            (RateLimited, 4429),
            (InvalidMessage, 1008),
            (MessageTooLarge, 1009),
            (EmptyMessage, 1008),
            (Unavailable, 1013),
        ];
        for (kind, code) in expected {
            let close = GuardError::new(kind, "x").closing().to_message();
            assert_eq!(close, Message::close(code, "x"), "{kind:?}");
        }
    }
}
