//! tokio-tungstenite: message conversions and error classification.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame as TsCloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self as ts, Utf8Bytes as TsUtf8Bytes};

use crate::message::{CloseFrame, Message, Utf8Bytes};
use crate::serve::{TransportError, TransportErrorKind};

pub(crate) fn text_from_tungstenite(text: TsUtf8Bytes) -> Utf8Bytes {
    let bytes = Bytes::from(text);
    // tungstenite's text is valid UTF-8 already; this re-check never fails.
    Utf8Bytes::try_from(bytes.clone())
        .unwrap_or_else(|_| Utf8Bytes::from(String::from_utf8_lossy(&bytes).into_owned()))
}

pub(crate) fn text_to_tungstenite(text: Utf8Bytes) -> TsUtf8Bytes {
    let bytes = text.into_bytes();
    TsUtf8Bytes::try_from(bytes.clone())
        .unwrap_or_else(|_| TsUtf8Bytes::from(String::from_utf8_lossy(&bytes).into_owned()))
}

impl From<ts::Message> for Message {
    fn from(message: ts::Message) -> Self {
        match message {
            ts::Message::Text(text) => Message::Text(text_from_tungstenite(text)),
            ts::Message::Binary(data) => Message::Binary(data),
            ts::Message::Ping(data) => Message::Ping(data),
            ts::Message::Pong(data) => Message::Pong(data),
            ts::Message::Close(frame) => Message::Close(frame.map(|frame| CloseFrame {
                code: u16::from(frame.code),
                reason: text_from_tungstenite(frame.reason),
            })),
            // Raw frames are only ever written, never read.
            ts::Message::Frame(frame) => Message::Binary(frame.into_payload()),
        }
    }
}

impl From<Message> for ts::Message {
    fn from(message: Message) -> Self {
        match message {
            Message::Text(text) => ts::Message::Text(text_to_tungstenite(text)),
            Message::Binary(data) => ts::Message::Binary(data),
            Message::Ping(data) => ts::Message::Ping(data),
            Message::Pong(data) => ts::Message::Pong(data),
            Message::Close(frame) => ts::Message::Close(frame.map(|frame| TsCloseFrame {
                code: CloseCode::from(frame.code),
                reason: text_to_tungstenite(frame.reason),
            })),
        }
    }
}

pub(crate) fn classify(error: &ts::Error) -> TransportErrorKind {
    match error {
        ts::Error::Capacity(CapacityError::MessageTooLong { .. }) => {
            TransportErrorKind::MessageTooLarge
        }
        ts::Error::Utf8(_) => TransportErrorKind::InvalidUtf8,
        ts::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            TransportErrorKind::Closed
        }
        ts::Error::Protocol(_) => TransportErrorKind::Protocol,
        _ => TransportErrorKind::Closed,
    }
}

impl TransportError for ts::Error {
    fn kind(&self) -> TransportErrorKind {
        classify(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let messages = [
            Message::text("hé"),
            Message::binary(vec![1, 2, 3]),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Pong(Bytes::from_static(b"q")),
            Message::close(4429, "slow down"),
            Message::Close(None),
        ];
        for message in messages {
            let there: ts::Message = message.clone().into();
            assert_eq!(Message::from(there), message);
        }
    }

    #[test]
    fn capacity_and_utf8_errors_are_classified() {
        let too_long = ts::Error::Capacity(CapacityError::MessageTooLong {
            size: 2,
            max_size: 1,
        });
        assert_eq!(too_long.kind(), TransportErrorKind::MessageTooLarge);
        assert_eq!(
            ts::Error::Utf8("bad".into()).kind(),
            TransportErrorKind::InvalidUtf8
        );
        assert_eq!(
            ts::Error::ConnectionClosed.kind(),
            TransportErrorKind::Closed
        );
    }
}
