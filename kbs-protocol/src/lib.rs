//! The Key Broker Service attestation protocol of Confidential Containers' Trustee
//! (`kbs/docs/kbs_attestation_protocol.md`), shared by the guest that asks for secrets (the
//! agent) and the broker that releases them (`cloak kbs`), so both ends agree on every byte
//! that is hashed or encrypted: the canonical JSON of the runtime data and the REPORT_DATA it
//! becomes, the JWE a resource travels in, and the sealed-secret references containers carry.
//! The messages themselves are `kbs-types`' (Trustee's own crate).

pub mod binding;
pub mod canonical;
#[cfg(feature = "client")]
pub mod client;
pub mod evidence;
#[cfg(feature = "client")]
pub mod http;
pub mod jwe;
pub mod resource;
pub mod sealed;
#[cfg(test)]
mod tests;

pub use kbs_types;

/// The protocol version this side speaks (Trustee's KBS accepts requests up to its own).
pub const PROTOCOL_VERSION: &str = "0.4.0";

/// The cookie a broker keeps a session under.
pub const SESSION_COOKIE: &str = "kbs-session-id";

/// The header every answer of a broker that accepts simulated TEEs carries.
pub const SIMULATED_HEADER: &str = "cloak-kbs-simulated";

/// base64url without padding, as JOSE and the protocol write binary fields.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding (padding tolerated, as some peers add it).
pub fn from_b64url(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
}
