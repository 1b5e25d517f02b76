//! What every fuzz target shares: one runtime, a call helper, the error codes.

#![allow(dead_code)]

use std::future::Future;
use std::sync::OnceLock;

/// Runs `future` to completion on a runtime kept for the whole fuzzing run.
pub fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime")
        })
        .block_on(future)
}

/// Every code a rejection may carry (README, "Rejections").
pub const CODES: &[&str] = &[
    "unauthenticated",
    "token_expired",
    "forbidden",
    "rate_limited",
    "message_too_large",
    "invalid_message",
    "empty_message",
    "auth_timeout",
];

/// Asserts that a rejection is one of ours with a documented code.
pub fn documented(error: &tower_ws_guard::BoxError) {
    let error = error
        .downcast_ref::<tower_ws_guard::GuardError>()
        .unwrap_or_else(|| panic!("not a GuardError: {error}"));
    assert!(
        CODES.contains(&error.code()),
        "undocumented code {}",
        error.code()
    );
}
