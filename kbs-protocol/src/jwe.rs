//! The JWE a resource travels in (RFC 7516, flattened JSON serialization): the broker wraps a
//! fresh content key to the guest's ephemeral P-256 key with ECDH-ES+A256KW (RFC 7518 §4.6:
//! ECDH with an ephemeral key of its own, Concat KDF, AES key wrap) and encrypts the resource
//! with A256GCM. Only the guest, holding the private half generated inside the TEE and bound
//! into its report, can unwrap it; a host relaying the answer sees ciphertext.
//!
//! The AAD is the protected header exactly as it arrived (its base64url text), never a
//! re-serialization, so any header change breaks the tag. Trustee writes that same text into an
//! `aad` member; a member holding anything else is RFC 7516's extra AAD.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use kbs_types::TeePubKey;
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use p256::{EncodedPoint, PublicKey, SecretKey};
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{b64url, from_b64url};

/// The key agreement the guest's key is for.
pub const KEY_ALGORITHM: &str = "ECDH-ES+A256KW";
/// ECDH-ES without key wrap (the derived key is the content key); accepted when decrypting.
pub const DIRECT_KEY_ALGORITHM: &str = "ECDH-ES";
pub const CONTENT_ALGORITHM: &str = "A256GCM";
pub const CURVE: &str = "P-256";

const CONTENT_KEY_BYTES: usize = 32;
const IV_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum JweError {
    #[error("the JWE is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the JWE has no {0} member")]
    Missing(&'static str),
    #[error("the JWE's {0} is not base64url")]
    Encoding(&'static str),
    #[error("key algorithm {0:?} is not supported (only {KEY_ALGORITHM} and {DIRECT_KEY_ALGORITHM} with {CURVE})")]
    KeyAlgorithm(String),
    #[error("content algorithm {0:?} is not supported (only {CONTENT_ALGORITHM})")]
    ContentAlgorithm(String),
    #[error("the key is not a {CURVE} point: {0}")]
    Key(String),
    #[error("the content key does not unwrap: the JWE was made for another key or altered")]
    Unwrap,
    #[error("the {what} is {got} bytes; expected {expected}")]
    Length {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("the ciphertext does not authenticate: altered, or made for another key")]
    Decrypt,
    #[error("encrypting: {0}")]
    Encrypt(String),
}

/// The guest's ephemeral key pair: generated in the TEE for one attestation, its public half
/// goes into the runtime data (and so into REPORT_DATA), the private half never leaves.
pub struct TeeKeyPair {
    secret: SecretKey,
}

impl std::fmt::Debug for TeeKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TeeKeyPair(P-256, private half hidden)")
    }
}

impl TeeKeyPair {
    pub fn generate() -> Self {
        Self {
            secret: SecretKey::random(&mut OsRng),
        }
    }

    /// From a private scalar (tests with published vectors).
    pub fn from_private_bytes(bytes: &[u8]) -> Result<Self, JweError> {
        SecretKey::from_slice(bytes)
            .map(|secret| Self { secret })
            .map_err(|err| JweError::Key(err.to_string()))
    }

    /// The public key as the protocol's `tee-pubkey` JWK.
    pub fn public_jwk(&self) -> TeePubKey {
        let point = self.secret.public_key().to_encoded_point(false);
        TeePubKey::EC {
            crv: CURVE.to_owned(),
            alg: KEY_ALGORITHM.to_owned(),
            x: b64url(point.x().map(|x| x.as_slice()).unwrap_or_default()),
            y: b64url(point.y().map(|y| y.as_slice()).unwrap_or_default()),
        }
    }

    /// Decrypts a broker's Response (the JWE's JSON text).
    pub fn decrypt(&self, jwe: &[u8]) -> Result<Vec<u8>, JweError> {
        let jwe: Value = serde_json::from_slice(jwe)?;
        let member = |name: &'static str| {
            jwe.get(name)
                .and_then(Value::as_str)
                .ok_or(JweError::Missing(name))
        };
        let decoded = |name: &'static str| {
            member(name).and_then(|text| from_b64url(text).map_err(|_| JweError::Encoding(name)))
        };
        let protected_text = member("protected")?;
        // The JOSE header is the union of the protected header, the shared unprotected one
        // and the recipient's (RFC 7516 §7.2.1; jwcrypto puts `epk` in the latter).
        let mut header: Value = serde_json::from_slice(&decoded("protected")?)?;
        for unprotected in ["unprotected", "header"] {
            if let (Some(extra), Some(merged)) = (
                jwe.get(unprotected).and_then(Value::as_object),
                header.as_object_mut(),
            ) {
                for (name, value) in extra {
                    merged.entry(name.clone()).or_insert_with(|| value.clone());
                }
            }
        }
        let field = |name: &str| header.get(name).and_then(Value::as_str).unwrap_or_default();
        let algorithm = field("alg");
        let content = field("enc");
        if content != CONTENT_ALGORITHM {
            return Err(JweError::ContentAlgorithm(content.to_owned()));
        }
        let epk = header
            .get("epk")
            .ok_or(JweError::Missing("protected epk"))?;
        let party = |name: &'static str| match header.get(name).and_then(Value::as_str) {
            Some(text) => from_b64url(text).map_err(|_| JweError::Encoding(name)),
            None => Ok(Vec::new()),
        };
        let (apu, apv) = (party("apu")?, party("apv")?);
        let shared = self.agree(&public_key_of(epk)?);
        let content_key = match algorithm {
            KEY_ALGORITHM => {
                let kek = concat_kdf(&shared, KEY_ALGORITHM, &apu, &apv, 256);
                let wrapped = decoded("encrypted_key")?;
                let kek: [u8; 32] = kek.try_into().map_err(|_| JweError::Unwrap)?;
                aes_kw::KekAes256::from(kek)
                    .unwrap_vec(&wrapped)
                    .map_err(|_| JweError::Unwrap)?
            }
            DIRECT_KEY_ALGORITHM => concat_kdf(&shared, CONTENT_ALGORITHM, &apu, &apv, 256),
            other => return Err(JweError::KeyAlgorithm(other.to_owned())),
        };
        let iv = exact("iv", decoded("iv")?, IV_BYTES)?;
        let tag = exact("tag", decoded("tag")?, TAG_BYTES)?;
        let aad = match jwe.get("aad").and_then(Value::as_str) {
            None => protected_text.to_owned(),
            Some(aad) if aad == protected_text => aad.to_owned(),
            Some(aad) => format!("{protected_text}.{aad}"),
        };
        let mut buffer = decoded("ciphertext")?;
        let cipher = Aes256Gcm::new_from_slice(&content_key).map_err(|_| JweError::Length {
            what: "content key",
            got: content_key.len(),
            expected: CONTENT_KEY_BYTES,
        })?;
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&iv),
                aad.as_bytes(),
                &mut buffer,
                Tag::from_slice(&tag),
            )
            .map_err(|_| JweError::Decrypt)?;
        Ok(buffer)
    }

    /// The ECDH shared secret (x coordinate) with the point (`x`, `y`).
    pub fn shared_secret_with(&self, x: &[u8], y: &[u8]) -> Result<Vec<u8>, JweError> {
        let public = public_key_from_coordinates(&b64url(x), &b64url(y))?;
        Ok(self.agree(&public))
    }

    /// The key pair as a private JWK, for the cross-check with another JOSE implementation.
    #[cfg(test)]
    pub(crate) fn private_jwk_for_tests(&self) -> Value {
        let point = self.secret.public_key().to_encoded_point(false);
        json!({
            "kty": "EC",
            "crv": CURVE,
            "x": b64url(point.x().map(|x| x.as_slice()).unwrap_or_default()),
            "y": b64url(point.y().map(|y| y.as_slice()).unwrap_or_default()),
            "d": b64url(&self.secret.to_bytes()),
        })
    }

    fn agree(&self, public: &PublicKey) -> Vec<u8> {
        p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), public.as_affine())
            .raw_secret_bytes()
            .to_vec()
    }
}

fn exact(what: &'static str, bytes: Vec<u8>, expected: usize) -> Result<Vec<u8>, JweError> {
    if bytes.len() == expected {
        Ok(bytes)
    } else {
        Err(JweError::Length {
            what,
            got: bytes.len(),
            expected,
        })
    }
}

/// A P-256 public key from JWK members (`kty` EC, `crv` P-256, `x`, `y`).
fn public_key_of(jwk: &Value) -> Result<PublicKey, JweError> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str).unwrap_or_default();
    if member("kty") != "EC" || member("crv") != CURVE {
        return Err(JweError::Key(format!(
            "kty {:?} crv {:?}",
            member("kty"),
            member("crv")
        )));
    }
    public_key_from_coordinates(member("x"), member("y"))
}

fn public_key_from_coordinates(x: &str, y: &str) -> Result<PublicKey, JweError> {
    let x = from_b64url(x).map_err(|_| JweError::Encoding("key x"))?;
    let y = from_b64url(y).map_err(|_| JweError::Encoding("key y"))?;
    if x.len() != 32 || y.len() != 32 {
        return Err(JweError::Key("coordinates are not 32 bytes".to_owned()));
    }
    let point = EncodedPoint::from_affine_coordinates(
        p256::FieldBytes::from_slice(&x),
        p256::FieldBytes::from_slice(&y),
        false,
    );
    Option::from(PublicKey::from_encoded_point(&point))
        .ok_or_else(|| JweError::Key("the point is not on the curve".to_owned()))
}

/// The Concat KDF of NIST SP 800-56A as RFC 7518 §4.6.2 uses it (SHA-256; AlgorithmID, PartyU
/// and PartyV info length-prefixed; SuppPubInfo the key length in bits).
pub fn concat_kdf(shared: &[u8], algorithm: &str, apu: &[u8], apv: &[u8], bits: u32) -> Vec<u8> {
    let prefixed = |bytes: &[u8]| {
        let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    };
    let mut other_info = prefixed(algorithm.as_bytes());
    other_info.extend(prefixed(apu));
    other_info.extend(prefixed(apv));
    other_info.extend_from_slice(&bits.to_be_bytes());
    let wanted = (bits / 8) as usize;
    let mut out = Vec::with_capacity(wanted + 32);
    let mut counter = 1u32;
    while out.len() < wanted {
        let mut hasher = Sha256::new();
        hasher.update(counter.to_be_bytes());
        hasher.update(shared);
        hasher.update(&other_info);
        out.extend_from_slice(&hasher.finalize());
        counter += 1;
    }
    out.truncate(wanted);
    out
}

/// Encrypts `plaintext` to the guest key `recipient` (ECDH-ES+A256KW, A256GCM): the broker's
/// Response, as JSON.
pub fn encrypt(recipient: &TeePubKey, plaintext: &[u8]) -> Result<Value, JweError> {
    let TeePubKey::EC { crv, alg, x, y } = recipient else {
        return Err(JweError::KeyAlgorithm(
            "a non-EC tee-pubkey (RSA keys are not accepted)".to_owned(),
        ));
    };
    if alg != KEY_ALGORITHM || crv != CURVE {
        return Err(JweError::KeyAlgorithm(format!("{alg} on {crv}")));
    }
    let recipient = public_key_from_coordinates(x, y)?;
    let ephemeral = SecretKey::random(&mut OsRng);
    let shared = p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), recipient.as_affine());
    let kek = concat_kdf(shared.raw_secret_bytes(), KEY_ALGORITHM, &[], &[], 256);
    let kek: [u8; 32] = kek
        .try_into()
        .map_err(|_| JweError::Encrypt("key derivation".to_owned()))?;
    let mut content_key = [0u8; CONTENT_KEY_BYTES];
    OsRng.fill_bytes(&mut content_key);
    let wrapped = aes_kw::KekAes256::from(kek)
        .wrap_vec(&content_key)
        .map_err(|err| JweError::Encrypt(err.to_string()))?;
    let point = ephemeral.public_key().to_encoded_point(false);
    let header = json!({
        "alg": KEY_ALGORITHM,
        "enc": CONTENT_ALGORITHM,
        "epk": {
            "kty": "EC",
            "crv": CURVE,
            "x": b64url(point.x().map(|x| x.as_slice()).unwrap_or_default()),
            "y": b64url(point.y().map(|y| y.as_slice()).unwrap_or_default()),
        },
    });
    let protected = b64url(&serde_json::to_vec(&header)?);
    let mut iv = [0u8; IV_BYTES];
    OsRng.fill_bytes(&mut iv);
    let mut buffer = plaintext.to_vec();
    let tag = Aes256Gcm::new_from_slice(&content_key)
        .map_err(|err| JweError::Encrypt(err.to_string()))?
        .encrypt_in_place_detached(Nonce::from_slice(&iv), protected.as_bytes(), &mut buffer)
        .map_err(|err| JweError::Encrypt(err.to_string()))?;
    Ok(json!({
        "protected": protected,
        "encrypted_key": b64url(&wrapped),
        "iv": b64url(&iv),
        "ciphertext": b64url(&buffer),
        "tag": b64url(&tag),
    }))
}
