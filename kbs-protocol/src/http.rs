//! The little HTTP/1.1 the guest's key-broker client needs: one request per connection
//! (`Connection: close`), a body with Content-Length, answers with Content-Length, chunked
//! coding or read to the end; bounded in size and time, since the network between guest and
//! broker is the host's. `https://` brokers are reached over TLS (rustls) trusting only the CA
//! the pod's init-data names, so the host cannot stand in for the broker.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Larger answers are refused: resources are secrets, not images.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
pub const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0:?} is not an http:// or https:// address with a host")]
    Address(String),
    #[error(
        "{url}: an https:// broker needs its CA certificate (cdh.toml [kbc] kbs_cert): {reason}"
    )]
    Trust { url: String, reason: String },
    #[error("TLS with {address}: {source}")]
    Tls {
        address: String,
        source: std::io::Error,
    },
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("talking to {address}: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    #[error("{address} did not answer within {TIMEOUT:?}")]
    Timeout { address: String },
    #[error("the answer of {address} is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge { address: String },
    #[error("the answer of {address} is not HTTP/1.1: {reason}")]
    Malformed { address: String, reason: String },
}

/// Where a broker listens: `http://host:port[/prefix]`, or `https://` with the CA to trust.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Path before `/kbs/v0/...`, without a trailing slash.
    pub prefix: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    /// An `http://` address (an `https://` one needs its CA: `with_ca`).
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        Self::with_ca(url, None)
    }

    /// `url`, trusting only the certificates in `ca_pem` for an `https://` one.
    pub fn with_ca(url: &str, ca_pem: Option<&str>) -> Result<Self, HttpError> {
        let (rest, default_port, tls) = if let Some(rest) = url.strip_prefix("http://") {
            (rest, 80, false)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (rest, 443, true)
        } else {
            return Err(HttpError::Address(url.to_owned()));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !port.contains(']') => (
                host.trim_start_matches('[').trim_end_matches(']'),
                port.parse::<u16>()
                    .map_err(|_| HttpError::Address(url.to_owned()))?,
            ),
            _ if !authority.is_empty() => (
                authority.trim_start_matches('[').trim_end_matches(']'),
                default_port,
            ),
            _ => return Err(HttpError::Address(url.to_owned())),
        };
        let tls = if tls {
            Some(client_config(url, ca_pem)?)
        } else {
            None
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            prefix: prefix.to_owned(),
            tls,
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A TLS client trusting the CA certificates of `ca_pem` and nothing else.
fn client_config(url: &str, ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    let trust = |reason: String| HttpError::Trust {
        url: url.to_owned(),
        reason,
    };
    let pem = ca_pem.ok_or_else(|| trust("none given".to_owned()))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let certificate = certificate.map_err(|err| trust(err.to_string()))?;
        roots
            .add(certificate)
            .map_err(|err| trust(err.to_string()))?;
    }
    if roots.is_empty() {
        return Err(trust("no PEM certificate in it".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| trust(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// One request: `method path` with `headers` and `body` (JSON when not empty).
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, HttpError> {
    let address = endpoint.address();
    let mut head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
        endpoint.prefix,
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let exchange = async {
        let stream = TcpStream::connect(&address)
            .await
            .map_err(|source| HttpError::Connect {
                address: address.clone(),
                source,
            })?;
        let raw = match &endpoint.tls {
            None => exchange(stream, &request, &address).await?,
            Some(config) => {
                let name = ServerName::try_from(endpoint.host.clone())
                    .map_err(|err| HttpError::Address(format!("{}: {err}", endpoint.host)))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|source| HttpError::Tls {
                        address: address.clone(),
                        source,
                    })?;
                exchange(stream, &request, &address).await?
            }
        };
        parse_response(&raw).map_err(|reason| HttpError::Malformed {
            address: address.clone(),
            reason,
        })
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            address: address.clone(),
        })?
}

/// Writes `request` and reads the whole answer, bounded.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    address: &str,
) -> Result<Vec<u8>, HttpError> {
    let io = |source| HttpError::Io {
        address: address.to_owned(),
        source,
    };
    stream.write_all(request).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut raw = Vec::new();
    match (&mut stream)
        .take(MAX_RESPONSE_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .await
    {
        Ok(_) => {}
        // A TLS peer that closes without close_notify after a complete answer.
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(err) => return Err(io(err)),
    }
    if raw.len() > MAX_RESPONSE_BYTES {
        return Err(HttpError::TooLarge {
            address: address.to_owned(),
        });
    }
    Ok(raw)
}

/// Parses a whole HTTP/1.1 response.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the header")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "a header that is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("status line {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header line {line:?}"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let rest = &raw[end + 4..];
    let find = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(length) = find("content-length") {
        let length: usize = length.parse().map_err(|_| "a bad Content-Length")?;
        if rest.len() < length {
            return Err(format!("{} of {length} body bytes", rest.len()));
        }
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "a bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "a bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("a truncated chunk".to_owned());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
