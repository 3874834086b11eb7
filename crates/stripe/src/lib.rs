//! Stripe as seen from outside: the pieces of Stripe's wire protocol that both the Tollgate
//! client and the sandbox need (webhook signatures, form encoding, TLS setup), and the HTTP
//! client Tollgate calls Stripe with ([`client::StripeClient`]). Being the one crate of Tollgate's
//! that the sandbox and the server both use, it also holds what they share: the retry schedule
//! ([`backoff`]) and the HTML escaper ([`html`]).
//!
//! It knows nothing of Tollgate's domain.

pub mod backoff;
pub mod client;
pub mod form;
pub mod html;
pub mod signature;

/// Installs rustls' ring provider as the process default (once).
///
/// reqwest is built with `rustls-no-provider` so that only ring is compiled (no aws-lc); a
/// client built before a provider is installed panics, so every crate that builds a client calls
/// this first. Calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
