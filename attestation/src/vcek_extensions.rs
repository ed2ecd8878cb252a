//! The AMD extensions of a VCEK certificate that bind it to one chip at one TCB: the SPL
//! (security patch level) of each firmware component, the chip id (hwID, VCEKs only), the
//! product name and, for a VLEK, the cloud provider it was issued to (csp_id). AMD's
//! "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface Specification"
//! (57230), table "VCEK Certificate Extensions".
//!
//! Read straight from the certificate's DER: AMD's Milan VCEKs carry a non-positive serial
//! number that strict X.509 parsers reject, and only these few extensions are needed.

/// OID arcs below 1.3.6.1.4.1.3704 (AMD), DER-encoded content bytes.
const AMD_ARC: [u8; 7] = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78];

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VcekExtensions {
    pub bootloader_spl: Option<u8>,
    pub tee_spl: Option<u8>,
    pub snp_spl: Option<u8>,
    pub microcode_spl: Option<u8>,
    pub fmc_spl: Option<u8>,
    pub hw_id: Option<Vec<u8>>,
    /// productName (e.g. "Milan-B0"), VCEKs and VLEKs both.
    pub product_name: Option<String>,
    /// The cloud provider a VLEK was issued to (csp_id), VLEKs only.
    pub csp_id: Option<String>,
}

/// An IA5String or UTF8String extension value as text.
fn text(der: &[u8], last_arcs: &[u8]) -> Option<String> {
    let oid: Vec<u8> = AMD_ARC.iter().chain(last_arcs).copied().collect();
    let value = extension_value(der, &oid)?;
    let bytes = match tlv(value) {
        Some((0x16 | 0x0c, inner, [])) => inner,
        _ => value,
    };
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// One DER TLV: (tag, value, rest).
fn tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

/// The extnValue (inner DER) of the extension whose OID content bytes are `oid`.
fn extension_value<'a>(der: &'a [u8], oid: &[u8]) -> Option<&'a [u8]> {
    let mut pattern = vec![0x06, u8::try_from(oid.len()).ok()?];
    pattern.extend_from_slice(oid);
    let start = der.windows(pattern.len()).position(|w| w == pattern)? + pattern.len();
    let mut rest = &der[start..];
    loop {
        let (tag, value, after) = tlv(rest)?;
        match tag {
            0x01 => rest = after, // critical flag
            0x04 => return Some(value),
            _ => return None,
        }
    }
}

fn spl(der: &[u8], last_arcs: &[u8]) -> Option<u8> {
    let oid: Vec<u8> = AMD_ARC.iter().chain(last_arcs).copied().collect();
    let (tag, value, _) = tlv(extension_value(der, &oid)?)?;
    // An INTEGER 0..=255 may carry a leading zero byte to stay positive.
    match (tag, value) {
        (0x02, [low]) => Some(*low),
        (0x02, [0, low]) => Some(*low),
        _ => None,
    }
}

impl VcekExtensions {
    pub fn from_der(der: &[u8]) -> Self {
        let hw_id_oid: Vec<u8> = AMD_ARC.iter().chain(&[0x01, 0x04]).copied().collect();
        let hw_id = extension_value(der, &hw_id_oid).map(|value| match tlv(value) {
            // Some issuers wrap the 64 bytes in an OCTET STRING, others put them bare.
            Some((0x04, inner, [])) => inner.to_vec(),
            _ => value.to_vec(),
        });
        Self {
            bootloader_spl: spl(der, &[0x01, 0x03, 0x01]),
            tee_spl: spl(der, &[0x01, 0x03, 0x02]),
            snp_spl: spl(der, &[0x01, 0x03, 0x03]),
            microcode_spl: spl(der, &[0x01, 0x03, 0x08]),
            fmc_spl: spl(der, &[0x01, 0x03, 0x09]),
            hw_id,
            product_name: text(der, &[0x01, 0x02]),
            csp_id: text(der, &[0x01, 0x05]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_form_lengths_and_truncation() {
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let (tag, value, rest) = tlv(&long).expect("tlv");
        assert_eq!((tag, value.len(), rest.len()), (0x04, 0x80, 0));
        assert_eq!(tlv(&[0x04, 0x05, 1, 2]), None);
        assert_eq!(tlv(&[0x04, 0x85, 1, 1, 1, 1, 1]), None);
    }

    #[test]
    fn an_extension_is_found_by_its_oid() {
        // SEQUENCE { OID 1.3.6.1.4.1.3704.1.3.3, OCTET STRING { INTEGER 8 } }
        let mut der = vec![0x30, 0x11, 0x06, 0x0a];
        der.extend_from_slice(&AMD_ARC);
        der.extend_from_slice(&[0x01, 0x03, 0x03, 0x04, 0x03, 0x02, 0x01, 0x08]);
        let extensions = VcekExtensions::from_der(&der);
        assert_eq!(extensions.snp_spl, Some(8));
        assert_eq!(extensions.tee_spl, None);
    }
}
