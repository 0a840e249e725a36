//! The `[acme]` table: which names get certificates over ACME, from which CA, through which challenge.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::values::{self, Text};
use super::{serialize, CertificateConfig, ListenerConfig, Validator};
use crate::secret::Secret;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`staging = true`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub directory: Option<Spanned<Text>>,
    pub staging: Option<Spanned<bool>>,
    pub ca_root: Option<Spanned<Text>>,
    pub email: Option<Spanned<Text>>,
    pub eab: Option<Spanned<RawEab>>,
    pub challenge: Option<Spanned<Text>>,
    pub dns_hook: Option<Spanned<Text>>,
    pub dns_hook_timeout: Option<values::Duration>,
    pub backoff_min: Option<Spanned<values::Duration>>,
    pub backoff_max: Option<Spanned<values::Duration>>,
    #[serde(default)]
    pub certificates: Vec<Spanned<RawAcmeCertificate>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEab {
    pub kid: Text,
    pub hmac_key: Spanned<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcmeCertificate {
    pub names: Spanned<Vec<Spanned<Text>>>,
    pub challenge: Option<Spanned<Text>>,
}

/// How the CA checks that we control a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeKind {
    Http01,
    TlsAlpn01,
    Dns01,
}

impl ChallengeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
            ChallengeKind::Dns01 => "dns-01",
        }
    }

    fn parse(s: &str) -> Option<ChallengeKind> {
        match s {
            "http-01" => Some(ChallengeKind::Http01),
            "tls-alpn-01" => Some(ChallengeKind::TlsAlpn01),
            "dns-01" => Some(ChallengeKind::Dns01),
            _ => None,
        }
    }
}

/// `"http-01"`, `"tls-alpn-01"` or `"dns-01"`, as the config writes it.
impl Serialize for ChallengeKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// External account binding (a CA that ties ACME accounts to an account of its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Eab {
    pub kid: String,
    /// The decoded HMAC key.
    pub hmac_key: Secret<Vec<u8>>,
}

/// The validated `[acme]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcmeConfig {
    pub directory: String,
    /// PEM file of the root that signs the directory's HTTPS certificate (private ACME).
    #[serde(serialize_with = "serialize::opt_path")]
    pub ca_root: Option<PathBuf>,
    pub email: Option<String>,
    pub eab: Option<Eab>,
    /// Called as `HOOK present|cleanup RECORD VALUE` for DNS-01.
    #[serde(serialize_with = "serialize::opt_path")]
    pub dns_hook: Option<PathBuf>,
    #[serde(serialize_with = "serialize::duration")]
    pub dns_hook_timeout: Duration,
    /// First retry delay after a failed order; doubles (with jitter) up to `backoff_max`.
    #[serde(serialize_with = "serialize::duration")]
    pub backoff_min: Duration,
    #[serde(serialize_with = "serialize::duration")]
    pub backoff_max: Duration,
    pub certificates: Vec<AcmeCertificate>,
}

/// One certificate to obtain: its names (the first is its id) and its challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcmeCertificate {
    pub id: String,
    pub names: Vec<String>,
    pub challenge: ChallengeKind,
}

impl Validator {
    pub(super) fn acme(
        &mut self,
        raw: &Spanned<RawAcme>,
        listeners: &[ListenerConfig],
        static_certs: &[CertificateConfig],
    ) -> AcmeConfig {
        let span = raw.span();
        let a = raw.get_ref();
        let directory = match (&a.directory, &a.staging) {
            (Some(d), Some(s)) if *s.get_ref() => {
                self.error(
                    s.span(),
                    "set either `directory` or `staging = true`, not both",
                );
                d.get_ref().0.clone()
            }
            (Some(d), _) => {
                if !d.get_ref().starts_with("https://") {
                    self.error(
                        d.span(),
                        format!("ACME directory \"{}\" must be an https:// URL", d.get_ref()),
                    );
                }
                d.get_ref().0.clone()
            }
            (None, Some(s)) if *s.get_ref() => LETS_ENCRYPT_STAGING.to_string(),
            (None, _) => LETS_ENCRYPT.to_string(),
        };
        let ca_root = a.ca_root.as_ref().map(|p| {
            let path = self.resolve_path(p.get_ref());
            match crate::fsutil::read_regular(&path) {
                Ok(pem) if pem_has_certificate(&pem) => {}
                Ok(_) => self.error(
                    p.span(),
                    format!("ca_root \"{}\" holds no PEM certificate", path.display()),
                ),
                Err(e) => self.error(
                    p.span(),
                    format!("cannot read ca_root \"{}\": {e}", path.display()),
                ),
            }
            path
        });
        let email = a.email.as_ref().map(|e| {
            let text = e.get_ref().0.trim().to_string();
            let valid = text
                .split_once('@')
                .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
                && !text.contains([' ', ',', ':']);
            if !valid {
                self.error(e.span(), format!("invalid contact email \"{text}\""));
            }
            text
        });
        let eab = a.eab.as_ref().map(|eab| {
            let e = eab.get_ref();
            use base64::Engine;
            let key = e.hmac_key.get_ref().trim_end_matches('=');
            let hmac_key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key)
                .unwrap_or_else(|_| {
                    self.error(
                        e.hmac_key.span(),
                        "eab.hmac_key must be base64url, as the CA hands it out",
                    );
                    Vec::new()
                });
            if e.kid.is_empty() {
                self.error(eab.span(), "eab.kid must not be empty");
            }
            Eab {
                kid: e.kid.0.clone(),
                hmac_key: Secret::new(hmac_key),
            }
        });
        let default_challenge = match &a.challenge {
            Some(c) => self.challenge(c).unwrap_or(ChallengeKind::Http01),
            None => ChallengeKind::Http01,
        };
        let dns_hook = a.dns_hook.as_ref().map(|h| {
            let path = self.resolve_path(h.get_ref());
            if let Err(reason) = executable(&path) {
                self.error(
                    h.span(),
                    format!("dns_hook \"{}\" {reason}", path.display()),
                );
            }
            path
        });
        let backoff_min = a.backoff_min.as_ref().map_or(Duration::from_secs(60), |d| {
            if d.get_ref().0.is_zero() {
                self.error(d.span(), "backoff_min must be above 0");
            }
            d.get_ref().0
        });
        let backoff_max = a
            .backoff_max
            .as_ref()
            .map_or(Duration::from_secs(6 * 3600), |d| {
                if d.get_ref().0 < backoff_min {
                    self.error(d.span(), "backoff_max must be at least backoff_min");
                }
                d.get_ref().0
            });
        if a.certificates.is_empty() {
            self.error(
                span.clone(),
                "[acme] lists no certificates; add [[acme.certificates]] with `names`",
            );
        }
        let mut certificates: Vec<AcmeCertificate> = Vec::new();
        for c in &a.certificates {
            let challenge = match &c.get_ref().challenge {
                Some(ch) => self.challenge(ch).unwrap_or(default_challenge),
                None => default_challenge,
            };
            let chal_span = c
                .get_ref()
                .challenge
                .as_ref()
                .map_or(c.span(), |ch| ch.span());
            self.acme_challenge_usable(challenge, chal_span, listeners, dns_hook.is_some());
            let names = self.acme_names(c, challenge, &certificates, static_certs);
            if let Some(id) = names.first() {
                certificates.push(AcmeCertificate {
                    id: id.clone(),
                    names,
                    challenge,
                });
            }
        }
        AcmeConfig {
            directory,
            ca_root,
            email,
            eab,
            dns_hook,
            dns_hook_timeout: a.dns_hook_timeout.map_or(Duration::from_secs(300), |d| d.0),
            backoff_min,
            backoff_max,
            certificates,
        }
    }

    fn challenge(&mut self, raw: &Spanned<Text>) -> Option<ChallengeKind> {
        let kind = ChallengeKind::parse(raw.get_ref());
        if kind.is_none() {
            self.error(
                raw.span(),
                format!(
                    "unknown ACME challenge \"{}\" (expected \"http-01\", \"tls-alpn-01\" or \"dns-01\")",
                    raw.get_ref()
                ),
            );
        }
        kind
    }

    /// A challenge needs the listener (or hook) that answers it.
    fn acme_challenge_usable(
        &mut self,
        challenge: ChallengeKind,
        span: std::ops::Range<usize>,
        listeners: &[ListenerConfig],
        has_hook: bool,
    ) {
        let reason = match challenge {
            ChallengeKind::Http01 if !listeners.iter().any(|l| !l.tls) => {
                "http-01 needs a plain HTTP listener (the CA connects to port 80)"
            }
            ChallengeKind::TlsAlpn01 if !listeners.iter().any(|l| l.tls) => {
                "tls-alpn-01 needs a TLS listener (the CA connects to port 443)"
            }
            ChallengeKind::Dns01 if !has_hook => "dns-01 needs `dns_hook` in [acme]",
            _ => return,
        };
        self.error(span, reason);
    }

    /// The names of one certificate, lowercase; errors for names that cannot be issued as written.
    fn acme_names(
        &mut self,
        c: &Spanned<RawAcmeCertificate>,
        challenge: ChallengeKind,
        earlier: &[AcmeCertificate],
        static_certs: &[CertificateConfig],
    ) -> Vec<String> {
        let list = &c.get_ref().names;
        if list.get_ref().is_empty() {
            self.error(list.span(), "an ACME certificate needs at least one name");
        }
        let mut names: Vec<String> = Vec::new();
        for n in list.get_ref() {
            let name = n.get_ref().trim_end_matches('.').to_ascii_lowercase();
            if let Err(reason) = issuable(&name) {
                self.error(n.span(), format!("\"{name}\" cannot be issued: {reason}"));
                continue;
            }
            if name.starts_with("*.") && challenge != ChallengeKind::Dns01 {
                self.error(
                    n.span(),
                    format!(
                        "wildcard \"{name}\" can only be issued through dns-01, not {}",
                        challenge.as_str()
                    ),
                );
            }
            if names.contains(&name) || earlier.iter().any(|e| e.names.contains(&name)) {
                self.error(
                    n.span(),
                    format!("\"{name}\" is listed in more than one ACME certificate"),
                );
                continue;
            }
            if static_certs.iter().any(|s| s.names.contains(&name)) {
                self.error(
                    n.span(),
                    format!("\"{name}\" already has a certificate from a file in [[certificates]]"),
                );
            }
            names.push(name);
        }
        if names.len() > 100 {
            self.error(
                list.span(),
                "an ACME certificate holds at most 100 names (Let's Encrypt's limit)",
            );
        }
        names
    }
}

/// Whether a public CA can issue for `name`: a DNS name of at least two labels, at most one
/// leading wildcard label, no IP address.
fn issuable(name: &str) -> Result<(), &'static str> {
    let base = name.strip_prefix("*.").unwrap_or(name);
    if base.parse::<std::net::IpAddr>().is_ok() {
        return Err("IP addresses are not issued by this client");
    }
    if base.contains('*') {
        return Err("a wildcard may only be the whole leftmost label (\"*.example.com\")");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    let labels: Vec<&str> = base.split('.').collect();
    if labels.len() < 2 {
        return Err("a CA issues only for fully qualified names (two labels or more)");
    }
    let valid = labels.iter().all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if valid {
        Ok(())
    } else {
        Err("not a valid DNS name (letters, digits and '-' in labels of 1 to 63)")
    }
}

fn pem_has_certificate(pem: &[u8]) -> bool {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem).any(|c| c.is_ok())
}

fn executable(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err("is not a file".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err("is not executable".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot be used: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::issuable;

    #[test]
    fn issuable_names() {
        assert!(issuable("example.com").is_ok());
        assert!(issuable("*.example.com").is_ok());
        assert!(issuable("localhost").is_err());
        assert!(issuable("10.0.0.1").is_err());
        assert!(issuable("a.*.example.com").is_err());
        assert!(issuable("-a.example.com").is_err());
        assert!(issuable("a_b.example.com").is_err());
    }
}
