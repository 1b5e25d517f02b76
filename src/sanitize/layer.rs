use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use tower_layer::Layer;

use super::html::{Allowlist, FORBIDDEN_TAGS, Html};
use super::json::{Fields, Pointer};
use super::sanitizer::{BinaryPolicy, Format, Mode, Sanitizer};
use super::service::Sanitize;
use super::text::{CharPolicy, CharRules};
use crate::config::ConfigError;

/// What is done to markup in user text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SanitizeMode {
    /// `& < > " '` are escaped as HTML entities, each exactly once: every character the
    /// user typed survives and renders as typed (`a<b` stays readable). The default.
    #[default]
    Escape,
    /// Allowlisted markup stays (cleaned by ammonia: attributes, URL schemes, `rel` on
    /// links); any other tag, and any `<` or `&` that is not markup, is shown as text.
    Clean,
    /// All markup is removed, the text is kept (and escaped).
    Strip,
    /// Any markup gets an `invalid_message` error; other text passes unaltered.
    Reject,
}

/// How a text message is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageFormat {
    /// The whole text message is user content.
    #[default]
    Text,
    /// The message is a JSON document; only the string fields named by `json_fields`
    /// (JSON Pointers), or every string value with `json_all_strings`, are user content.
    Json,
}

/// The default maximum message size: 64 KiB.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// The allowlist of `clean` mode: `[sanitize.clean]`.
///
/// The defaults suit chat: inline formatting, code, paragraphs, lists, quotes and links
/// (`http`, `https`, `mailto`) that get `rel="noopener noreferrer"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CleanConfig {
    /// Tags that stay.
    pub tags: Vec<String>,
    /// Attributes allowed per tag.
    pub tag_attributes: HashMap<String, Vec<String>>,
    /// Attributes allowed on every allowed tag.
    pub generic_attributes: Vec<String>,
    /// URL schemes allowed in URL attributes; relative URLs pass.
    pub url_schemes: Vec<String>,
    /// The `rel` set on every link (`None` leaves links without one).
    pub link_rel: Option<String>,
    /// Deepest nesting of tags accepted, checked before ammonia runs (default 32).
    pub max_depth: usize,
    /// Most attributes on one tag, checked before ammonia runs (default 16).
    pub max_attributes: usize,
}

impl Default for CleanConfig {
    fn default() -> Self {
        let strings = |names: &[&str]| names.iter().map(|&n| n.to_owned()).collect::<Vec<_>>();
        Self {
            tags: strings(&[
                "a",
                "b",
                "blockquote",
                "br",
                "code",
                "del",
                "em",
                "i",
                "li",
                "ol",
                "p",
                "pre",
                "s",
                "strong",
                "sub",
                "sup",
                "u",
                "ul",
            ]),
            tag_attributes: [("a".to_owned(), strings(&["href", "title"]))]
                .into_iter()
                .collect(),
            generic_attributes: Vec::new(),
            url_schemes: strings(&["http", "https", "mailto"]),
            link_rel: Some("noopener noreferrer".to_owned()),
            max_depth: 32,
            max_attributes: 16,
        }
    }
}

/// The `[sanitize]` section of [`GuardConfig`](crate::GuardConfig).
///
/// ```toml
/// [sanitize]
/// mode = "escape"            # escape | clean | strip | reject
/// format = "json"            # text | json
/// json_fields = ["/content"] # JSON Pointers of the user-text fields
/// json_all_strings = false   # or: every string value is user text
/// json_max_depth = 32
/// max_bytes = 65536          # larger closes with 1009
/// # max_chars = 2000         # larger gets message_too_large
/// control = "reject"         # reject | strip | allow: C0/C1 controls but tab, LF, CR
/// bidi = "reject"            # bidi embedding/override/isolate controls
/// zero_width = "reject"      # U+200B, U+2060, U+FEFF (ZWJ and ZWNJ always pass)
/// normalize_nfc = false
/// allow_empty = false        # empty or blank text gets empty_message
/// binary = "pass"            # pass | reject | text
///
/// [sanitize.clean]           # the allowlist of clean mode
/// tags = ["b", "i", "a"]
/// tag_attributes = { a = ["href"] }
/// url_schemes = ["https"]
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SanitizeConfig {
    /// What is done to markup (default `escape`).
    pub mode: SanitizeMode,
    /// How text messages are read (default `text`).
    pub format: MessageFormat,
    /// With `format = "json"`: the JSON Pointers of the fields holding user text.
    pub json_fields: Vec<String>,
    /// With `format = "json"`: every string value is user text.
    pub json_all_strings: bool,
    /// With `format = "json"`: deepest nesting accepted (default 32).
    pub json_max_depth: usize,
    /// Largest message accepted, in bytes (default 64 KiB); larger closes with 1009.
    pub max_bytes: usize,
    /// Longest user text accepted, in characters (after normalisation); none by default.
    pub max_chars: Option<usize>,
    /// C0/C1 control characters other than tab, LF and CR (default `reject`).
    pub control: CharPolicy,
    /// Bidi embedding, override and isolate controls (default `reject`).
    pub bidi: CharPolicy,
    /// Zero-width space, word joiner and BOM (default `reject`).
    pub zero_width: CharPolicy,
    /// Normalise user text to NFC before measuring and checking it (default off).
    pub normalize_nfc: bool,
    /// Let empty or blank user text through (default off: it gets `empty_message`, as
    /// does text that sanitizing left blank).
    pub allow_empty: bool,
    /// What is done with binary messages (default `pass`).
    pub binary: BinaryPolicy,
    /// The allowlist of `clean` mode.
    pub clean: CleanConfig,
}

impl Default for SanitizeConfig {
    fn default() -> Self {
        Self {
            mode: SanitizeMode::Escape,
            format: MessageFormat::Text,
            json_fields: Vec::new(),
            json_all_strings: false,
            json_max_depth: 32,
            max_bytes: DEFAULT_MAX_BYTES,
            max_chars: None,
            control: CharPolicy::Reject,
            bidi: CharPolicy::Reject,
            zero_width: CharPolicy::Reject,
            normalize_nfc: false,
            allow_empty: false,
            binary: BinaryPolicy::Pass,
            clean: CleanConfig::default(),
        }
    }
}

impl SanitizeConfig {
    /// A JSON config sanitizing the string fields at `pointers`.
    #[must_use]
    pub fn json(pointers: &[&str]) -> Self {
        Self {
            format: MessageFormat::Json,
            json_fields: pointers.iter().map(|&p| p.to_owned()).collect(),
            ..Self::default()
        }
    }

    /// The same config in another mode.
    #[must_use]
    pub fn mode(mut self, mode: SanitizeMode) -> Self {
        self.mode = mode;
        self
    }

    /// Checks the section without building a layer.
    ///
    /// # Errors
    /// See [`SanitizeLayer::from_config`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        SanitizeLayer::from_config(self).map(|_| ())
    }

    pub(super) fn build(&self) -> Result<Sanitizer, ConfigError> {
        if self.max_bytes == 0 {
            return Err(ConfigError::invalid(
                "sanitize.max_bytes",
                "must be above zero",
            ));
        }
        if self.max_chars == Some(0) {
            return Err(ConfigError::invalid(
                "sanitize.max_chars",
                "must be above zero",
            ));
        }
        let format = match self.format {
            MessageFormat::Text => Format::Text,
            MessageFormat::Json => {
                if self.json_max_depth == 0 {
                    return Err(ConfigError::invalid(
                        "sanitize.json_max_depth",
                        "must be above zero",
                    ));
                }
                let fields = match (self.json_all_strings, self.json_fields.is_empty()) {
                    (true, true) => Fields::AllStrings,
                    (false, false) => {
                        Fields::Pointers(self.json_fields.iter().map(|p| Pointer::new(p)).collect())
                    }
                    (true, false) => {
                        return Err(ConfigError::invalid(
                            "sanitize.json_fields",
                            "set either `json_fields` or `json_all_strings`, not both",
                        ));
                    }
                    (false, true) => {
                        return Err(ConfigError::invalid(
                            "sanitize.json_fields",
                            "format \"json\" needs `json_fields` (JSON Pointers such as \"/content\") or `json_all_strings = true`",
                        ));
                    }
                };
                Format::Json {
                    fields,
                    max_depth: self.json_max_depth,
                }
            }
        };
        if let Some(bad) = self.json_fields.iter().find(|p| !p.starts_with('/')) {
            return Err(ConfigError::invalid(
                "sanitize.json_fields",
                format!("`{bad}` is not a JSON Pointer (it must start with '/')"),
            ));
        }
        let clean = &self.clean;
        if clean.max_depth == 0 || clean.max_attributes == 0 {
            return Err(ConfigError::invalid(
                "sanitize.clean",
                "`max_depth` and `max_attributes` must be above zero",
            ));
        }
        let mode = match self.mode {
            SanitizeMode::Escape => Mode::Escape,
            SanitizeMode::Reject => Mode::Reject,
            SanitizeMode::Strip => {
                Mode::Html(Box::new(Html::strip(clean.max_depth, clean.max_attributes)))
            }
            SanitizeMode::Clean => {
                validate_allowlist(clean)?;
                Mode::Html(Box::new(Html::clean(
                    &Allowlist {
                        tags: &clean.tags,
                        tag_attributes: &clean.tag_attributes,
                        generic_attributes: &clean.generic_attributes,
                        url_schemes: &clean.url_schemes,
                        link_rel: clean.link_rel.as_deref(),
                    },
                    clean.max_depth,
                    clean.max_attributes,
                )))
            }
        };
        Ok(Sanitizer {
            mode,
            format,
            max_bytes: self.max_bytes,
            rules: CharRules {
                control: self.control,
                bidi: self.bidi,
                zero_width: self.zero_width,
                nfc: self.normalize_nfc,
                max_chars: self.max_chars,
            },
            binary: self.binary,
            allow_empty: self.allow_empty,
        })
    }
}

/// Refuses allowlists that are unsafe or that would make ammonia panic.
fn validate_allowlist(clean: &CleanConfig) -> Result<(), ConfigError> {
    let field = "sanitize.clean";
    let lower = |name: &str| name.to_ascii_lowercase();
    if let Some(bad) = clean
        .tags
        .iter()
        .find(|t| FORBIDDEN_TAGS.contains(&lower(t).as_str()))
    {
        return Err(ConfigError::invalid(
            field,
            format!("`{bad}` cannot be allowed: it runs code or changes how the rest is parsed"),
        ));
    }
    if let Some(bad) = clean
        .tags
        .iter()
        .chain(clean.tag_attributes.keys())
        .find(|t| t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(ConfigError::invalid(
            field,
            format!("`{bad}` is not a tag name"),
        ));
    }
    let attributes = clean
        .generic_attributes
        .iter()
        .chain(clean.tag_attributes.values().flatten());
    for attribute in attributes {
        let name = lower(attribute);
        if name.starts_with("on") || matches!(name.as_str(), "style" | "srcdoc" | "formaction") {
            return Err(ConfigError::invalid(
                field,
                format!("the attribute `{attribute}` cannot be allowed: it runs code or styles"),
            ));
        }
        if name == "rel" && clean.link_rel.is_some() {
            return Err(ConfigError::invalid(
                field,
                "`rel` cannot be allowed while `link_rel` sets it on every link",
            ));
        }
    }
    if let Some(bad) = clean.url_schemes.iter().find(|s| {
        matches!(
            lower(s).as_str(),
            "javascript" | "vbscript" | "data" | "file"
        )
    }) {
        return Err(ConfigError::invalid(
            field,
            format!("the URL scheme `{bad}` cannot be allowed"),
        ));
    }
    Ok(())
}

/// Keeps user text safe to show to other users; see the [module docs](super).
///
/// # Example
/// ```
/// use tower_ws_guard::SanitizeLayer;
/// use tower_ws_guard::sanitize::{SanitizeConfig, SanitizeMode};
///
/// let layer = SanitizeLayer::from_config(
///     &SanitizeConfig::json(&["/content"]).mode(SanitizeMode::Clean),
/// )?;
/// # Ok::<(), tower_ws_guard::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct SanitizeLayer {
    pub(super) sanitizer: Arc<Sanitizer>,
}

impl SanitizeLayer {
    /// Escape mode on plain text, every other setting at its default.
    pub fn new() -> Self {
        Self::from_config(&SanitizeConfig::default())
            .unwrap_or_else(|_| unreachable!("the default config is valid"))
    }

    /// Builds the layer from its config section.
    ///
    /// # Errors
    /// A zero size, depth or character limit; JSON format without fields (or with both
    /// fields and `json_all_strings`); a field that is not a JSON Pointer; in clean mode, an
    /// allowlist naming a tag, attribute or URL scheme that runs code (`script`, `on*`,
    /// `javascript:` …) or allowing `rel` while `link_rel` is set.
    pub fn from_config(config: &SanitizeConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            sanitizer: Arc::new(config.build()?),
        })
    }
}

impl Default for SanitizeLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for SanitizeLayer {
    type Service = Sanitize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Sanitize::new(inner, self.sanitizer.clone())
    }
}
