//! The application's own check of verified claims: refused is 403 `insufficient_scope`.

use std::borrow::Cow;

use super::claims::Claims;

/// Decides whether verified claims may connect, beyond signature and time: a role, a scope,
/// a tenant. A refusal is answered 403 with `error="insufficient_scope"` (or 4403 in-band).
///
/// Implemented for closures `Fn(&Claims<C>) -> bool`.
pub trait ClaimsCheck<C>: Send + Sync + 'static {
    /// `Err` with a short reason (shown to the client) to refuse.
    ///
    /// # Errors
    /// The claims are not allowed to connect.
    fn check(&self, claims: &Claims<C>) -> Result<(), Cow<'static, str>>;
}

/// The default check: every verified token may connect.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl<C> ClaimsCheck<C> for AllowAll {
    fn check(&self, _claims: &Claims<C>) -> Result<(), Cow<'static, str>> {
        Ok(())
    }
}

impl<C, F> ClaimsCheck<C> for F
where
    F: Fn(&Claims<C>) -> bool + Send + Sync + 'static,
{
    fn check(&self, claims: &Claims<C>) -> Result<(), Cow<'static, str>> {
        if self(claims) {
            Ok(())
        } else {
            Err(Cow::Borrowed("the token does not allow this"))
        }
    }
}
