//! The ACME protocol side: the account (created once, stored, restored) and one order, challenges included.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::storage::CertStorage;
use super::{alpn, dns, AcmeError, AcmeState, ChallengeGuard};
use crate::config::{AcmeCertificate, AcmeConfig, ChallengeKind};

/// How the order is polled while the CA validates and issues: quick first, for a CA that
/// answers in milliseconds, then slower; a CA that takes longer than this fails the attempt.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(50))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// Restores the account saved for the directory, or creates (and saves) one.
///
/// A saved account is restored with `create_from_key`: if the CA forgot it, the same key is
/// registered again. Only a missing or unreadable saved account creates a new key.
pub async fn account(cfg: &AcmeConfig, storage: &dyn CertStorage) -> Result<Account, AcmeError> {
    let builder = || match &cfg.ca_root {
        Some(root) => {
            Account::builder_with_root(root).map_err(|e| AcmeError::CaRoot(e.to_string()))
        }
        None => Ok(Account::builder()?),
    };
    if let Some(saved) = storage.load_account(&cfg.directory)? {
        match serde_json::from_slice::<AccountCredentials>(&saved) {
            Ok(creds) => {
                let pkcs8 =
                    PrivatePkcs8KeyDer::from(creds.private_key().secret_pkcs8_der().to_vec());
                let key = instant_acme::Key::from_pkcs8_der(pkcs8.clone_key())?;
                let (account, fresh) = builder()?
                    .create_from_key((key, PrivateKeyDer::Pkcs8(pkcs8)), cfg.directory.clone())
                    .await?;
                if account_id(&saved) != Some(account.id().to_string()) {
                    log::warn!(
                        "acme: the CA did not know our account any more; registered the same key again as {}",
                        account.id()
                    );
                    save(storage, &cfg.directory, &fresh)?;
                }
                return Ok(account);
            }
            Err(e) => log::error!(
                "acme: the saved account for {} is unreadable ({e}); creating a new one",
                cfg.directory
            ),
        }
    }
    let contact = cfg.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = cfg
        .eab
        .as_ref()
        .map(|e| ExternalAccountKey::new(e.kid.clone(), e.hmac_key.expose()));
    let (account, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory.clone(),
            eab.as_ref(),
        )
        .await?;
    save(storage, &cfg.directory, &creds)?;
    log::info!(
        "acme: created account {} at {}",
        account.id(),
        cfg.directory
    );
    Ok(account)
}

fn account_id(saved: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(saved).ok()?;
    v["id"].as_str().map(str::to_string)
}

fn save(
    storage: &dyn CertStorage,
    directory: &str,
    creds: &AccountCredentials,
) -> Result<(), AcmeError> {
    let json = serde_json::to_vec_pretty(creds).map_err(|e| AcmeError::Crypto(e.to_string()))?;
    Ok(storage.save_account(directory, &json)?)
}

/// A certificate fresh from the CA.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Places one order for `cert`, answers its challenges and returns the certificate and key.
pub async fn order(
    account: &Account,
    cfg: &AcmeConfig,
    cert: &AcmeCertificate,
    state: &Arc<AcmeState>,
) -> Result<Issued, AcmeError> {
    let identifiers: Vec<Identifier> = cert
        .names
        .iter()
        .map(|n| Identifier::Dns(n.clone()))
        .collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    log::info!(
        "acme: order {} for {} ({})",
        order.url(),
        cert.names.join(", "),
        cert.challenge.as_str()
    );
    // Answers stay up until the order is decided; dropping the guards withdraws them.
    let mut guards = Vec::new();
    let mut shared = Vec::new();
    let mut dns_records: Vec<(String, String)> = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError::Validation {
                        name: authz.identifier().to_string(),
                        detail: format!("authorization is {other:?}"),
                    })
                }
            }
            let name = authz.identifier().to_string();
            let kind = match cert.challenge {
                ChallengeKind::Http01 => ChallengeType::Http01,
                ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
                ChallengeKind::Dns01 => ChallengeType::Dns01,
            };
            let mut challenge = authz
                .challenge(kind)
                .ok_or_else(|| AcmeError::NoChallenge {
                    challenge: cert.challenge.as_str(),
                    name: name.clone(),
                })?;
            let key_auth = challenge.key_authorization();
            match cert.challenge {
                ChallengeKind::Http01 => {
                    guards.push(ChallengeGuard::http01(
                        state,
                        &challenge.token,
                        key_auth.as_str(),
                    ));
                    if let Some(fleet) = state.fleet.get() {
                        // Any node of the fleet may get the CA's request: every node answers.
                        shared.push(
                            fleet
                                .share_token(&challenge.token, key_auth.as_str())
                                .await
                                .map_err(AcmeError::Fleet)?,
                        );
                        tokio::time::sleep(super::fleet::TOKEN_SPREAD).await;
                    }
                }
                ChallengeKind::TlsAlpn01 => {
                    let c = alpn::challenge_cert(&name, key_auth.digest().as_ref())?;
                    guards.push(ChallengeGuard::tls_alpn01(state, &name, c));
                }
                ChallengeKind::Dns01 => {
                    let record = dns::record_name(&name);
                    let value = key_auth.dns_value();
                    let hook = hook_path(cfg)?;
                    dns::run(hook, "present", &record, &value, cfg.dns_hook_timeout).await?;
                    dns_records.push((record, value));
                }
            }
            challenge.set_ready().await?;
        }
        let status = order.poll_ready(&POLL).await?;
        if status != OrderStatus::Ready {
            return Err(invalid_detail(&mut order).await);
        }
        let (csr, key_pem) = csr(&cert.names)?;
        order.finalize_csr(&csr).await?;
        let chain_pem = order.poll_certificate(&POLL).await?;
        Ok(Issued { chain_pem, key_pem })
    }
    .await;
    drop(guards);
    drop(shared);
    if let Ok(hook) = hook_path(cfg) {
        for (record, value) in dns_records {
            if let Err(e) = dns::run(hook, "cleanup", &record, &value, cfg.dns_hook_timeout).await {
                log::warn!("acme: {e}");
            }
        }
    }
    result
}

fn hook_path(cfg: &AcmeConfig) -> Result<&std::path::Path, AcmeError> {
    cfg.dns_hook
        .as_deref()
        .ok_or_else(|| AcmeError::DnsHook("no dns_hook configured".into()))
}

/// Why an order ended up invalid: the first failed challenge's error, as the CA put it.
async fn invalid_detail(order: &mut instant_acme::Order) -> AcmeError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        let name = authz.identifier().to_string();
        for c in &authz.challenges {
            if let Some(err) = &c.error {
                return AcmeError::Validation {
                    name,
                    detail: err.to_string(),
                };
            }
        }
    }
    AcmeError::OrderInvalid(format!("order {} is invalid", order.url()))
}

/// A fresh ECDSA P-256 key and a CSR for `names`; returns (CSR DER, key PEM).
fn csr(names: &[String]) -> Result<(Vec<u8>, String), AcmeError> {
    let crypto = |e: rcgen::Error| AcmeError::Crypto(e.to_string());
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(crypto)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let key = rcgen::KeyPair::generate().map_err(crypto)?;
    let request = params.serialize_request(&key).map_err(crypto)?;
    Ok((request.der().to_vec(), key.serialize_pem()))
}
