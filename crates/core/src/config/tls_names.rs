//! The names of cipher suites and key-exchange groups that `[tls]` takes (IANA and OpenSSL spellings) and how each is judged: usable, weak, or known but not in this build.

use rustls::{CipherSuite, NamedGroup};

/// Why a suite or group name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("unknown {kind} \"{name}\" ({hint})")]
    Unknown {
        kind: &'static str,
        name: String,
        hint: &'static str,
    },
    #[error("{kind} \"{name}\" is weak ({why}): refused")]
    Weak {
        kind: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("{kind} \"{name}\" is not available in this build ({why})")]
    Unavailable {
        kind: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("\"{0}\" is an OpenSSL cipher-list keyword or exclusion; list the suites by name")]
    Keyword(String),
}

const SUITE: &str = "cipher suite";
const SUITE_HINT: &str = "IANA names such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or TLS13_AES_128_GCM_SHA256, or OpenSSL names such as ECDHE-RSA-AES128-GCM-SHA256";
const SUITE_RING: &str =
    "rustls with ring offers the AES-GCM and ChaCha20-Poly1305 suites, with ECDHE in TLS 1.2";

/// OpenSSL's names of TLS 1.2 suites (those nginx configs carry) and their IANA names.
const OPENSSL_NAMES: &[(&str, &str)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "DHE-RSA-CHACHA20-POLY1305",
        "DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    ("ECDHE-ECDSA-AES128-CCM", "ECDHE_ECDSA_WITH_AES_128_CCM"),
    ("ECDHE-ECDSA-AES256-CCM", "ECDHE_ECDSA_WITH_AES_256_CCM"),
    ("ECDHE-ECDSA-AES128-CCM8", "ECDHE_ECDSA_WITH_AES_128_CCM_8"),
    ("ECDHE-ECDSA-AES256-CCM8", "ECDHE_ECDSA_WITH_AES_256_CCM_8"),
    (
        "ECDHE-ECDSA-ARIA128-GCM-SHA256",
        "ECDHE_ECDSA_WITH_ARIA_128_GCM_SHA256",
    ),
    (
        "ECDHE-ARIA128-GCM-SHA256",
        "ECDHE_RSA_WITH_ARIA_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-SHA256",
        "ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-SHA384",
        "ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    ),
    (
        "ECDHE-RSA-AES256-SHA384",
        "ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    ),
    ("ECDHE-ECDSA-AES128-SHA", "ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
    ("ECDHE-RSA-AES128-SHA", "ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    ("ECDHE-ECDSA-AES256-SHA", "ECDHE_ECDSA_WITH_AES_256_CBC_SHA"),
    ("ECDHE-RSA-AES256-SHA", "ECDHE_RSA_WITH_AES_256_CBC_SHA"),
    ("DHE-RSA-AES128-SHA256", "DHE_RSA_WITH_AES_128_CBC_SHA256"),
    ("DHE-RSA-AES256-SHA256", "DHE_RSA_WITH_AES_256_CBC_SHA256"),
    ("DHE-RSA-AES128-SHA", "DHE_RSA_WITH_AES_128_CBC_SHA"),
    ("DHE-RSA-AES256-SHA", "DHE_RSA_WITH_AES_256_CBC_SHA"),
    ("AES128-GCM-SHA256", "RSA_WITH_AES_128_GCM_SHA256"),
    ("AES256-GCM-SHA384", "RSA_WITH_AES_256_GCM_SHA384"),
    ("AES128-SHA256", "RSA_WITH_AES_128_CBC_SHA256"),
    ("AES256-SHA256", "RSA_WITH_AES_256_CBC_SHA256"),
    ("AES128-SHA", "RSA_WITH_AES_128_CBC_SHA"),
    ("AES256-SHA", "RSA_WITH_AES_256_CBC_SHA"),
    ("CAMELLIA128-SHA", "RSA_WITH_CAMELLIA_128_CBC_SHA"),
    ("CAMELLIA256-SHA", "RSA_WITH_CAMELLIA_256_CBC_SHA"),
    ("SEED-SHA", "RSA_WITH_SEED_CBC_SHA"),
    ("IDEA-CBC-SHA", "RSA_WITH_IDEA_CBC_SHA"),
    ("DES-CBC3-SHA", "RSA_WITH_3DES_EDE_CBC_SHA"),
    ("ECDHE-RSA-DES-CBC3-SHA", "ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    ("EDH-RSA-DES-CBC3-SHA", "DHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    ("DES-CBC-SHA", "RSA_WITH_DES_CBC_SHA"),
    ("RC4-SHA", "RSA_WITH_RC4_128_SHA"),
    ("RC4-MD5", "RSA_WITH_RC4_128_MD5"),
    ("ECDHE-RSA-RC4-SHA", "ECDHE_RSA_WITH_RC4_128_SHA"),
    ("ECDHE-ECDSA-RC4-SHA", "ECDHE_ECDSA_WITH_RC4_128_SHA"),
    ("NULL-SHA", "RSA_WITH_NULL_SHA"),
    ("NULL-MD5", "RSA_WITH_NULL_MD5"),
    ("NULL-SHA256", "RSA_WITH_NULL_SHA256"),
    ("ECDHE-RSA-NULL-SHA", "ECDHE_RSA_WITH_NULL_SHA"),
    ("EXP-RC4-MD5", "RSA_EXPORT_WITH_RC4_40_MD5"),
    ("EXP-DES-CBC-SHA", "RSA_EXPORT_WITH_DES40_CBC_SHA"),
    ("ADH-AES128-SHA", "DH_anon_WITH_AES_128_CBC_SHA"),
    ("ADH-AES256-SHA", "DH_anon_WITH_AES_256_CBC_SHA"),
    ("ADH-AES128-GCM-SHA256", "DH_anon_WITH_AES_128_GCM_SHA256"),
    ("AECDH-AES128-SHA", "ECDH_anon_WITH_AES_128_CBC_SHA"),
    ("AECDH-AES256-SHA", "ECDH_anon_WITH_AES_256_CBC_SHA"),
];

/// Key exchanges of IANA TLS 1.2 names, and whether each gives forward secrecy.
const KEY_EXCHANGES: &[(&str, Kx)] = &[
    ("ECDHE_ECDSA", Kx::Ecdhe),
    ("ECDHE_RSA", Kx::Ecdhe),
    ("DHE_RSA", Kx::Dhe),
    ("DHE_DSS", Kx::Dhe),
    ("DHE_PSK", Kx::Dhe),
    ("ECDHE_PSK", Kx::Dhe),
    ("RSA", Kx::Static),
    ("RSA_PSK", Kx::Static),
    ("PSK", Kx::Static),
    ("DH_RSA", Kx::Static),
    ("DH_DSS", Kx::Static),
    ("ECDH_RSA", Kx::Static),
    ("ECDH_ECDSA", Kx::Static),
    ("DH_ANON", Kx::Anon),
    ("ECDH_ANON", Kx::Anon),
    ("RSA_EXPORT", Kx::Export),
    ("DH_ANON_EXPORT", Kx::Export),
    ("DHE_RSA_EXPORT", Kx::Export),
    ("DHE_DSS_EXPORT", Kx::Export),
    ("DH_RSA_EXPORT", Kx::Export),
    ("DH_DSS_EXPORT", Kx::Export),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kx {
    Ecdhe,
    Dhe,
    Static,
    Anon,
    Export,
}

/// Bulk ciphers (with their MAC or PRF hash) of IANA TLS 1.2 names; `None`: weak, with why.
const BULK: &[(&str, Option<&str>)] = &[
    ("AES_128_GCM_SHA256", None),
    ("AES_256_GCM_SHA384", None),
    ("CHACHA20_POLY1305_SHA256", None),
    ("AES_128_CCM", None),
    ("AES_256_CCM", None),
    ("AES_128_CCM_8", None),
    ("AES_256_CCM_8", None),
    ("ARIA_128_GCM_SHA256", None),
    ("ARIA_256_GCM_SHA384", None),
    ("CAMELLIA_128_GCM_SHA256", None),
    ("CAMELLIA_256_GCM_SHA384", None),
    ("AES_128_CBC_SHA", Some("CBC mode")),
    ("AES_256_CBC_SHA", Some("CBC mode")),
    ("AES_128_CBC_SHA256", Some("CBC mode")),
    ("AES_256_CBC_SHA256", Some("CBC mode")),
    ("AES_256_CBC_SHA384", Some("CBC mode")),
    ("CAMELLIA_128_CBC_SHA", Some("CBC mode")),
    ("CAMELLIA_256_CBC_SHA", Some("CBC mode")),
    ("CAMELLIA_128_CBC_SHA256", Some("CBC mode")),
    ("CAMELLIA_256_CBC_SHA256", Some("CBC mode")),
    ("ARIA_128_CBC_SHA256", Some("CBC mode")),
    ("ARIA_256_CBC_SHA384", Some("CBC mode")),
    ("SEED_CBC_SHA", Some("CBC mode")),
    ("IDEA_CBC_SHA", Some("CBC mode")),
    ("3DES_EDE_CBC_SHA", Some("3DES")),
    ("DES_CBC_SHA", Some("DES")),
    ("DES40_CBC_SHA", Some("DES")),
    ("RC4_128_SHA", Some("RC4")),
    ("RC4_128_MD5", Some("RC4")),
    ("RC4_40_MD5", Some("RC4")),
    ("NULL_SHA", Some("NULL cipher, no encryption")),
    ("NULL_MD5", Some("NULL cipher, no encryption")),
    ("NULL_SHA256", Some("NULL cipher, no encryption")),
    ("NULL_SHA384", Some("NULL cipher, no encryption")),
];

/// Words of OpenSSL's cipher-list language that are not suite names.
const KEYWORDS: &[&str] = &[
    "ALL",
    "DEFAULT",
    "HIGH",
    "MEDIUM",
    "LOW",
    "COMPLEMENTOFDEFAULT",
    "COMPLEMENTOFALL",
    "ANULL",
    "ENULL",
    "NULL",
    "AES",
    "AESGCM",
    "AES128",
    "AES256",
    "CHACHA20",
    "ECDHE",
    "EECDH",
    "EDH",
    "DHE",
    "KRSA",
    "ARSA",
    "AECDSA",
    "RSA",
    "SHA",
    "SHA256",
    "SHA384",
    "MD5",
    "RC4",
    "3DES",
    "EXPORT",
    "EXP",
    "SSLV3",
    "TLSV1",
    "TLSV1.2",
    "PSK",
    "SRP",
    "CAMELLIA",
    "ARIA",
];

/// The rustls suite of a name, or why it is refused.
pub fn cipher_suite(name: &str) -> Result<CipherSuite, NameError> {
    let upper = name.trim().to_ascii_uppercase();
    let unknown = || NameError::Unknown {
        kind: SUITE,
        name: name.to_string(),
        hint: SUITE_HINT,
    };
    if upper.starts_with(['!', '+', '-', '@']) || KEYWORDS.contains(&upper.as_str()) {
        return Err(NameError::Keyword(name.to_string()));
    }
    // TLS 1.3: IANA `TLS_AES_128_GCM_SHA256` (OpenSSL says the same) or rustls' `TLS13_...`.
    let tls13 = upper
        .strip_prefix("TLS13_")
        .or_else(|| upper.strip_prefix("TLS_").filter(|r| !r.contains("_WITH_")));
    if let Some(rest) = tls13 {
        return match rest {
            "AES_128_GCM_SHA256" => Ok(CipherSuite::TLS13_AES_128_GCM_SHA256),
            "AES_256_GCM_SHA384" => Ok(CipherSuite::TLS13_AES_256_GCM_SHA384),
            "CHACHA20_POLY1305_SHA256" => Ok(CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
            "AES_128_CCM_SHA256" | "AES_128_CCM_8_SHA256" => Err(NameError::Unavailable {
                kind: SUITE,
                name: name.to_string(),
                why: SUITE_RING,
            }),
            _ => Err(unknown()),
        };
    }
    let iana = match upper.strip_prefix("TLS_") {
        Some(rest) => rest.to_string(),
        None => OPENSSL_NAMES
            .iter()
            .find(|(o, _)| *o == upper)
            .map(|(_, i)| i.to_ascii_uppercase())
            .ok_or_else(unknown)?,
    };
    let (kx, bulk) = iana.split_once("_WITH_").ok_or_else(unknown)?;
    let kx = KEY_EXCHANGES
        .iter()
        .find(|(k, _)| *k == kx)
        .map(|(_, k)| *k)
        .ok_or_else(unknown)?;
    let weak_bulk = BULK
        .iter()
        .find(|(b, _)| *b == bulk)
        .map(|(_, w)| *w)
        .ok_or_else(unknown)?;
    let weak = |why| NameError::Weak {
        kind: SUITE,
        name: name.to_string(),
        why,
    };
    match kx {
        Kx::Export => return Err(weak("EXPORT-grade")),
        Kx::Anon => return Err(weak("anonymous key exchange, no authentication")),
        _ => {}
    }
    if let Some(why) = weak_bulk {
        return Err(weak(why));
    }
    if kx == Kx::Static {
        return Err(weak("static key exchange, no forward secrecy"));
    }
    let suite = match (kx, iana.as_str()) {
        (Kx::Ecdhe, "ECDHE_ECDSA_WITH_AES_128_GCM_SHA256") => {
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        }
        (Kx::Ecdhe, "ECDHE_ECDSA_WITH_AES_256_GCM_SHA384") => {
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        }
        (Kx::Ecdhe, "ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256") => {
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        (Kx::Ecdhe, "ECDHE_RSA_WITH_AES_128_GCM_SHA256") => {
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        }
        (Kx::Ecdhe, "ECDHE_RSA_WITH_AES_256_GCM_SHA384") => {
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        }
        (Kx::Ecdhe, "ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256") => {
            CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => {
            return Err(NameError::Unavailable {
                kind: SUITE,
                name: name.to_string(),
                why: SUITE_RING,
            })
        }
    };
    Ok(suite)
}

const GROUP: &str = "key-exchange group";

/// The rustls group of a name (IANA, OpenSSL or NIST spelling), or why it is refused.
pub fn kx_group(name: &str) -> Result<NamedGroup, NameError> {
    let lower = name.trim().to_ascii_lowercase();
    let unavailable = || NameError::Unavailable {
        kind: GROUP,
        name: name.to_string(),
        why: "rustls with ring offers X25519, P-256 and P-384",
    };
    match lower.as_str() {
        "x25519" => Ok(NamedGroup::X25519),
        "p-256" | "secp256r1" | "prime256v1" => Ok(NamedGroup::secp256r1),
        "p-384" | "secp384r1" => Ok(NamedGroup::secp384r1),
        "x448"
        | "p-521"
        | "secp521r1"
        | "ffdhe2048"
        | "ffdhe3072"
        | "ffdhe4096"
        | "ffdhe6144"
        | "ffdhe8192"
        | "x25519mlkem768"
        | "secp256r1mlkem768"
        | "secp384r1mlkem1024"
        | "mlkem768"
        | "mlkem1024"
        | "brainpoolp256r1"
        | "brainpoolp384r1"
        | "brainpoolp512r1"
        | "brainpoolp256r1tls13"
        | "brainpoolp384r1tls13"
        | "brainpoolp512r1tls13" => Err(unavailable()),
        "p-192" | "p-224" | "secp192r1" | "prime192v1" | "secp224r1" | "secp160r1"
        | "secp160k1" | "secp192k1" | "secp224k1" | "sect163k1" | "sect163r2" => {
            Err(NameError::Weak {
                kind: GROUP,
                name: name.to_string(),
                why: "below 128-bit security",
            })
        }
        _ => Err(NameError::Unknown {
            kind: GROUP,
            name: name.to_string(),
            hint: "X25519, P-256 (secp256r1, prime256v1), P-384 (secp384r1)",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_by_iana_and_openssl_names() {
        let ok = |n: &str| cipher_suite(n).expect(n);
        assert_eq!(
            ok("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            ok("ECDHE-RSA-AES128-GCM-SHA256")
        );
        assert_eq!(ok("TLS13_AES_128_GCM_SHA256"), ok("TLS_AES_128_GCM_SHA256"));
        assert_eq!(
            ok("ecdhe-ecdsa-chacha20-poly1305"),
            CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        );
        for weak in [
            "ECDHE-RSA-AES128-SHA",
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
            "RC4-SHA",
            "DES-CBC3-SHA",
            "NULL-SHA",
            "EXP-RC4-MD5",
            "ADH-AES128-SHA",
            "AES128-GCM-SHA256",
            "TLS_RSA_WITH_AES_256_GCM_SHA384",
        ] {
            assert!(
                matches!(cipher_suite(weak), Err(NameError::Weak { .. })),
                "{weak}: {:?}",
                cipher_suite(weak)
            );
        }
        for unavailable in [
            "TLS_AES_128_CCM_SHA256",
            "ECDHE-ECDSA-AES128-CCM",
            "DHE-RSA-AES128-GCM-SHA256",
            "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ] {
            assert!(
                matches!(
                    cipher_suite(unavailable),
                    Err(NameError::Unavailable { .. })
                ),
                "{unavailable}"
            );
        }
        assert!(matches!(
            cipher_suite("TLS_FOO_WITH_BAR"),
            Err(NameError::Unknown { .. })
        ));
        assert!(matches!(
            cipher_suite("ECDHE-RSA-AES128-GCM-SHA257"),
            Err(NameError::Unknown { .. })
        ));
        assert!(matches!(cipher_suite("HIGH"), Err(NameError::Keyword(_))));
        assert!(matches!(cipher_suite("!aNULL"), Err(NameError::Keyword(_))));
    }

    #[test]
    fn groups() {
        assert_eq!(kx_group("prime256v1"), Ok(NamedGroup::secp256r1));
        assert_eq!(kx_group("X25519"), Ok(NamedGroup::X25519));
        assert!(matches!(
            kx_group("X448"),
            Err(NameError::Unavailable { .. })
        ));
        assert!(matches!(
            kx_group("ffdhe2048"),
            Err(NameError::Unavailable { .. })
        ));
        assert!(matches!(kx_group("secp192r1"), Err(NameError::Weak { .. })));
        assert!(matches!(kx_group("curve9"), Err(NameError::Unknown { .. })));
    }
}
