use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::layer::{MessageFormat, Settings};
use super::text::{escape, inspect};
use crate::connection::{WsRequest, WsResponse};
use crate::error::{BoxError, GuardError, GuardErrorKind};
use crate::future::ResponseFuture;
use crate::message::Message;

/// The service built by [`SanitizeLayer`](super::SanitizeLayer).
#[derive(Clone, Debug)]
pub struct Sanitize<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> Sanitize<S> {
    pub(crate) fn new(inner: S, settings: Arc<Settings>) -> Self {
        Self { inner, settings }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Service<WsRequest> for Sanitize<S>
where
    S: Service<WsRequest, Response = WsResponse>,
    S::Error: Into<BoxError>,
{
    type Response = WsResponse;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: WsRequest) -> Self::Future {
        match sanitize(request.message_mut(), &self.settings) {
            Ok(()) => ResponseFuture::inner(self.inner.call(request)),
            Err(error) => ResponseFuture::rejected(error),
        }
    }
}

/// Sanitizes a message in place; a message needing no change is left as it is.
pub(crate) fn sanitize(message: &mut Message, settings: &Settings) -> Result<(), GuardError> {
    let Message::Text(text) = message else {
        return Ok(());
    };
    if text.len() > settings.max_bytes {
        return Err(GuardError::new(
            GuardErrorKind::MessageTooLarge,
            format!("message over {} bytes", settings.max_bytes),
        )
        .closing());
    }
    let replacement = match settings.format {
        MessageFormat::Text => {
            if inspect(text, settings.checks)? {
                Some(escape(text))
            } else {
                None
            }
        }
        MessageFormat::Json => sanitize_json(text, settings)?,
    };
    if let Some(replacement) = replacement {
        *message = Message::text(replacement);
    }
    Ok(())
}

fn sanitize_json(text: &str, settings: &Settings) -> Result<Option<String>, GuardError> {
    let mut document: serde_json::Value = serde_json::from_str(text).map_err(|_| {
        GuardError::new(
            GuardErrorKind::InvalidMessage,
            "the message is not valid JSON",
        )
    })?;
    let mut changed = false;
    for pointer in &settings.json_fields {
        match document.pointer_mut(pointer) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(field)) => {
                if inspect(field, settings.checks)? {
                    *field = escape(field);
                    changed = true;
                }
            }
            Some(_) => {
                return Err(GuardError::new(
                    GuardErrorKind::InvalidMessage,
                    format!("`{pointer}` must be a string"),
                ));
            }
        }
    }
    Ok(changed.then(|| document.to_string()))
}
