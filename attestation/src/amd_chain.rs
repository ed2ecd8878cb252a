//! The AMD certificate chain above a report's signing key. A VCEK is signed by its product
//! line's ASK, a VLEK (a cloud provider's key) by the line's ASVK; both intermediates are
//! signed by the line's self-signed ARK. The chain comes either from AMD's roots built in
//! (the `sev` crate's ARKs and ASKs, and the ASVKs of `amd-roots/`) or from a PEM bundle the
//! relying party gives: AMD's KDS and Trustee hand out bundles with the ASK, the ARK and the
//! ASVK in whatever order, so a bundle is searched by signature, not read by position, and
//! the verdict says which of its certificates were used.

use openssl::x509::X509;
use sev::certs::snp::builtin;

use crate::report::{Product, SigningKey};

const MILAN_ASVK: &[u8] = include_bytes!("../amd-roots/milan-asvk.pem");
const GENOA_ASVK: &[u8] = include_bytes!("../amd-roots/genoa-asvk.pem");
const TURIN_ASVK: &[u8] = include_bytes!("../amd-roots/turin-asvk.pem");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("not a DER or PEM certificate: {0}")]
    Certificate(String),
    #[error("the bundle holds no PEM certificate")]
    EmptyBundle,
    #[error("reading the bundle: {0}")]
    Bundle(String),
    #[error("a built-in AMD certificate does not parse: {0}")]
    BuiltIn(String),
}

/// A certificate and what the verdict names it by.
#[derive(Clone)]
pub struct Cert {
    pub x509: X509,
    pub der: Vec<u8>,
    pub common_name: String,
}

impl std::fmt::Debug for Cert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cert({})", self.common_name)
    }
}

impl Cert {
    pub fn from_x509(x509: X509) -> Result<Self, ChainError> {
        let der = x509
            .to_der()
            .map_err(|err| ChainError::Certificate(err.to_string()))?;
        let common_name = x509
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()
            .map(|entry| String::from_utf8_lossy(entry.data().as_slice()).into_owned())
            .unwrap_or_else(|| "(no common name)".to_owned());
        Ok(Self {
            x509,
            der,
            common_name,
        })
    }

    /// One certificate, DER or PEM.
    pub fn parse(bytes: &[u8]) -> Result<Self, ChainError> {
        let x509 = if bytes.starts_with(b"-----") || bytes.trim_ascii_start().starts_with(b"-----")
        {
            X509::from_pem(bytes)
        } else {
            X509::from_der(bytes)
        }
        .map_err(|err| ChainError::Certificate(err.to_string()))?;
        Self::from_x509(x509)
    }

    /// Whether `signer`'s key made this certificate's signature (RSASSA-PSS for AMD's).
    pub fn signed_by(&self, signer: &Cert) -> bool {
        signer
            .x509
            .public_key()
            .and_then(|key| self.x509.verify(&key))
            .unwrap_or(false)
    }

    pub fn self_signed(&self) -> bool {
        self.signed_by(self)
    }
}

/// One AMD product line's roots.
#[derive(Debug, Clone)]
pub struct ProductLine {
    pub product: Product,
    pub ark: Cert,
    pub ask: Cert,
    pub asvk: Cert,
}

impl ProductLine {
    /// The intermediate that signs `key`.
    pub fn intermediate(&self, key: SigningKey) -> &Cert {
        match key {
            SigningKey::Vlek => &self.asvk,
            _ => &self.ask,
        }
    }
}

/// AMD's roots of every product line cloak knows.
pub fn builtin_lines() -> Result<Vec<ProductLine>, ChainError> {
    let pem = |bytes: &[u8]| {
        X509::from_pem(bytes)
            .map_err(|err| ChainError::BuiltIn(err.to_string()))
            .and_then(Cert::from_x509)
    };
    let line = |product, ark: &[u8], ask: &[u8], asvk: &[u8]| -> Result<_, ChainError> {
        Ok(ProductLine {
            product,
            ark: pem(ark)?,
            ask: pem(ask)?,
            asvk: pem(asvk)?,
        })
    };
    Ok(vec![
        line(
            Product::Milan,
            builtin::milan::ARK,
            builtin::milan::ASK,
            MILAN_ASVK,
        )?,
        line(
            Product::Genoa,
            builtin::genoa::ARK,
            builtin::genoa::ASK,
            GENOA_ASVK,
        )?,
        line(
            Product::Turin,
            builtin::turin::ARK,
            builtin::turin::ASK,
            TURIN_ASVK,
        )?,
    ])
}

/// Every certificate of a PEM bundle, in the bundle's order.
pub fn read_bundle(pem: &[u8]) -> Result<Vec<Cert>, ChainError> {
    if !pem
        .windows(b"BEGIN CERTIFICATE".len())
        .any(|w| w == b"BEGIN CERTIFICATE")
    {
        return Err(ChainError::EmptyBundle);
    }
    X509::stack_from_pem(pem)
        .map_err(|err| ChainError::Bundle(err.to_string()))?
        .into_iter()
        .map(Cert::from_x509)
        .collect()
}

/// Where a chain's certificates came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    /// Positions (1-based) in a bundle of `total` certificates, and the names of those not used.
    Bundle {
        ark: usize,
        intermediate: usize,
        total: usize,
        unused: Vec<String>,
    },
}

/// The two certificates above a signing key.
#[derive(Debug, Clone)]
pub struct Chain {
    pub ark: Cert,
    pub intermediate: Cert,
    pub source: Source,
}

/// Why no chain was found above a signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoChain {
    /// No candidate intermediate signed the key.
    NoIssuer(String),
    /// An intermediate signed the key, but no self-signed certificate signed it.
    NoRoot(String),
}

/// The built-in line whose intermediate for `kind` signed `key`.
pub fn builtin_chain(
    lines: &[ProductLine],
    key: &Cert,
    kind: SigningKey,
) -> Result<(Chain, Product), NoChain> {
    lines
        .iter()
        .find(|line| key.signed_by(line.intermediate(kind)))
        .map(|line| {
            (
                Chain {
                    ark: line.ark.clone(),
                    intermediate: line.intermediate(kind).clone(),
                    source: Source::BuiltIn,
                },
                line.product,
            )
        })
        .ok_or_else(|| {
            let names: Vec<&str> = lines.iter().map(|line| line.product.name()).collect();
            NoChain::NoIssuer(format!(
                "no AMD product line's {} ({}) signed this {}",
                kind.issuer_name(),
                names.join(", "),
                kind.name()
            ))
        })
}

/// The certificates of `bundle` that chain `key` to a self-signed root, whatever their order.
pub fn bundle_chain(bundle: &[Cert], key: &Cert, kind: SigningKey) -> Result<Chain, NoChain> {
    let position = bundle
        .iter()
        .position(|cert| !cert.self_signed() && key.signed_by(cert))
        .ok_or_else(|| {
            let names: Vec<&str> = bundle.iter().map(|c| c.common_name.as_str()).collect();
            NoChain::NoIssuer(format!(
                "none of the {} certificate(s) of the bundle ({}) signed this {}; its {} is needed",
                bundle.len(),
                names.join(", "),
                kind.name(),
                kind.issuer_name()
            ))
        })?;
    let intermediate = &bundle[position];
    let root = bundle
        .iter()
        .position(|cert| cert.self_signed() && intermediate.signed_by(cert))
        .ok_or_else(|| {
            NoChain::NoRoot(format!(
                "no self-signed certificate of the bundle signed the {} {}",
                kind.issuer_name(),
                intermediate.common_name
            ))
        })?;
    let unused = bundle
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != position && *index != root)
        .map(|(index, cert)| format!("{} ({})", index + 1, cert.common_name))
        .collect();
    Ok(Chain {
        ark: bundle[root].clone(),
        intermediate: intermediate.clone(),
        source: Source::Bundle {
            ark: root + 1,
            intermediate: position + 1,
            total: bundle.len(),
            unused,
        },
    })
}

/// The AMD product line whose ARK `ark` is, if it is one.
pub fn known_root(lines: &[ProductLine], ark: &Cert) -> Option<Product> {
    lines
        .iter()
        .find(|line| line.ark.der == ark.der)
        .map(|line| line.product)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_intermediate_is_signed_by_its_lines_ark() {
        let lines = builtin_lines().expect("built-in roots parse");
        for line in &lines {
            assert!(line.ark.self_signed(), "{:?}", line.product);
            assert!(line.ask.signed_by(&line.ark), "{:?} ASK", line.product);
            assert!(line.asvk.signed_by(&line.ark), "{:?} ASVK", line.product);
            assert!(line.asvk.common_name.starts_with("SEV-VLEK-"));
            assert!(!line.ask.signed_by(&line.asvk));
        }
        // No line's ARK signs another line's intermediates.
        assert!(!lines[0].ask.signed_by(&lines[1].ark));
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        assert!(matches!(
            read_bundle(b"hello"),
            Err(ChainError::EmptyBundle)
        ));
    }
}
