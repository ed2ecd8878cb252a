//! The attestation results token `/kbs/v0/attest` answers with (a JWT, ES256, by a key the
//! broker makes at start): the verified claims and the guest's key, for relying parties that
//! trust this broker. The broker itself serves resources by session cookie.

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use rand_core::OsRng;
use serde_json::json;

use cloak_kbs_protocol::b64url;

pub(crate) struct TokenKey {
    key: SigningKey,
}

impl TokenKey {
    pub(crate) fn generate() -> Self {
        Self {
            key: SigningKey::random(&mut OsRng),
        }
    }

    /// A token over `claims` valid for `ttl_seconds`, with the public key (`jwk`) to check it.
    pub(crate) fn issue(&self, claims: serde_json::Value, ttl_seconds: u64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let point = self.key.verifying_key().to_encoded_point(false);
        let header = json!({"alg": "ES256", "typ": "JWT"});
        let mut payload = json!({
            "iss": "cloak-kbs",
            "iat": now,
            "exp": now + ttl_seconds,
            "jwk": {
                "kty": "EC",
                "crv": "P-256",
                "x": b64url(point.x().map(|x| x.as_slice()).unwrap_or_default()),
                "y": b64url(point.y().map(|y| y.as_slice()).unwrap_or_default()),
            },
        });
        if let (Some(payload), Some(claims)) = (payload.as_object_mut(), claims.as_object()) {
            payload.extend(claims.clone());
        }
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(payload.to_string().as_bytes())
        );
        let signature: Signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64url(&signature.to_bytes()))
    }
}
