//! The OCSP stapling service: fetches a response for every served certificate that names a responder, refreshes it before it runs out, and staples it through the runtime's writer.
//!
//! Each certificate is looked at again every few seconds (new ones come from reloads and ACME).
//! A response is refreshed at half its validity (thisUpdate..nextUpdate); a failed fetch is
//! logged and retried with a backoff, and the last good response stays stapled until its
//! nextUpdate passes. A certificate without a responder URL is served unstapled, noted once at
//! info (Let's Encrypt dropped OCSP URLs in 2025).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;

use crate::runtime::Runtime;
use crate::tls::ocsp;

/// How often the served certificates are looked at.
const SCAN_EVERY: Duration = Duration::from_secs(2);
/// A response without nextUpdate is fetched again after this.
const NO_END_REFRESH: Duration = Duration::from_secs(3600);
/// Bounds on the time between refreshes of a good response.
const MIN_REFRESH: Duration = Duration::from_secs(60);
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// The first retry after a failure; doubling up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

pub struct OcspService {
    runtime: Arc<Runtime>,
}

impl OcspService {
    pub fn new(runtime: Arc<Runtime>) -> OcspService {
        OcspService { runtime }
    }
}

/// One certificate with a responder.
struct Tracked {
    url: String,
    chain: Vec<CertificateDer<'static>>,
    /// When to fetch next.
    due: Instant,
    /// The nextUpdate of the response stapled now, if one is.
    stapled_until: Option<Option<SystemTime>>,
    backoff: Duration,
}

#[async_trait]
impl BackgroundService for OcspService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = match reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            // A fresh connection per fetch (they are hours apart): an idle pooled one would
            // hold up a responder that serves one connection at a time.
            .pool_max_idle_per_host(0)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                log::error!("OCSP stapling is off: cannot build an HTTP client: {e}");
                return;
            }
        };
        let mut tracked: HashMap<Vec<u8>, Tracked> = HashMap::new();
        let mut noted: HashSet<Vec<u8>> = HashSet::new();
        // The newest snapshot from the watch, as the other background services read it: loading
        // the swap here every scan would count as a request's load in debug builds.
        let published = self.runtime.subscribe();
        loop {
            let on = published.borrow().config.tls.ocsp_stapling;
            let served = if on {
                self.runtime.certs.certificates()
            } else {
                Vec::new()
            };
            self.follow(&served, &mut tracked, &mut noted);
            let now = Instant::now();
            let due: Vec<Vec<u8>> = tracked
                .iter()
                .filter(|(_, t)| t.due <= now)
                .map(|(leaf, _)| leaf.clone())
                .collect();
            for leaf in due {
                if let Some(t) = tracked.get_mut(&leaf) {
                    self.refresh(&client, &leaf, t).await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SCAN_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl OcspService {
    /// Starts tracking new certificates with a responder and stops tracking (and stapling)
    /// those no longer served.
    fn follow(
        &self,
        served: &[Arc<CertifiedKey>],
        tracked: &mut HashMap<Vec<u8>, Tracked>,
        noted: &mut HashSet<Vec<u8>>,
    ) {
        let mut now_served = HashSet::new();
        for key in served {
            let Some(leaf) = key.cert.first() else {
                continue;
            };
            let der = leaf.as_ref().to_vec();
            now_served.insert(der.clone());
            if tracked.contains_key(&der) || noted.contains(&der) {
                continue;
            }
            match ocsp::responder_url(leaf) {
                Some(url) => {
                    tracked.insert(
                        der,
                        Tracked {
                            url,
                            chain: key.cert.clone(),
                            due: Instant::now(),
                            stapled_until: None,
                            backoff: FIRST_BACKOFF,
                        },
                    );
                }
                None => {
                    log::info!(
                        "certificate {} names no OCSP responder: served without a stapled response",
                        describe(leaf)
                    );
                    noted.insert(der);
                }
            }
        }
        tracked.retain(|leaf, t| {
            let keep = now_served.contains(leaf);
            if !keep && t.stapled_until.is_some() {
                self.runtime.set_ocsp_staple(leaf, None);
            }
            keep
        });
        noted.retain(|leaf| now_served.contains(leaf));
    }

    /// Fetches and staples a response for `t`, or schedules a retry.
    async fn refresh(&self, client: &reqwest::Client, leaf: &[u8], t: &mut Tracked) {
        let now = SystemTime::now();
        match fetch(client, &t.url, &t.chain).await {
            Ok((der, verdict)) => {
                self.runtime.set_ocsp_staple(leaf, Some(der));
                t.stapled_until = Some(verdict.next_update);
                t.backoff = FIRST_BACKOFF;
                let wait = match verdict.next_update {
                    Some(next) => next
                        .duration_since(verdict.this_update)
                        .unwrap_or_default()
                        .checked_div(2)
                        .unwrap_or_default()
                        .saturating_sub(
                            now.duration_since(verdict.this_update).unwrap_or_default(),
                        ),
                    None => NO_END_REFRESH,
                };
                let wait = wait.clamp(MIN_REFRESH, MAX_REFRESH);
                log::info!(
                    "OCSP response for {} stapled (good; next refresh in {}s)",
                    describe(&t.chain[0]),
                    wait.as_secs()
                );
                t.due = Instant::now() + wait;
            }
            Err(e) => {
                let expired = matches!(t.stapled_until, Some(Some(until)) if until <= now);
                let revoked = matches!(e, FetchError::Check(ocsp::OcspError::Revoked));
                if t.stapled_until.is_some() && (expired || revoked) {
                    self.runtime.set_ocsp_staple(leaf, None);
                    t.stapled_until = None;
                }
                let kept = if t.stapled_until.is_some() {
                    "the last good response stays stapled until it expires"
                } else {
                    "served unstapled"
                };
                log::warn!(
                    "OCSP for {} from {}: {e}; {kept}; retrying in {}s",
                    describe(&t.chain[0]),
                    t.url,
                    t.backoff.as_secs()
                );
                t.due = Instant::now() + t.backoff;
                // Retried no later than the stapled response runs out, so it is dropped then.
                if let Some(Some(until)) = t.stapled_until {
                    let left = until.duration_since(now).unwrap_or_default();
                    t.due = t.due.min(Instant::now() + left);
                }
                t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Check(#[from] ocsp::OcspError),
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the responder answered HTTP {0}")]
    Status(u16),
}

/// POSTs the OCSP request of `chain` to `url` and checks the answer.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    chain: &[CertificateDer<'static>],
) -> Result<(Vec<u8>, ocsp::Verdict), FetchError> {
    let request = ocsp::request(chain)?;
    let resp = client
        .post(url)
        .header("content-type", "application/ocsp-request")
        .header("accept", "application/ocsp-response")
        .body(request)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status().as_u16()));
    }
    let der = resp.bytes().await?.to_vec();
    let verdict = ocsp::check(&der, chain, SystemTime::now())?;
    Ok((der, verdict))
}

/// The certificate's subject, for logs.
fn describe(leaf: &CertificateDer<'_>) -> String {
    x509_parser::parse_x509_certificate(leaf)
        .map(|(_, c)| format!("\"{}\"", c.subject()))
        .unwrap_or_else(|_| "(unparsable)".into())
}
