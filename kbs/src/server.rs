//! The broker's HTTP side (HTTP/1.1, hyper): the protocol's three routes, every refusal as
//! Problem Details with the status `BrokerError` gives it, and — when simulated TEEs are
//! accepted — a `cloak-kbs-simulated` header on every answer, so no client can miss it.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use kbs_types::Attestation;
use serde_json::json;

use cloak_kbs_protocol::resource::ResourceUri;
use cloak_kbs_protocol::{jwe, SESSION_COOKIE, SIMULATED_HEADER};

use crate::{appraise, resources, Broker, BrokerError};

const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Serves `listener` until it fails, over TLS with `tls`; each connection on a task of its
/// own.
pub async fn serve(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let broker = broker.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let broker = broker.clone();
                async move { Ok::<_, Infallible>(answer(&broker, request).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let served = match tls {
                None => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                    }
                    Err(err) => {
                        tracing::info!(%peer, error = %err, "key broker TLS handshake failed");
                        return;
                    }
                },
            };
            if let Err(err) = served {
                tracing::debug!(%peer, error = %err, "key broker connection ended");
            }
        });
    }
}

struct Reply {
    body: Vec<u8>,
    cookie: Option<String>,
}

async fn answer(broker: &Broker, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let result = route(broker, request).await;
    let mut builder = Response::builder().header("content-type", "application/json");
    if broker.config().allow_simulated {
        builder = builder.header(SIMULATED_HEADER, "true");
    }
    let response = match result {
        Ok(reply) => {
            if let Some(id) = reply.cookie {
                builder = builder.header(
                    "set-cookie",
                    format!(
                        "{SESSION_COOKIE}={id}; Max-Age={}; Path=/kbs/v0; HttpOnly",
                        broker.config().session_ttl.as_secs()
                    ),
                );
            }
            builder
                .status(StatusCode::OK)
                .body(Full::new(reply.body.into()))
        }
        Err(err) => {
            tracing::info!(%method, %path, status = err.status(), reason = %err, "key broker refused");
            let mut detail = err.to_string();
            if broker.config().allow_simulated {
                detail.push_str(" (this broker accepts SIMULATED TEEs)");
            }
            let problem = json!({
                "type": format!("https://github.com/confidential-containers/kbs/errors/{}", err.kind()),
                "detail": detail,
            });
            builder
                .status(
                    StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                )
                .header("content-type", "application/problem+json")
                .body(Full::new(problem.to_string().into()))
        }
    };
    response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn route(broker: &Broker, request: Request<Incoming>) -> Result<Reply, BrokerError> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let cookie = session_of(&request);
    let body = Limited::new(request.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|err| BrokerError::BadRequest(format!("reading the request: {err}")))?
        .to_bytes();
    match (method, path.as_str()) {
        (Method::POST, "/kbs/v0/auth") => auth(broker, &body),
        (Method::POST, "/kbs/v0/attest") => attest(broker, cookie, &body),
        (Method::GET, path) if path.starts_with("/kbs/v0/resource/") => {
            let uri = ResourceUri::from_path(path, &path["/kbs/v0/resource/".len()..])
                .map_err(|err| BrokerError::BadRequest(err.to_string()))?;
            resource(broker, cookie, &uri)
        }
        (method, path) => Err(BrokerError::NotFound(format!("no route {method} {path}"))),
    }
}

fn session_of(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get_all("cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then(|| value.to_owned())
        })
}

fn auth(broker: &Broker, body: &[u8]) -> Result<Reply, BrokerError> {
    let request: kbs_types::Request = serde_json::from_slice(body)
        .map_err(|err| BrokerError::BadRequest(format!("the Request: {err}")))?;
    if !request.version.starts_with("0.") {
        return Err(BrokerError::Unauthorized(format!(
            "protocol version {} is not supported (0.x)",
            request.version
        )));
    }
    if request.tee != kbs_types::Tee::Snp {
        return Err(BrokerError::Unauthorized(format!(
            "TEE {:?} is not supported: this broker verifies SEV-SNP reports",
            request.tee
        )));
    }
    let (id, nonce) = broker.sessions.challenge();
    let challenge = kbs_types::Challenge {
        nonce,
        extra_params: json!({}),
    };
    Ok(Reply {
        body: serde_json::to_vec(&challenge).map_err(internal)?,
        cookie: Some(id),
    })
}

fn attest(broker: &Broker, cookie: Option<String>, body: &[u8]) -> Result<Reply, BrokerError> {
    let id = cookie.ok_or_else(|| {
        BrokerError::Unauthorized(format!("no {SESSION_COOKIE} cookie: authenticate first"))
    })?;
    // Taken before anything is checked: a failed attempt spends the challenge too.
    let nonce = broker.sessions.take_nonce(&id)?;
    let attestation: Attestation = serde_json::from_slice(body)
        .map_err(|err| BrokerError::BadRequest(format!("the Attestation: {err}")))?;
    let claims = appraise::appraise(broker.config(), &nonce, &attestation)?;
    tracing::info!(
        measurement = %claims.measurement,
        host_data = %claims.host_data,
        simulated = claims.simulated,
        "key broker: attestation verified"
    );
    let token_claims = json!({
        "tee-pubkey": attestation.runtime_data.tee_pubkey,
        "claims": claims,
    });
    let token = broker
        .token_key
        .issue(token_claims, broker.config().session_ttl.as_secs());
    broker
        .sessions
        .attested(&id, claims, attestation.runtime_data.tee_pubkey);
    Ok(Reply {
        body: serde_json::to_vec(&json!({ "token": token })).map_err(internal)?,
        cookie: Some(id),
    })
}

fn resource(
    broker: &Broker,
    cookie: Option<String>,
    uri: &ResourceUri,
) -> Result<Reply, BrokerError> {
    let id = cookie.ok_or_else(|| {
        BrokerError::Unauthorized(format!("no {SESSION_COOKIE} cookie: attest first"))
    })?;
    let (claims, key) = broker.sessions.of(&id)?;
    broker.policy.grant(&claims, uri)?;
    let plaintext = resources::read(&broker.config().resources_dir, uri)?;
    let response = jwe::encrypt(&key, &plaintext)
        .map_err(|err| BrokerError::BadRequest(format!("wrapping to the tee-pubkey: {err}")))?;
    tracing::info!(resource = %uri, measurement = %claims.measurement, "key broker released a resource");
    Ok(Reply {
        body: serde_json::to_vec(&response).map_err(internal)?,
        cookie: None,
    })
}

fn internal(err: impl std::fmt::Display) -> BrokerError {
    BrokerError::Internal(err.to_string())
}
