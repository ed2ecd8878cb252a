//! Sealed secrets in Confidential Containers' form: `sealed.<header>.<payload>.<signature>`, a
//! JWS whose payload names the resource that holds the real value
//! (`{"version":"0.1.0","type":"vault","name":"kbs:///repo/type/tag","provider":"kbs",...}`).
//! The host only ever holds this reference; the guest replaces it with the resource the broker
//! releases after attestation. The signature is not what protects the value: whatever the
//! host writes, the guest gets only resources the broker's policy grants this attested pod, so
//! a forged reference can at most ask for another of the pod's own resources.

use serde::Deserialize;

use crate::resource::{ResourceUri, ResourceUriError};

pub const PREFIX: &str = "sealed.";

#[derive(Debug, thiserror::Error)]
pub enum SealedError {
    #[error("a sealed secret has four dot-separated parts (sealed.<header>.<payload>.<signature>); this one has {0}")]
    Parts(usize),
    #[error("the sealed secret's payload is not base64url JSON: {0}")]
    Payload(String),
    #[error("sealed secret version {0:?} is not supported (0.1.0)")]
    Version(String),
    #[error(
        "sealed secret type {0:?} is not supported: only \"vault\" (a resource of the key broker)"
    )]
    Type(String),
    #[error("sealed secret provider {0:?} is not supported: only \"kbs\"")]
    Provider(String),
    #[error(transparent)]
    Name(#[from] ResourceUriError),
}

#[derive(Debug, Deserialize)]
struct Payload {
    version: String,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default)]
    provider: Option<String>,
}

/// Whether `value` is in sealed form (and so must be unsealed, or the container refused).
pub fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(PREFIX.as_bytes())
}

/// The resource a sealed secret names.
pub fn resource_of(sealed: &str) -> Result<ResourceUri, SealedError> {
    let sealed = sealed.trim_end_matches(['\n', '\r']);
    let parts: Vec<&str> = sealed.split('.').collect();
    if parts.len() != 4 || parts[0] != "sealed" {
        return Err(SealedError::Parts(parts.len()));
    }
    let payload =
        crate::from_b64url(parts[2]).map_err(|err| SealedError::Payload(err.to_string()))?;
    let payload: Payload =
        serde_json::from_slice(&payload).map_err(|err| SealedError::Payload(err.to_string()))?;
    if payload.version != "0.1.0" {
        return Err(SealedError::Version(payload.version));
    }
    if payload.kind != "vault" {
        return Err(SealedError::Type(payload.kind));
    }
    if let Some(provider) = payload.provider.filter(|p| p != "kbs") {
        return Err(SealedError::Provider(provider));
    }
    Ok(ResourceUri::parse(&payload.name)?)
}

/// A sealed reference to `uri` (for tools and tests: the form `cloak kbs seal` prints).
pub fn seal(uri: &ResourceUri) -> String {
    let header = crate::b64url(br#"{"alg":"none","typ":"JWS"}"#);
    let payload = serde_json::json!({
        "version": "0.1.0",
        "type": "vault",
        "name": format!("kbs:///{uri}"),
        "provider": "kbs",
        "provider_settings": {},
        "annotations": {},
    });
    let payload = crate::b64url(payload.to_string().as_bytes());
    format!("{PREFIX}{header}.{payload}.{}", crate::b64url(b"unsigned"))
}
