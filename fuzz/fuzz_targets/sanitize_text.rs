//! The sanitizer on arbitrary text, in every mode: no panic, only documented rejections,
//! and what it lets through holds each mode's promise.

#![no_main]

mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_ws_guard::sanitize::{SanitizeConfig, SanitizeMode};
use tower_ws_guard::{Connection, Message, SanitizeLayer, WsRequest, WsResponse};

fn layers() -> &'static [(SanitizeMode, SanitizeLayer)] {
    static LAYERS: OnceLock<Vec<(SanitizeMode, SanitizeLayer)>> = OnceLock::new();
    LAYERS.get_or_init(|| {
        [
            SanitizeMode::Escape,
            SanitizeMode::Clean,
            SanitizeMode::Strip,
            SanitizeMode::Reject,
        ]
        .into_iter()
        .map(|mode| {
            let config = SanitizeConfig::default().mode(mode);
            (
                mode,
                SanitizeLayer::from_config(&config).expect("a valid config"),
            )
        })
        .collect()
    })
}

/// Sanitizes `text` with `layer`: the text that came out, or the rejection (`code: why`).
pub fn run(layer: &SanitizeLayer, text: &str) -> Result<String, String> {
    let mut service = layer.layer(service_fn(|request: WsRequest| async move {
        Ok::<_, std::convert::Infallible>(WsResponse::message(request.into_message()))
    }));
    let request = WsRequest::new(
        Message::text(text),
        Connection::new(None, Default::default()),
    );
    let result = common::block_on(async {
        let ready = ServiceExt::<WsRequest>::ready(&mut service).await?;
        ready.call(request).await
    });
    match result {
        Ok(response) => match response.messages() {
            [Message::Text(text)] => Ok(text.to_string()),
            other => panic!("one text message expected, got {other:?}"),
        },
        Err(error) => {
            common::documented(&error);
            Err(error.to_string())
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (mode, layer) = &layers()[usize::from(selector) % layers().len()];
    let Ok(output) = run(layer, &text) else {
        return;
    };
    match mode {
        // Escaped text is safe in any context, attribute values included.
        SanitizeMode::Escape => assert!(
            !output.contains(['<', '>', '"', '\'']),
            "escape let markup through: {text:?} -> {output:?}"
        ),
        // Stripped text is HTML text (quotes are plain characters there, as html5ever
        // serializes them): no tag can open.
        SanitizeMode::Strip => assert!(
            !output.contains(['<', '>']),
            "strip let markup through: {text:?} -> {output:?}"
        ),
        SanitizeMode::Reject => assert_eq!(output, text, "reject mode altered text"),
        _ => {}
    }
    match mode {
        // Escaping loses nothing: the page shows exactly what was typed.
        SanitizeMode::Escape => assert_eq!(
            unescape(&output),
            text,
            "escaping is not reversible on {text:?}"
        ),
        // Markup cleaned once is clean: cleaning it again changes nothing but line ends
        // (`&#13;` decodes to a CR, which an HTML parser reads back as LF, as a browser
        // does). Escape and strip encode `&`, so they are not idempotent, by design.
        SanitizeMode::Clean => match run(layer, &output) {
            Ok(again) => assert_eq!(
                lines(&again),
                lines(&output),
                "clean is not idempotent on {text:?}"
            ),
            // Cleaning writes a raw `&` in an attribute as `&amp;`: a tag under the cap on
            // character references can come out over it, and is then refused, as documented.
            Err(refusal) if refusal.ends_with("too many character references in tags") => {}
            Err(refusal) => panic!("clean refused its own output ({refusal}) on {text:?}"),
        },
        _ => {}
    }
});

/// What a browser shows for escaped text: the five references escape mode writes, decoded.
fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// Line ends as an HTML parser reads them: CR LF and CR are LF.
fn lines(html: &str) -> String {
    html.replace("\r\n", "\n").replace('\r', "\n")
}
