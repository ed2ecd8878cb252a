//! The simulated AMD-SP's wire format (`tee = "sim"`): the host side of a pod VM plays the
//! AMD-SP on a vsock port, the agent asks it for reports. One request per connection: the
//! agent writes REPORT_DATA, exactly 64 bytes (zero-padded; a vsock half-close does not reach
//! the host through every backend, so the request has a fixed size); the host answers and
//! closes.
//!
//! Answer: a status byte; 0 = a report follows as two length-prefixed (u32 little endian)
//! blobs, the report in the SEV-SNP layout and the certificates (PEM: VCEK, ASK, ARK); 1 = the
//! rest is an error text.

/// vsock port on the host (CID 2) the simulated AMD-SP listens on.
pub const SIM_PSP_VSOCK_PORT: u32 = 1027;

/// What a request carries: the guest's REPORT_DATA, zero-padded to this size.
pub use cloak_snp_abi::REPORT_DATA_BYTES;

/// Bounds a reader needs: no answer is larger.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

const STATUS_REPORT: u8 = 0;
const STATUS_ERROR: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimPspResponse {
    Report {
        report: Vec<u8>,
        certificates: Vec<u8>,
    },
    Error(String),
}

fn take_blob<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let Some((length, rest)) = bytes.split_first_chunk::<4>() else {
        return Err("truncated length".to_owned());
    };
    let length = u32::from_le_bytes(*length) as usize;
    if rest.len() < length {
        return Err(format!(
            "a {length}-byte blob but {} bytes left",
            rest.len()
        ));
    }
    let (blob, rest) = rest.split_at(length);
    *bytes = rest;
    Ok(blob)
}

fn put_blob(out: &mut Vec<u8>, blob: &[u8]) {
    let length = u32::try_from(blob.len()).expect("answers are bounded far below 4 GiB");
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(blob);
}

impl SimPspResponse {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Report {
                report,
                certificates,
            } => {
                let mut out = vec![STATUS_REPORT];
                put_blob(&mut out, report);
                put_blob(&mut out, certificates);
                out
            }
            Self::Error(text) => {
                let mut out = vec![STATUS_ERROR];
                out.extend_from_slice(text.as_bytes());
                out
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&STATUS_REPORT, mut rest)) => {
                let report = take_blob(&mut rest)?.to_vec();
                let certificates = take_blob(&mut rest)?.to_vec();
                if !rest.is_empty() {
                    return Err(format!("{} bytes after the certificates", rest.len()));
                }
                Ok(Self::Report {
                    report,
                    certificates,
                })
            }
            Some((&STATUS_ERROR, rest)) => Ok(Self::Error(String::from_utf8_lossy(rest).into())),
            Some((status, _)) => Err(format!("unknown status byte {status}")),
            None => Err("an empty answer".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip() {
        for answer in [
            SimPspResponse::Report {
                report: vec![7; 1184],
                certificates: b"-----BEGIN CERTIFICATE-----".to_vec(),
            },
            SimPspResponse::Report {
                report: Vec::new(),
                certificates: Vec::new(),
            },
            SimPspResponse::Error("no measurement".into()),
        ] {
            assert_eq!(SimPspResponse::decode(&answer.encode()), Ok(answer));
        }
    }

    #[test]
    fn damaged_answers_are_refused() {
        let good = SimPspResponse::Report {
            report: vec![1; 10],
            certificates: vec![2; 5],
        }
        .encode();
        assert!(SimPspResponse::decode(&good[..good.len() - 1]).is_err());
        assert!(SimPspResponse::decode(&good[..3]).is_err());
        let mut extra = good.clone();
        extra.push(0);
        assert!(SimPspResponse::decode(&extra).is_err());
        assert!(SimPspResponse::decode(&[9]).is_err());
        assert!(SimPspResponse::decode(&[]).is_err());
    }
}
