//! The broker's TLS (rustls with ring): a certificate chain and key from PEM files, so pods
//! that trust its CA (their init-data's `kbs_cert`) know they talk to this broker and not to
//! the host relaying their traffic.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::BrokerError;

/// An acceptor presenting `chain_pem` (leaf first) with `key_pem`.
pub fn acceptor(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<tokio_rustls::TlsAcceptor, BrokerError> {
    let bad = |what: &str, err: &dyn std::fmt::Display| {
        BrokerError::BadRequest(format!("the TLS {what}: {err}"))
    };
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad("certificate", &err))?;
    if chain.is_empty() {
        return Err(bad("certificate", &"no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| bad("key", &err))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| bad("configuration", &err))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| bad("certificate and key", &err))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
