//! Config parsing on arbitrary TOML and environment overrides: no panic; a config that
//! parses either builds its layers or says why not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_ws_guard::GuardConfig;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // After a 0xFF-free line `---`, each `KEY=VALUE` line is an environment override.
    let (toml, env) = text.split_once("\n---\n").unwrap_or((&text, ""));
    let vars = env.lines().filter_map(|line| {
        let (key, value) = line.split_once('=')?;
        Some((format!("WS_GUARD__{key}"), value.to_owned()))
    });
    if let Ok(config) = GuardConfig::from_toml_with_env(toml, vars) {
        let _ = format!("{config:?}");
        let _ = config.layers();
    }
});
