//! The pod annotation form of init-data: base64 of the document, gzip-compressed or not (Kata's
//! genpolicy writes it compressed). Decoding gives back the exact document bytes, which are what
//! HOST_DATA binds; a compressed document may not expand past `MAX_INIT_DATA_BYTES`.

use std::io::{Read, Write};

use base64::Engine as _;

use crate::InitDataError;

/// The largest init-data document accepted (a policy for a many-container pod is tens of KiB).
pub const MAX_INIT_DATA_BYTES: usize = 1 << 20;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The document bytes an annotation value carries. White space inside the base64 is ignored
/// (YAML folds long values).
pub fn decode_annotation(value: &str) -> Result<Vec<u8>, InitDataError> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let decoded = base64::engine::general_purpose::STANDARD.decode(compact)?;
    let document = if decoded.starts_with(&GZIP_MAGIC) {
        let mut document = Vec::new();
        flate2::read::GzDecoder::new(decoded.as_slice())
            .take(MAX_INIT_DATA_BYTES as u64 + 1)
            .read_to_end(&mut document)
            .map_err(InitDataError::Gzip)?;
        document
    } else {
        decoded
    };
    if document.len() > MAX_INIT_DATA_BYTES {
        return Err(InitDataError::TooLarge {
            limit: MAX_INIT_DATA_BYTES,
        });
    }
    Ok(document)
}

/// The annotation value for `document`: gzip, then base64.
pub fn encode_annotation(document: &[u8]) -> Result<String, InitDataError> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(document).map_err(InitDataError::Gzip)?;
    let compressed = encoder.finish().map_err(InitDataError::Gzip)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(compressed))
}
