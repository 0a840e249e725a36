//! ACME Renewal Information (RFC 9773), best effort: a CA that offers it may move a renewal earlier.
//!
//! The manager asks for the suggested window of each certificate now and then; a random time
//! inside the window (as the RFC asks, so that clients spread out) replaces the usual "a third
//! of the lifetime left" when it is earlier. A CA without ARI, or a failed request, changes
//! nothing.

use std::time::Duration;

use instant_acme::{Account, CertificateIdentifier};
use rustls_pki_types::Der;

use super::AcmeError;

/// How often a certificate's window is asked for at most and at least, whatever the CA's
/// Retry-After says.
pub const MIN_POLL: Duration = Duration::from_secs(3600);
pub const MAX_POLL: Duration = Duration::from_secs(24 * 3600);

/// The suggested renewal window of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
    /// When to ask again (the CA's Retry-After, clamped to [`MIN_POLL`, `MAX_POLL`]).
    pub poll_after: Duration,
    pub explanation: Option<String>,
}

/// The ARI identifier of a certificate (authority key identifier and serial), if it has an AKI.
pub fn cert_id(leaf: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    let aki = leaf
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })?;
    let id = CertificateIdentifier::new(
        Der::from_slice(&aki),
        Der::from_slice(leaf.tbs_certificate.raw_serial()),
    );
    Some(id.to_string())
}

/// The window for `id`; `None` when the CA does not offer ARI.
pub async fn window(account: &Account, id: &str) -> Result<Option<Window>, AcmeError> {
    let Some((aki, serial)) = id.split_once('.') else {
        return Err(AcmeError::Crypto(format!("bad ARI identifier {id}")));
    };
    let id = CertificateIdentifier {
        authority_key_identifier: aki.into(),
        serial: serial.into(),
    };
    match account.renewal_info(&id).await {
        Ok((info, retry)) => {
            let w = &info.suggested_window;
            Ok(Some(Window {
                start: u64::try_from(w.start.unix_timestamp()).unwrap_or(0),
                end: u64::try_from(w.end.unix_timestamp()).unwrap_or(0),
                poll_after: retry.clamp(MIN_POLL, MAX_POLL),
                explanation: info.explanation_url,
            }))
        }
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A uniformly random second in `[start, end]`, not before `now`.
pub fn pick(window: &Window, now: u64) -> u64 {
    let (start, end) = (window.start.max(now), window.end.max(now));
    if end <= start {
        return start;
    }
    start + fastrand::u64(0..=end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: u64, end: u64) -> Window {
        Window {
            start,
            end,
            poll_after: MIN_POLL,
            explanation: None,
        }
    }

    #[test]
    fn picks_inside_the_window_and_never_in_the_past() {
        for _ in 0..200 {
            let t = pick(&window(100, 200), 50);
            assert!((100..=200).contains(&t), "{t}");
            let t = pick(&window(100, 200), 150);
            assert!((150..=200).contains(&t), "{t}");
        }
        assert_eq!(pick(&window(100, 200), 300), 300);
        assert_eq!(pick(&window(200, 100), 0), 200);
    }

    #[test]
    fn identifies_a_certificate_by_aki_and_serial() {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![0xAB; 20]);
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let mut leaf = rcgen::CertificateParams::new(vec!["a.example".into()]).expect("params");
        leaf.serial_number = Some(rcgen::SerialNumber::from(vec![0x01, 0x02]));
        leaf.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).expect("leaf");
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).expect("parse");
        // RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(DER serial content).
        assert_eq!(
            cert_id(&parsed).as_deref(),
            Some("q6urq6urq6urq6urq6urq6urq6s.AQI")
        );
    }
}
