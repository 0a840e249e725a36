//! OCSP for stapling: the responder URL of a certificate, the DER request for it (RFC 6960, SHA-1 CertID) and what a response says (status and validity), without any I/O.
//!
//! The request and the few response fields needed are small enough to write and read with a
//! minimal DER reader here; the client checks the response's signature, the server only makes
//! sure it answers for this certificate, says good and is current.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::{GeneralName, ParsedExtension};

/// Why no OCSP request can be made for a certificate, or a response is not stapled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcspError {
    #[error("the certificate cannot be parsed: {0}")]
    Certificate(String),
    #[error("the chain has no issuer certificate after the leaf")]
    NoIssuer,
    #[error("the response is malformed ({0})")]
    Malformed(&'static str),
    #[error("the responder answered status {0} (not successful)")]
    Unsuccessful(u8),
    #[error("the response is not about this certificate")]
    OtherCertificate,
    #[error("the certificate is revoked")]
    Revoked,
    #[error("the responder does not know the certificate")]
    Unknown,
    #[error("the response expired (nextUpdate passed)")]
    Expired,
}

/// The OCSP responder URL of `leaf` (its authorityInfoAccess), if it names one.
pub fn responder_url(leaf: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    for ext in cert.extensions() {
        if let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() {
            for desc in aia.iter() {
                if desc.access_method.to_id_string() == "1.3.6.1.5.5.7.48.1" {
                    if let GeneralName::URI(uri) = &desc.access_location {
                        return Some(uri.to_string());
                    }
                }
            }
        }
    }
    None
}

/// The CertID of `leaf` issued by `issuer`: SHA-1 of the issuer's name and key, the serial.
fn cert_id(leaf: &CertificateDer<'_>, issuer: &CertificateDer<'_>) -> Result<Vec<u8>, OcspError> {
    let bad = |e: x509_parser::nom::Err<x509_parser::error::X509Error>| {
        OcspError::Certificate(e.to_string())
    };
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf).map_err(bad)?;
    let (_, issuer) = x509_parser::parse_x509_certificate(issuer).map_err(bad)?;
    let sha1 = |data: &[u8]| {
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
            .as_ref()
            .to_vec()
    };
    let name_hash = sha1(leaf.issuer().as_raw());
    let key_hash = sha1(&issuer.public_key().subject_public_key.data);
    // AlgorithmIdentifier { id-sha1 (1.3.14.3.2.26), NULL }
    let sha1_alg = tlv(
        0x30,
        &[
            &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a][..],
            &[0x05, 0x00],
        ]
        .concat(),
    );
    Ok(tlv(
        0x30,
        &[
            sha1_alg,
            tlv(0x04, &name_hash),
            tlv(0x04, &key_hash),
            tlv(0x02, leaf.raw_serial()),
        ]
        .concat(),
    ))
}

/// The DER `OCSPRequest` for `chain[0]`, issued by `chain[1]`.
pub fn request(chain: &[CertificateDer<'_>]) -> Result<Vec<u8>, OcspError> {
    let [leaf, issuer, ..] = chain else {
        return Err(OcspError::NoIssuer);
    };
    let id = cert_id(leaf, issuer)?;
    // OCSPRequest { TBSRequest { requestList: SEQUENCE OF Request { CertID } } }
    Ok(tlv(0x30, &tlv(0x30, &tlv(0x30, &tlv(0x30, &id)))))
}

/// A response that may be stapled, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub this_update: SystemTime,
    /// None: the responder gives no end (the staple is refreshed on a fixed period).
    pub next_update: Option<SystemTime>,
}

/// Checks that `der` is a successful basic response saying "good" for `chain[0]` that is
/// current at `now`.
pub fn check(
    der: &[u8],
    chain: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<Verdict, OcspError> {
    let [leaf, issuer, ..] = chain else {
        return Err(OcspError::NoIssuer);
    };
    let wanted = cert_id(leaf, issuer)?;
    let malformed = OcspError::Malformed;
    let mut top = Reader::new(der)
        .sequence()
        .ok_or(malformed("OCSPResponse"))?;
    let status = top.take(0x0a).ok_or(malformed("responseStatus"))?;
    match status {
        [0] => {}
        [s] => return Err(OcspError::Unsuccessful(*s)),
        _ => return Err(malformed("responseStatus")),
    }
    let mut bytes = Reader::new(top.take(0xa0).ok_or(malformed("responseBytes"))?)
        .sequence()
        .ok_or(malformed("responseBytes"))?;
    // id-pkix-ocsp-basic 1.3.6.1.5.5.7.48.1.1
    let kind = bytes.take(0x06).ok_or(malformed("responseType"))?;
    if kind != [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01] {
        return Err(malformed("not a basic response"));
    }
    let basic = bytes.take(0x04).ok_or(malformed("response"))?;
    let mut tbs = Reader::new(der_tbs(basic)?);
    tbs.skip_if(0xa0); // version
    tbs.take_any().ok_or(malformed("responderID"))?;
    tbs.take(0x18).ok_or(malformed("producedAt"))?;
    let mut responses = Reader::new(tbs.take(0x30).ok_or(malformed("responses"))?);
    while let Some(single) = responses.take(0x30) {
        let mut single = Reader::new(single);
        let id = single.take_raw(0x30).ok_or(malformed("certID"))?;
        if id != wanted.as_slice() {
            continue;
        }
        let (tag, _) = single.take_any().ok_or(malformed("certStatus"))?;
        match tag {
            0x80 => {}
            0xa1 => return Err(OcspError::Revoked),
            _ => return Err(OcspError::Unknown),
        }
        let this_update = time(single.take(0x18).ok_or(malformed("thisUpdate"))?)
            .ok_or(malformed("thisUpdate"))?;
        let next_update = match single.take(0xa0) {
            Some(inner) => Some(
                Reader::new(inner)
                    .take(0x18)
                    .and_then(time)
                    .ok_or(malformed("nextUpdate"))?,
            ),
            None => None,
        };
        if next_update.is_some_and(|n| n <= now) {
            return Err(OcspError::Expired);
        }
        return Ok(Verdict {
            this_update,
            next_update,
        });
    }
    Err(OcspError::OtherCertificate)
}

/// The ResponseData (tbsResponseData) content of a BasicOCSPResponse.
fn der_tbs(basic: &[u8]) -> Result<&[u8], OcspError> {
    Reader::new(basic)
        .sequence()
        .and_then(|mut b| b.take(0x30))
        .ok_or(OcspError::Malformed("tbsResponseData"))
}

/// `YYYYMMDDHHMMSSZ` (GeneralizedTime as DER writes it; fractions ignored).
fn time(text: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(text).ok()?;
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(8..10)?, num(10..12)?, num(12..14)?);
    if !s.ends_with('Z') || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// A DER tag-length-value with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Reads DER elements one after another (single-byte tags, definite lengths).
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Reader<'a> {
        Reader { rest }
    }

    /// The next element: (tag, content, the whole element).
    fn next(&mut self) -> Option<(u8, &'a [u8], &'a [u8])> {
        let all = self.rest;
        let (&tag, after) = all.split_first()?;
        let (&first, after) = after.split_first()?;
        let (len, after) = if first < 0x80 {
            (usize::from(first), after)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || after.len() < n {
                return None;
            }
            let len = after[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &after[n..])
        };
        if after.len() < len {
            return None;
        }
        let header = all.len() - after.len();
        self.rest = &after[len..];
        Some((tag, &after[..len], &all[..header + len]))
    }

    /// The content of the next element if it has `tag` (else nothing is consumed).
    fn take(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.take_raw(tag).map(|raw| {
            let mut r = Reader::new(raw);
            r.next().map_or(&[][..], |(_, c, _)| c)
        })
    }

    /// The next element, whole, if it has `tag`.
    fn take_raw(&mut self, tag: u8) -> Option<&'a [u8]> {
        let saved = self.rest;
        match self.next() {
            Some((t, _, raw)) if t == tag => Some(raw),
            _ => {
                self.rest = saved;
                None
            }
        }
    }

    fn take_any(&mut self) -> Option<(u8, &'a [u8])> {
        self.next().map(|(t, c, _)| (t, c))
    }

    fn skip_if(&mut self, tag: u8) {
        let _ = self.take_raw(tag);
    }

    /// A reader over the content of the next element, a SEQUENCE.
    fn sequence(mut self) -> Option<Reader<'a>> {
        self.take(0x30).map(Reader::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_time_to_system_time() {
        let t = time(b"20261129150030Z").expect("time");
        let secs = t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs();
        assert_eq!(secs, 1_795_964_430);
        assert_eq!(time(b"19700101000000Z"), Some(UNIX_EPOCH));
        assert_eq!(time(b"20261329150030Z"), None);
        assert_eq!(time(b"20261129150030"), None);
    }

    #[test]
    fn der_lengths_and_reader() {
        let long = vec![7u8; 300];
        let element = tlv(0x04, &long);
        assert_eq!(&element[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let mut r = Reader::new(&element);
        assert_eq!(r.take(0x30), None, "wrong tag consumes nothing");
        assert_eq!(r.take(0x04), Some(&long[..]));
        assert_eq!(Reader::new(&[0x30, 0x05, 0x00]).take(0x30), None, "short");
    }

    #[test]
    fn no_issuer_no_url_and_garbage() {
        let key = crate::tls::self_signed(&["x.test"]).expect("cert");
        assert_eq!(responder_url(&key.cert[0]), None);
        assert_eq!(request(&key.cert), Err(OcspError::NoIssuer));
        let chain = [key.cert[0].clone(), key.cert[0].clone()];
        assert!(request(&chain).is_ok());
        assert_eq!(
            check(b"\x30\x03\x0a\x01\x06", &chain, SystemTime::now()),
            Err(OcspError::Unsuccessful(6))
        );
        assert!(matches!(
            check(b"junk", &chain, SystemTime::now()),
            Err(OcspError::Malformed(_))
        ));
    }
}
