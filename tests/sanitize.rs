//! SanitizeLayer through its public API: every mode against an XSS corpus judged by
//! html5ever, round trips of real chat text, the JSON format and the text checks.

use std::convert::Infallible;

use scraper::{Html, Node};
use tower::{Layer, ServiceExt, service_fn};
use tower_ws_guard::sanitize::{
    BinaryPolicy, CharPolicy, CleanConfig, MessageFormat, SanitizeConfig, SanitizeMode,
};
use tower_ws_guard::{Connection, GuardError, Message, SanitizeLayer, WsRequest, WsResponse};

/// Runs one message through a SanitizeLayer built from `config`; the message the inner
/// service received, or the rejection's code.
async fn run(config: &SanitizeConfig, message: Message) -> Result<Message, String> {
    let echo = service_fn(|req: WsRequest| async move {
        Ok::<_, Infallible>(WsResponse::message(req.into_message()))
    });
    let service = SanitizeLayer::from_config(config).unwrap().layer(echo);
    let request = WsRequest::new(message, Connection::new(None, Default::default()));
    match service.oneshot(request).await {
        Ok(response) => Ok(response.messages()[0].clone()),
        Err(error) => Err(error
            .downcast_ref::<GuardError>()
            .unwrap()
            .code()
            .to_owned()),
    }
}

async fn text(config: &SanitizeConfig, input: &str) -> Result<String, String> {
    match run(config, Message::text(input)).await? {
        Message::Text(text) => Ok(text.to_string()),
        other => panic!("expected text, got {other:?}"),
    }
}

/// The default config, changed by `change`.
fn with(change: impl FnOnce(&mut SanitizeConfig)) -> SanitizeConfig {
    let mut config = SanitizeConfig::default();
    change(&mut config);
    config
}

fn config(mode: SanitizeMode) -> SanitizeConfig {
    SanitizeConfig::default().mode(mode)
}

fn corpus() -> Vec<String> {
    include_str!("data/xss.txt")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

const URL_ATTRIBUTES: &[&str] = &[
    "href",
    "src",
    "action",
    "formaction",
    "xlink:href",
    "background",
    "poster",
    "cite",
    "data",
    "srcdoc",
    "lowsrc",
    "dynsrc",
    "codebase",
];

/// Judges sanitized output as a browser would parse it: the reasons it is unsafe.
fn verdict(output: &str, allowed_tags: &[String], schemes: &[String]) -> Vec<String> {
    let document = Html::parse_fragment(output);
    let mut problems = Vec::new();
    // parse_fragment puts the fragment under one root element; judge what is below it.
    for node in document.root_element().descendants().skip(1) {
        let Node::Element(element) = node.value() else {
            continue;
        };
        let name = element.name();
        if !allowed_tags.iter().any(|t| t == name) {
            problems.push(format!("element <{name}>"));
        }
        for (attribute, value) in element.attrs() {
            let attribute = attribute.to_ascii_lowercase();
            if attribute.starts_with("on") {
                problems.push(format!("event handler {attribute}"));
            }
            if attribute == "style" {
                problems.push("style attribute".to_owned());
            }
            if URL_ATTRIBUTES.contains(&attribute.as_str()) {
                match url::Url::parse(value) {
                    Ok(url) if !schemes.iter().any(|s| s == url.scheme()) => {
                        problems.push(format!("{attribute} with scheme {}", url.scheme()));
                    }
                    Ok(_) | Err(url::ParseError::RelativeUrlWithoutBase) => {}
                    Err(error) => problems.push(format!("{attribute} unparsable: {error}")),
                }
            }
        }
    }
    problems
}

/// The text a browser shows for an HTML fragment.
fn rendered_text(html: &str) -> String {
    Html::parse_fragment(html).root_element().text().collect()
}

#[tokio::test]
async fn no_vector_of_the_corpus_survives_any_mode() {
    let clean = CleanConfig::default();
    let mut judged = 0;
    for vector in corpus() {
        for (mode, tags) in [
            (SanitizeMode::Escape, Vec::new()),
            (SanitizeMode::Strip, Vec::new()),
            (SanitizeMode::Clean, clean.tags.clone()),
        ] {
            match text(&config(mode), &vector).await {
                Ok(output) => {
                    let problems = verdict(&output, &tags, &clean.url_schemes);
                    assert!(
                        problems.is_empty(),
                        "{mode:?} {vector:?} -> {output:?}: {problems:?}"
                    );
                    judged += 1;
                    if mode == SanitizeMode::Clean {
                        let again = text(&config(mode), &output).await.unwrap();
                        assert_eq!(again, output, "clean mode is not idempotent on {vector:?}");
                    }
                }
                // Emptied by strip (a script and nothing else) or refused by a cap.
                Err(code) => assert!(
                    code == "empty_message" || code == "invalid_message",
                    "{mode:?} {vector:?}: {code}"
                ),
            }
        }
        // Reject mode refuses anything with markup and alters nothing else.
        match text(&config(SanitizeMode::Reject), &vector).await {
            Err(code) => assert_eq!(code, "invalid_message", "{vector:?}"),
            Ok(output) => {
                assert_eq!(output, vector);
                assert!(
                    verdict(&output, &[], &[]).is_empty(),
                    "{vector:?} passed reject mode"
                );
            }
        }
    }
    assert!(judged > 200, "only {judged} outputs judged");
}

#[tokio::test]
async fn escape_mode_renders_exactly_what_was_typed() {
    let chat = [
        "a<b",
        "1 < 2",
        "<3",
        "</3 love",
        "<<title>>",
        "Tom & Jerry",
        "https://shop.test/?item=1&currency=EUR&copy=2&lang=en",
        "if (a < b && c > d) { return \"x\"; } // it's code",
        "👩\u{200D}👩\u{200D}👧\u{200D}👦 family, 👍🏽 thumbs",
        "שלום\u{200F} עולם — hello \u{200E}world",
        "مرحبا بالعالم",
        "你好，世界！こんにちは 안녕하세요",
        "&amp; is already an entity; &lt; too",
        "it's \"quoted\"",
    ];
    for input in chat {
        let output = text(&config(SanitizeMode::Escape), input).await.unwrap();
        assert_eq!(
            rendered_text(&output),
            input,
            "escape: {input:?} -> {output:?}"
        );
        assert!(verdict(&output, &[], &[]).is_empty());
    }
}

#[tokio::test]
async fn clean_mode_keeps_plain_text_readable() {
    let plain = [
        "a<b",
        "1 < 2",
        "<3",
        "</3 love",
        "<<title>>",
        "Tom & Jerry",
        "https://shop.test/?item=1&currency=EUR&copy=2&lang=en",
        "if (a < b && c > d) { return 0; }",
        "👩\u{200D}👩\u{200D}👧 family",
        "שלום\u{200F} עולם",
        "你好，世界！",
        "x <= y >= z",
        "non\u{a0}breaking space",
        // Tag-shaped text that is not a closed pair stays text.
        "a <b and c> d",
        "if a<b and c>d then",
        "x <i think> so",
        "the <a> element",
        "use </p> to close",
        "x </br> y",
        "&copy; stays as typed",
    ];
    for input in plain {
        let output = text(&config(SanitizeMode::Clean), input).await.unwrap();
        assert_eq!(
            rendered_text(&output),
            input,
            "clean: {input:?} -> {output:?}"
        );
    }
    // Allowlisted markup stays, links get rel.
    let output = text(
        &config(SanitizeMode::Clean),
        r#"<b>hi</b> <a href="https://x.test/">x</a>"#,
    )
    .await
    .unwrap();
    assert_eq!(
        output,
        r#"<b>hi</b> <a href="https://x.test/" rel="noopener noreferrer">x</a>"#
    );
}

#[tokio::test]
async fn clean_mode_decodes_references_as_a_browser_would_and_is_stable() {
    let clean = config(SanitizeMode::Clean);
    assert_eq!(
        rendered_text(&text(&clean, "&#150; dash").await.unwrap()),
        "\u{2013} dash",
        "Windows-1252"
    );
    assert_eq!(
        rendered_text(&text(&clean, "&lt;b&gt; &amp; &#128512;").await.unwrap()),
        "<b> & \u{1F600}"
    );
    // A blank line at the start of <pre> survives, pass after pass.
    let once = text(&clean, "<pre>\n\ncode</pre>").await.unwrap();
    assert_eq!(rendered_text(&once), "\ncode");
    assert_eq!(text(&clean, &once).await.unwrap(), once);
    // The pre-pass's sentinels cannot be smuggled in, with or without specials.
    for smuggled in ["\u{FDD0}img src=x onerror=alert(1)", "\u{FDD1}", "&#xFDD0;"] {
        assert_eq!(
            text(&clean, smuggled).await.unwrap_err(),
            "invalid_message",
            "{smuggled:?}"
        );
    }
}

#[tokio::test]
async fn hostile_markup_neither_blows_up_nor_eats_the_rest() {
    let clean = config(SanitizeMode::Clean);
    // Unclosed formatting elements across paragraphs: html5ever would re-open every earlier
    // one at each paragraph (quadratic time and output). Unpaired, they are text.
    let reopen: String = (0..3173)
        .map(|i| format!("<p><b title={i}></p>"))
        .collect::<String>()
        + "x";
    let link = format!(
        "<p><a title=\"{}\" href=\"https://x.test/\"></p>{}",
        "A".repeat(32_000),
        "<p>x</p>".repeat(4186)
    );
    let misnested = "<b><ul></b>".repeat(5957);
    for hostile in [
        reopen,
        link,
        misnested,
        "<a".repeat(32_768),
        "<ab".repeat(21_845),
        "<a b=".repeat(13_107),
    ] {
        match text(&clean, &hostile).await {
            Ok(output) => assert!(
                output.len() <= 5 * hostile.len(),
                "{} bytes from {}",
                output.len(),
                hostile.len()
            ),
            Err(code) => assert_eq!(code, "invalid_message"),
        }
    }
    // A character reference in an unquoted value cannot split it into more attributes.
    let split = format!("<b title=a{}>x</b>", "&#9;z".repeat(20));
    let output = text(&clean, &split).await.unwrap();
    assert_eq!(
        output, "<b>x</b>",
        "title is not allowed on <b>, and nothing else appeared"
    );
}

#[tokio::test]
async fn strip_mode_keeps_the_text_and_removes_the_markup() {
    let output = text(&config(SanitizeMode::Strip), "<b>bold</b> & <i>it</i> a<b")
        .await
        .unwrap();
    assert_eq!(output, "bold &amp; it a&lt;b");
    assert_eq!(
        text(&config(SanitizeMode::Strip), "<script>alert(1)</script>")
            .await
            .unwrap_err(),
        "empty_message"
    );
}

#[tokio::test]
async fn empty_text_is_refused_unless_allowed() {
    for blank in ["", "  \n"] {
        assert_eq!(
            text(&SanitizeConfig::default(), blank).await.unwrap_err(),
            "empty_message",
            "{blank:?}"
        );
        let allowed = with(|c| c.allow_empty = true);
        assert_eq!(text(&allowed, blank).await.unwrap(), blank);
    }
    let allowed = with(|c| c.allow_empty = true);
    assert_eq!(
        text(
            &allowed.clone().mode(SanitizeMode::Strip),
            "<script>x</script>"
        )
        .await
        .unwrap(),
        "",
        "strip may leave nothing when empty text is allowed"
    );
    let parsed = tower_ws_guard::GuardConfig::from_toml("[sanitize]\nallow_empty = true").unwrap();
    assert!(parsed.sanitize.allow_empty);
}

#[tokio::test]
async fn reject_mode_refuses_markup_and_alters_nothing_else() {
    assert_eq!(
        text(&config(SanitizeMode::Reject), "<b>x</b>")
            .await
            .unwrap_err(),
        "invalid_message"
    );
    assert_eq!(
        text(&config(SanitizeMode::Reject), "1 < 2 & 3 > 2")
            .await
            .unwrap(),
        "1 < 2 & 3 > 2"
    );
}

#[tokio::test]
async fn caps_run_before_ammonia() {
    let clean = config(SanitizeMode::Clean);
    assert_eq!(
        text(&clean, &"<b>".repeat(33)).await.unwrap_err(),
        "invalid_message"
    );
    let attributes: String = (0..17).map(|i| format!(" title{i}=x")).collect();
    assert_eq!(
        text(&clean, &format!("<b{attributes}>x</b>"))
            .await
            .unwrap_err(),
        "invalid_message"
    );
    // Long runs of `&` are linear and come out readable.
    let ampersands = "&".repeat(10_000);
    assert_eq!(
        rendered_text(&text(&clean, &ampersands).await.unwrap()),
        ampersands
    );
}

#[tokio::test]
async fn text_checks_have_documented_defaults_and_policies() {
    let default = SanitizeConfig::default();
    for bad in ["a\u{0}b", "\u{202E}txt", "zero\u{200B}width", "\u{85}"] {
        assert_eq!(
            text(&default, bad).await.unwrap_err(),
            "invalid_message",
            "{bad:?}"
        );
    }
    for empty in ["", "   ", "\n\t"] {
        assert_eq!(
            text(&default, empty).await.unwrap_err(),
            "empty_message",
            "{empty:?}"
        );
    }
    let strip = with(|c| {
        c.zero_width = CharPolicy::Strip;
        c.control = CharPolicy::Strip;
    });
    assert_eq!(text(&strip, "a\u{200B}b\u{7}c").await.unwrap(), "abc");
    assert_eq!(text(&strip, "\u{200B}").await.unwrap_err(), "empty_message");
    let allow = with(|c| {
        c.bidi = CharPolicy::Allow;
    });
    assert_eq!(text(&allow, "\u{202E}x").await.unwrap(), "\u{202E}x");

    let limited = with(|c| {
        c.max_chars = Some(3);
        c.normalize_nfc = true;
    });
    assert_eq!(
        text(&limited, "e\u{301}e\u{301}e\u{301}").await.unwrap(),
        "\u{e9}\u{e9}\u{e9}"
    );
    assert_eq!(
        text(&limited, "abcd").await.unwrap_err(),
        "message_too_large"
    );
    let small = with(|c| {
        c.max_bytes = 4;
    });
    assert_eq!(
        text(&small, "abcde").await.unwrap_err(),
        "message_too_large"
    );

    // A reference in an attribute value is decoded by html5ever, not by the pre-pass: what
    // it decodes to meets the same rules (found by the sanitize_text fuzz target).
    let clean = config(SanitizeMode::Clean);
    for smuggled in [
        r#"<a href="java&#x04;script:alert(1)">click</a>"#,
        r#"<a href="x" title="&#x202E;txt">click</a>"#,
        r#"<a href="x" title="zero&#x200B;width">click</a>"#,
    ] {
        assert_eq!(
            text(&clean, smuggled).await.unwrap_err(),
            "invalid_message",
            "{smuggled:?}"
        );
    }
    let stripping = with(|c| {
        c.mode = SanitizeMode::Clean;
        c.control = CharPolicy::Strip;
    });
    let stripped = text(
        &stripping,
        r#"<a href="java&#x04;script:alert(1)">click</a>"#,
    )
    .await
    .unwrap();
    assert!(!stripped.contains('\u{4}'), "{stripped:?}");
}

#[tokio::test]
async fn a_clean_message_is_passed_on_without_a_copy() {
    let input = Message::text("just a normal message, nothing to see");
    let Message::Text(before) = &input else {
        unreachable!()
    };
    let pointer = before.as_bytes().as_ptr();
    let Message::Text(after) = run(&SanitizeConfig::default(), input.clone())
        .await
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(
        after.as_bytes().as_ptr(),
        pointer,
        "the same bytes, not a copy"
    );
}

#[tokio::test]
async fn binary_messages_follow_their_policy() {
    let data = Message::binary(b"<b>x</b>".to_vec());
    let pass = SanitizeConfig::default();
    assert_eq!(run(&pass, data.clone()).await.unwrap(), data);
    let reject = with(|c| {
        c.binary = BinaryPolicy::Reject;
    });
    assert_eq!(
        run(&reject, data.clone()).await.unwrap_err(),
        "invalid_message"
    );
    let as_text = with(|c| {
        c.binary = BinaryPolicy::Text;
    });
    assert_eq!(
        run(&as_text, data).await.unwrap(),
        Message::text("&lt;b&gt;x&lt;/b&gt;")
    );
    assert_eq!(
        run(&as_text, Message::binary(vec![0xff]))
            .await
            .unwrap_err(),
        "invalid_message"
    );
}

mod json {
    use super::*;

    #[tokio::test]
    async fn only_the_named_fields_change() {
        let config = SanitizeConfig::json(&["/content", "/meta/title"]);
        let input = r#"{"type":"send_message","room":"<lobby>","content":"<b>hi</b>","meta":{"title":"a&b"}}"#;
        let output: serde_json::Value =
            serde_json::from_str(&text(&config, input).await.unwrap()).unwrap();
        assert_eq!(output["content"], "&lt;b&gt;hi&lt;/b&gt;");
        assert_eq!(output["meta"]["title"], "a&amp;b");
        assert_eq!(output["room"], "<lobby>", "other fields keep their values");
        assert_eq!(output["type"], "send_message");
    }

    #[tokio::test]
    async fn an_unchanged_document_is_not_reserialized() {
        let config = SanitizeConfig::json(&["/content"]);
        let input = r#"{ "content" : "plain",   "n": 1.50 }"#;
        assert_eq!(text(&config, input).await.unwrap(), input);
    }

    #[tokio::test]
    async fn every_string_value_when_configured() {
        let config = with(|c| {
            c.format = MessageFormat::Json;
            c.json_all_strings = true;
        });
        let output = text(&config, r#"{"a":["<i>",{"<k>":"<v>"}],"n":1}"#)
            .await
            .unwrap();
        assert_eq!(output, r#"{"a":["&lt;i&gt;",{"<k>":"&lt;v&gt;"}],"n":1}"#);
    }

    #[tokio::test]
    async fn checks_run_on_decoded_values() {
        let config = SanitizeConfig::json(&["/content"]);
        assert_eq!(
            text(&config, r#"{"content":"\u202Etxt"}"#)
                .await
                .unwrap_err(),
            "invalid_message"
        );
        let output = text(&config, r#"{"content":"\u003cscript\u003e"}"#)
            .await
            .unwrap();
        assert_eq!(output, r#"{"content":"&lt;script&gt;"}"#);
        assert_eq!(
            text(&config, r#"{"content":"  "}"#).await.unwrap_err(),
            "empty_message"
        );
    }

    #[tokio::test]
    async fn malformed_deep_or_mistyped_documents_are_invalid() {
        let config = SanitizeConfig::json(&["/content"]);
        for bad in [
            "not json",
            r#"{"content":"x""#,
            r#"{"content":{"nested":"<b>"}}"#,
            r#"{"content":5}"#,
        ] {
            assert_eq!(
                text(&config, bad).await.unwrap_err(),
                "invalid_message",
                "{bad}"
            );
        }
        // Duplicate keys are refused: which one a consumer reads depends on its parser.
        for duplicate in [
            r#"{"content":"\u202e","content":"ok"}"#,
            r#"{"content":"ok","content":"<b>"}"#,
            r#"{"a":{"x":1,"x":2},"content":"ok"}"#,
        ] {
            assert_eq!(
                text(&config, duplicate).await.unwrap_err(),
                "invalid_message",
                "{duplicate}"
            );
        }
        let nested = |depth: usize| {
            format!(
                r#"{{"content":"x","n":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        assert_eq!(
            text(&config, &nested(32)).await.unwrap_err(),
            "invalid_message",
            "33 deep"
        );
        assert!(text(&config, &nested(31)).await.is_ok(), "32 deep");
        // An array where the pointer expects an object: serde's derived structs would read
        // it by position, so it must not slip past unchecked.
        for array in [
            r#"["send_message","lobby","<img src=x onerror=alert(1)>"]"#,
            r#"{"meta":["<b>"]}"#,
        ] {
            let config = SanitizeConfig::json(&["/content", "/meta/title"]);
            assert_eq!(
                text(&config, array).await.unwrap_err(),
                "invalid_message",
                "{array}"
            );
        }
        let indexed = SanitizeConfig::json(&["/2"]);
        assert_eq!(
            text(&indexed, r#"["a","b","<i>"]"#).await.unwrap(),
            r#"["a","b","&lt;i&gt;"]"#
        );
    }
}

#[test]
fn unsafe_allowlists_are_config_errors() {
    // Clean mode with one change to its allowlist.
    let clean = |change: fn(&mut CleanConfig)| {
        let mut config = config(SanitizeMode::Clean);
        change(&mut config.clean);
        config
    };
    let cases: Vec<(&str, SanitizeConfig)> = vec![
        ("script", clean(|c| c.tags.push("script".into()))),
        ("SVG", clean(|c| c.tags.push("SVG".into()))),
        (
            "onclick",
            clean(|c| c.generic_attributes.push("onclick".into())),
        ),
        (
            "style",
            clean(|c| c.generic_attributes.push("style".into())),
        ),
        (
            "rel",
            clean(|c| c.tag_attributes.get_mut("a").unwrap().push("rel".into())),
        ),
        (
            "javascript",
            clean(|c| c.url_schemes.push("javascript".into())),
        ),
        (
            "json_fields",
            with(|c| {
                c.format = MessageFormat::Json;
            }),
        ),
        ("JSON Pointer", SanitizeConfig::json(&["content"])),
        (
            "max_chars",
            with(|c| {
                c.max_chars = Some(0);
            }),
        ),
    ];
    for (needle, config) in cases {
        let error = SanitizeLayer::from_config(&config).unwrap_err().to_string();
        assert!(error.contains(needle), "{needle}: {error}");
    }
}

#[test]
fn the_judge_flags_the_raw_vectors() {
    // Proof that the verdict can fail: unsanitized, most of the corpus is caught.
    let clean = CleanConfig::default();
    let vectors = corpus();
    let flagged = vectors
        .iter()
        .filter(|v| !verdict(v, &clean.tags, &clean.url_schemes).is_empty())
        .count();
    assert!(
        flagged * 10 >= vectors.len() * 8,
        "only {flagged} of {} raw vectors flagged",
        vectors.len()
    );
    assert!(
        !verdict(
            "<img src=x onerror=alert(1)>",
            &clean.tags,
            &clean.url_schemes
        )
        .is_empty()
    );
    assert!(
        !verdict(
            r#"<a href="java&#x09;script:alert(1)">x</a>"#,
            &clean.tags,
            &clean.url_schemes
        )
        .is_empty()
    );
}

#[tokio::test]
async fn the_readme_table_of_modes_is_true() {
    let input = "<b>hi</b> a<b &copy;";
    assert_eq!(
        text(&config(SanitizeMode::Escape), input).await.unwrap(),
        "&lt;b&gt;hi&lt;/b&gt; a&lt;b &amp;copy;"
    );
    assert_eq!(
        text(&config(SanitizeMode::Clean), input).await.unwrap(),
        "<b>hi</b> a&lt;b &amp;copy;"
    );
    assert_eq!(
        text(&config(SanitizeMode::Strip), input).await.unwrap(),
        "hi a&lt;b &amp;copy;"
    );
    assert_eq!(
        text(&config(SanitizeMode::Reject), input)
            .await
            .unwrap_err(),
        "invalid_message"
    );
}
