use std::sync::Arc;

use serde::Deserialize;
use tower_layer::Layer;

use super::service::Sanitize;
use super::text::Checks;
use crate::config::ConfigError;

/// What is done to markup in user text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SanitizeMode {
    /// `& < > " '` are escaped as HTML entities, each exactly once: every character the
    /// user typed survives and renders as typed (`a<b` stays readable).
    #[default]
    Escape,
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
    /// (JSON Pointers) are user content.
    Json,
}

/// The default maximum message size: 64 KiB.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// The `[sanitize]` section of [`GuardConfig`](crate::GuardConfig).
///
/// ```toml
/// [sanitize]
/// mode = "escape"
/// format = "json"
/// json_fields = ["/content"]
/// max_bytes = 65536
/// reject_control = true
/// reject_bidi = true
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
    /// Largest message accepted, in bytes (default 64 KiB); larger closes with 1009.
    pub max_bytes: usize,
    /// Refuse C0/C1 control characters other than tab, LF and CR (default on).
    pub reject_control: bool,
    /// Refuse bidi embedding, override and isolate controls (default on).
    pub reject_bidi: bool,
}

impl Default for SanitizeConfig {
    fn default() -> Self {
        Self {
            mode: SanitizeMode::Escape,
            format: MessageFormat::Text,
            json_fields: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
            reject_control: true,
            reject_bidi: true,
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

    /// Checks the section without building a layer.
    ///
    /// # Errors
    /// See [`SanitizeLayer::from_config`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        SanitizeLayer::from_config(self).map(|_| ())
    }
}

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) format: MessageFormat,
    pub(crate) json_fields: Vec<String>,
    pub(crate) max_bytes: usize,
    pub(crate) checks: Checks,
}

/// Escapes markup in user text and refuses oversized or hostile text.
///
/// Text messages over `max_bytes` close the connection with 1009; control and bidi
/// override characters get an `invalid_message` error frame; `& < > " '` are escaped.
/// A message that needs no change is passed on without copying. Binary and control
/// messages pass untouched.
///
/// # Example
/// ```
/// use tower_ws_guard::SanitizeLayer;
/// use tower_ws_guard::sanitize::SanitizeConfig;
///
/// let layer = SanitizeLayer::from_config(&SanitizeConfig::json(&["/content"]))?;
/// # Ok::<(), tower_ws_guard::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct SanitizeLayer {
    settings: Arc<Settings>,
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
    /// A zero `max_bytes`; JSON format without fields; a field that is not a JSON Pointer.
    pub fn from_config(config: &SanitizeConfig) -> Result<Self, ConfigError> {
        if config.max_bytes == 0 {
            return Err(ConfigError::invalid(
                "sanitize.max_bytes",
                "must be above zero",
            ));
        }
        match config.format {
            MessageFormat::Json if config.json_fields.is_empty() => {
                return Err(ConfigError::invalid(
                    "sanitize.json_fields",
                    "format \"json\" needs at least one field (a JSON Pointer such as \"/content\")",
                ));
            }
            _ => {}
        }
        if let Some(bad) = config.json_fields.iter().find(|p| !p.starts_with('/')) {
            return Err(ConfigError::invalid(
                "sanitize.json_fields",
                format!("`{bad}` is not a JSON Pointer (it must start with '/')"),
            ));
        }
        Ok(Self {
            settings: Arc::new(Settings {
                format: config.format,
                json_fields: config.json_fields.clone(),
                max_bytes: config.max_bytes,
                checks: Checks {
                    control: config.reject_control,
                    bidi: config.reject_bidi,
                },
            }),
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
        Sanitize::new(inner, self.settings.clone())
    }
}
