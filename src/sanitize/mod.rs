//! Keep user text safe to show to other users.
//!
//! [`SanitizeLayer`] checks each text message before the application sees it:
//!
//! 1. size: over `max_bytes` (64 KiB) closes the connection with 1009;
//! 2. characters: C0/C1 controls (other than tab, LF, CR) and the bidi embedding, override
//!    and isolate controls (Trojan Source) get an `invalid_message` error frame;
//! 3. markup: in `escape` mode `& < > " '` become HTML entities, each exactly once, so the
//!    text renders exactly as typed and no markup survives.
//!
//! With `format = "json"` only the string fields named by JSON Pointers are user content;
//! the checks run on their decoded values (so `\u202e` in JSON is caught) and the rest of
//! the document is kept. Invalid JSON gets `invalid_message`.
//!
//! Messages the layer cannot read (protobuf over gRPC, say) get the same checks through a
//! typed hook: the application names the user-text fields of its decoded message
//! ([`SanitizeFields`]) and calls [`SanitizeLayer::sanitize`].
//!
//! # Example
//! ```
//! use tower::{Layer, ServiceExt, service_fn};
//! use tower_ws_guard::{Connection, Message, SanitizeLayer, WsRequest, WsResponse};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let echo = service_fn(|req: WsRequest| async move {
//!     Ok::<_, std::convert::Infallible>(WsResponse::message(req.into_message()))
//! });
//! let service = SanitizeLayer::new().layer(echo);
//! let request = WsRequest::new(
//!     Message::text("<script>alert(1)</script>"),
//!     Connection::new(None, Default::default()),
//! );
//! let response = service.oneshot(request).await?;
//! assert_eq!(
//!     response.messages(),
//!     [Message::text("&lt;script&gt;alert(1)&lt;/script&gt;")]
//! );
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! # }).unwrap();
//! ```

mod fields;
mod html;
mod json;
mod layer;
mod sanitizer;
mod service;
mod text;

pub use self::fields::SanitizeFields;
pub use self::layer::{
    CleanConfig, DEFAULT_MAX_BYTES, MessageFormat, SanitizeConfig, SanitizeLayer, SanitizeMode,
};
pub use self::sanitizer::BinaryPolicy;
pub use self::service::Sanitize;
pub use self::text::CharPolicy;
pub use crate::future::ResponseFuture;
