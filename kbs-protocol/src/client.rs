//! The guest's side of the protocol: authenticate (`/kbs/v0/auth` → nonce and session
//! cookie), attest (`/kbs/v0/attest`: runtime data {nonce, ephemeral key} bound into the
//! report's REPORT_DATA, the report, the init-data in plain text) and fetch resources
//! (`/kbs/v0/resource/...` → a JWE only the ephemeral key opens). The report comes from a
//! closure, so the same client serves SNP, the simulated TEE and tests.

use std::future::Future;

use kbs_types::{Attestation, Challenge, CompositeEvidence, InitData, Request, RuntimeData};
use serde_json::json;

use crate::evidence::{SnpEvidence, TEE};
use crate::http::{self, Endpoint, HttpError};
use crate::jwe::{JweError, TeeKeyPair};
use crate::resource::ResourceUri;
use crate::{binding, PROTOCOL_VERSION, SESSION_COOKIE, SIMULATED_HEADER};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the key broker refused {step} ({status}): {detail}")]
    Refused {
        step: &'static str,
        status: u16,
        detail: String,
    },
    #[error("the key broker's answer to {step} is malformed: {reason}")]
    Malformed { step: &'static str, reason: String },
    #[error("getting this VM's report: {0}")]
    Evidence(String),
    #[error(transparent)]
    Binding(#[from] binding::BindingError),
    #[error("resource {uri}: {source}")]
    Jwe { uri: String, source: JweError },
}

/// A broker's address (from the pod's measured init-data).
#[derive(Debug, Clone)]
pub struct KbsClient {
    endpoint: Endpoint,
}

/// An attested session: the cookie that names it and the key resources are wrapped to.
#[derive(Debug)]
pub struct Session {
    cookie: String,
    keys: TeeKeyPair,
    /// The attestation results token the broker returned, if any.
    pub token: Option<String>,
    /// The broker said it accepts simulated TEEs: nothing it releases is protected.
    pub simulated: bool,
}

impl KbsClient {
    /// The broker at `url`; an `https://` one is trusted only if its certificate chains to
    /// `ca_pem`.
    pub fn new(url: &str, ca_pem: Option<&str>) -> Result<Self, ClientError> {
        Ok(Self {
            endpoint: Endpoint::with_ca(url, ca_pem)?,
        })
    }

    /// Authenticates and attests with a fresh ephemeral key; `evidence` turns the REPORT_DATA
    /// binding that key and the broker's nonce into this VM's evidence.
    pub async fn attest<F, Fut>(
        &self,
        init_data: Option<&str>,
        evidence: F,
    ) -> Result<Session, ClientError>
    where
        F: FnOnce([u8; binding::REPORT_DATA_BYTES]) -> Fut,
        Fut: Future<Output = Result<SnpEvidence, String>>,
    {
        let request = Request {
            version: PROTOCOL_VERSION.to_owned(),
            tee: TEE,
            extra_params: json!({}),
        };
        let body = serde_json::to_vec(&request).map_err(|err| malformed("auth", err))?;
        let answer = http::request(&self.endpoint, "POST", "/kbs/v0/auth", &[], &body).await?;
        refused_unless_ok("auth", &answer)?;
        let cookie = session_cookie(&answer).ok_or_else(|| ClientError::Malformed {
            step: "auth",
            reason: format!("no {SESSION_COOKIE} cookie"),
        })?;
        let challenge: Challenge =
            serde_json::from_slice(&answer.body).map_err(|err| malformed("auth", err))?;

        let keys = TeeKeyPair::generate();
        let runtime_data = RuntimeData {
            nonce: challenge.nonce,
            tee_pubkey: keys.public_jwk(),
        };
        let report_data = binding::report_data_for(&runtime_data)?;
        let evidence = evidence(report_data).await.map_err(ClientError::Evidence)?;
        let attestation = Attestation {
            init_data: init_data.map(|body| InitData {
                format: "toml".to_owned(),
                body: body.to_owned(),
            }),
            runtime_data,
            tee_evidence: CompositeEvidence {
                primary_evidence: serde_json::to_value(&evidence)
                    .map_err(|err| malformed("attest", err))?,
                additional_evidence: String::new(),
            },
        };
        let body = serde_json::to_vec(&attestation).map_err(|err| malformed("attest", err))?;
        let cookie_header = format!("{SESSION_COOKIE}={cookie}");
        let answer = http::request(
            &self.endpoint,
            "POST",
            "/kbs/v0/attest",
            &[("Cookie", &cookie_header)],
            &body,
        )
        .await?;
        refused_unless_ok("attest", &answer)?;
        let token = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|value| value.get("token")?.as_str().map(str::to_owned));
        let simulated = answer.header(SIMULATED_HEADER).next().is_some();
        Ok(Session {
            cookie,
            keys,
            token,
            simulated,
        })
    }

    /// One resource of an attested session, decrypted in the guest.
    pub async fn resource(
        &self,
        session: &Session,
        uri: &ResourceUri,
    ) -> Result<Vec<u8>, ClientError> {
        let cookie_header = format!("{SESSION_COOKIE}={}", session.cookie);
        let answer = http::request(
            &self.endpoint,
            "GET",
            &uri.path(),
            &[("Cookie", &cookie_header)],
            &[],
        )
        .await?;
        refused_unless_ok("the resource", &answer).map_err(|err| match err {
            ClientError::Refused { status, detail, .. } => ClientError::Refused {
                step: "the resource",
                status,
                detail: format!("{uri}: {detail}"),
            },
            other => other,
        })?;
        session
            .keys
            .decrypt(&answer.body)
            .map_err(|source| ClientError::Jwe {
                uri: uri.to_string(),
                source,
            })
    }
}

fn malformed(step: &'static str, err: impl std::fmt::Display) -> ClientError {
    ClientError::Malformed {
        step,
        reason: err.to_string(),
    }
}

/// Anything but 200 is a refusal, with the broker's Problem Details `detail` when it gave one.
fn refused_unless_ok(step: &'static str, answer: &http::Response) -> Result<(), ClientError> {
    if answer.status == 200 {
        return Ok(());
    }
    let detail = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|value| value.get("detail")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&answer.body)
                .chars()
                .take(300)
                .collect()
        });
    Err(ClientError::Refused {
        step,
        status: answer.status,
        detail,
    })
}

/// The session id from `Set-Cookie: kbs-session-id=...; ...`.
pub fn session_cookie(answer: &http::Response) -> Option<String> {
    answer.header("set-cookie").find_map(|value| {
        let first = value.split(';').next()?.trim();
        let (name, id) = first.split_once('=')?;
        (name == SESSION_COOKIE && !id.is_empty()).then(|| id.to_owned())
    })
}
