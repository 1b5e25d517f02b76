//! The sanitizer on arbitrary JSON messages: no panic, only documented rejections, and what
//! passes is still JSON with markup escaped in the user-text fields.

#![no_main]

mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_ws_guard::sanitize::SanitizeConfig;
use tower_ws_guard::{Connection, Message, SanitizeLayer, WsRequest, WsResponse};

fn layers() -> &'static [SanitizeLayer; 2] {
    static LAYERS: OnceLock<[SanitizeLayer; 2]> = OnceLock::new();
    LAYERS.get_or_init(|| {
        let fields = SanitizeConfig::json(&["/content", "/meta/title"]);
        let mut all = SanitizeConfig::json(&[]);
        all.json_all_strings = true;
        [
            SanitizeLayer::from_config(&fields).expect("a valid config"),
            SanitizeLayer::from_config(&all).expect("a valid config"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let layer = &layers()[usize::from(selector & 1)];
    let mut service = layer.layer(service_fn(|request: WsRequest| async move {
        Ok::<_, std::convert::Infallible>(WsResponse::message(request.into_message()))
    }));
    let request = WsRequest::new(
        Message::text(text.as_ref()),
        Connection::new(None, Default::default()),
    );
    let result = common::block_on(async {
        let ready = ServiceExt::<WsRequest>::ready(&mut service).await?;
        ready.call(request).await
    });
    match result {
        Ok(response) => {
            let [Message::Text(output)] = response.messages() else {
                panic!("one text message expected");
            };
            let value: serde_json::Value =
                serde_json::from_str(output).expect("what passes is JSON");
            let mut strings = Vec::new();
            collect(&value, &mut strings);
            if selector & 1 == 1 {
                for s in strings {
                    assert!(!s.contains(['<', '>']), "markup in {s:?} from {text:?}");
                }
            } else {
                // The fields are what an application reads: no markup there, whether the
                // message was passed as it came or written out again.
                for pointer in ["/content", "/meta/title"] {
                    if let Some(serde_json::Value::String(s)) = value.pointer(pointer) {
                        assert!(!s.contains(['<', '>']), "markup at {pointer} from {text:?}");
                    }
                }
            }
        }
        Err(error) => common::documented(&error),
    }
});

fn collect<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect(v, out)),
        _ => {}
    }
}
