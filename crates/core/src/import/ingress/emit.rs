//! The converted routes, services, certificates and zones written as a commented Switchyard TOML file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use super::annotations::{Annotations, BackendProtocol, Cors};
use super::manifest::Manifests;
use super::{tls_covers, Finding, NeededFile, Route, ServiceKey, HTPASSWD_DIR, TLS_DIR};

pub struct Input<'a> {
    pub files: &'a [PathBuf],
    pub manifests: &'a Manifests,
    pub annotations: &'a [Annotations],
    pub routes: &'a [Route],
    pub ingress_comments: &'a BTreeMap<usize, Vec<String>>,
}

pub struct Output {
    pub toml: String,
    pub findings: Vec<Finding>,
    pub needed_files: Vec<NeededFile>,
}

/// A TOML string.
pub(super) fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn arr(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", parts.join(", "))
}

/// A comment, one `# ` line per line of `text`.
fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "# {line}");
    }
}

/// Let's Encrypt's ACME directories.
const LE_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
const LE_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// ingress-nginx's default HSTS header on servers with a certificate.
const HSTS: &str = "max-age=31536000; includeSubDomains";

pub fn write(input: &Input<'_>) -> Output {
    let mut out = String::new();
    let mut findings = Vec::new();
    let mut needed = Vec::new();
    let files: Vec<String> = input
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    // Where an Ingress is, in the form `settle` (mod.rs) reads back from the comments.
    let src = |i: usize| {
        let (ing, origin) = &input.manifests.ingresses[i];
        format!(
            "Ingress {}/{} ({}:{})",
            ing.metadata.namespace(),
            ing.metadata.name,
            origin.file,
            origin.line
        )
    };
    comment(
        &mut out,
        &format!(
            "Written by `switchyard import ingress` from {}.\n\
             ingress-nginx's ConfigMap defaults are written out in [defaults] and [limits]; \
             lines marked NOT CARRIED OVER need review.",
            files.join(", ")
        ),
    );
    out.push_str(
        "\n[[listeners]]\nname = \"http\"\naddress = \"0.0.0.0:80\"\n\n\
         [[listeners]]\nname = \"https\"\naddress = \"0.0.0.0:443\"\ntls = true\n\n",
    );

    // ingress-nginx's defaults: 1m bodies, 5s connect, 60s read and send, no gzip.
    out.push_str(
        "# ingress-nginx's defaults: proxy-body-size 1m, proxy-connect-timeout 5,\n\
         # proxy-read-timeout and proxy-send-timeout 60, use-gzip false.\n\
         [defaults]\nmax_body_size = \"1MB\"\nconnect_timeout = \"5s\"\nread_timeout = \"60s\"\n\
         send_timeout = \"60s\"\ncompression = false\n\n",
    );

    // Zones, per Ingress, shared by its routes as ingress-nginx shares them.
    let mut zones = String::new();
    let mut route_zones: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (i, (ing, _)) in input.manifests.ingresses.iter().enumerate() {
        let a = &input.annotations[i];
        if a.canary.is_some() || !input.routes.iter().any(|r| r.ingress == i) {
            continue;
        }
        let base = format!("{}-{}", ing.metadata.namespace(), ing.metadata.name);
        let mut names = Vec::new();
        if let Some(n) = a.connections {
            let name = format!("{base}-conn");
            let _ = write!(
                zones,
                "# limit-connections {n}; {}\n[limits.zones.{}]\nkind = \"concurrency\"\nmax = {n}\n\n",
                src(i),
                q(&name)
            );
            names.push(name);
        }
        for (rate, unit, key) in [(a.rpm, "m", "limit-rpm"), (a.rps, "s", "limit-rps")] {
            if let Some(n) = rate {
                let name = format!("{base}-rp{unit}");
                let burst = u64::from(n) * u64::from(a.burst_multiplier);
                let _ = write!(
                    zones,
                    "# {key} {n}, burst {n} x limit-burst-multiplier {}, nodelay; {}\n\
                     [limits.zones.{}]\nrate = \"{n}r/{unit}\"\nburst = {burst}\n\n",
                    a.burst_multiplier,
                    src(i),
                    q(&name)
                );
                names.push(name);
            }
        }
        if !names.is_empty() {
            route_zones.insert(i, names);
        }
    }
    if !zones.is_empty() {
        out.push_str(
            "# ingress-nginx refuses with 503 (limit-req-status-code, limit-conn-status-code).\n\
             [limits]\nstatus = 503\n\n",
        );
        out.push_str(&zones);
    }

    // Certificates: TLS secrets as files, or ACME for cert-manager's issuers.
    let mut tls_hosts: Vec<String> = Vec::new();
    let mut named: BTreeSet<String> = BTreeSet::new();
    let mut certs = String::new();
    let mut acme_certs = String::new();
    let mut acme: Option<(String, String, usize)> = None;
    for (i, (ing, origin)) in input.manifests.ingresses.iter().enumerate() {
        let a = &input.annotations[i];
        let ns = ing.metadata.namespace();
        for tls in &ing.spec.tls {
            let hosts: Vec<String> = tls
                .hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect();
            tls_hosts.extend(hosts.iter().cloned());
            let fresh: Vec<String> = hosts
                .iter()
                .filter(|h| named.insert((*h).clone()))
                .cloned()
                .collect();
            if fresh.is_empty() {
                continue;
            }
            if let Some((kind, issuer)) = &a.issuer {
                if let Some((k0, i0, _)) = &acme {
                    if (k0, i0) != (kind, issuer) {
                        findings.push(Finding {
                            file: origin.file.clone(),
                            line: origin.line,
                            what: "cert-manager issuer".into(),
                            message: format!(
                                "{kind} {issuer}: Switchyard has one [acme] account, that of {k0} {i0}; \
                                 these names are ordered from it"
                            ),
                        });
                    }
                } else {
                    acme = Some((kind.clone(), issuer.clone(), i));
                }
                let (wild, plain): (Vec<String>, Vec<String>) =
                    fresh.into_iter().partition(|h| h.starts_with("*."));
                if !wild.is_empty() {
                    findings.push(Finding {
                        file: origin.file.clone(),
                        line: origin.line,
                        what: format!("tls hosts {}", wild.join(", ")),
                        message: "a wildcard needs dns-01, which needs a `dns_hook` script \
                                  (docs/acme.md): add an [[acme.certificates]] entry with \
                                  challenge = \"dns-01\" by hand"
                            .into(),
                    });
                }
                if !plain.is_empty() {
                    let _ = write!(
                        acme_certs,
                        "# {kind} {issuer}, secret {ns}/{}; {}\n[[acme.certificates]]\nnames = {}\n\n",
                        tls.secret_name.as_deref().unwrap_or(""),
                        src(i),
                        arr(&plain)
                    );
                }
                continue;
            }
            let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let cert = format!("{TLS_DIR}/{ns}/{secret}.crt");
            let key = format!("{TLS_DIR}/{ns}/{secret}.key");
            for (path, field) in [(&cert, "tls\\.crt"), (&key, "tls\\.key")] {
                needed.push(NeededFile {
                    path: path.clone(),
                    export: format!(
                        "kubectl -n {ns} get secret {secret} -o jsonpath='{{.data.{field}}}' | base64 -d > {path}"
                    ),
                });
            }
            let _ = write!(
                certs,
                "# secret {ns}/{secret}; {}\n[[certificates]]\ncert = {}\nkey = {}\nnames = {}\n\n",
                src(i),
                q(&cert),
                q(&key),
                arr(&fresh)
            );
        }
    }
    out.push_str(&certs);
    if let Some((kind, issuer, _)) = &acme {
        let found = input
            .manifests
            .issuers
            .iter()
            .find(|(k, iss, _)| k == kind && &iss.metadata.name == issuer);
        let _ = writeln!(out, "# cert-manager {kind} {issuer}");
        out.push_str("[acme]\n");
        match found.and_then(|(_, iss, _)| iss.spec.acme.clone()) {
            Some(acme) => {
                match acme.server.as_deref() {
                    None | Some(LE_PRODUCTION) => {}
                    Some(LE_STAGING) => out.push_str("staging = true\n"),
                    Some(other) => {
                        let _ = writeln!(out, "directory = {}", q(other));
                    }
                }
                if let Some(email) = &acme.email {
                    let _ = writeln!(out, "email = {}", q(email));
                }
            }
            None => out.push_str(
                "# its manifest was not among the files: Let's Encrypt production, no contact\n",
            ),
        }
        out.push('\n');
        out.push_str(&acme_certs);
    }

    // Services by key, named after their stable backend.
    let mut services: BTreeMap<&ServiceKey, String> = BTreeMap::new();
    let mut service_src: BTreeMap<String, String> = BTreeMap::new();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for r in input.routes {
        if services.contains_key(&r.key) {
            continue;
        }
        let s = &r.key.stable;
        let base = format!("{}-{}-{}", s.namespace, s.service, s.port);
        let mut name = base.clone();
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        service_src.insert(name.clone(), src(r.ingress));
        services.insert(&r.key, name);
    }

    // Routes, in the order of the Ingresses.
    let mut commented: BTreeSet<usize> = BTreeSet::new();
    for r in input.routes {
        let a = &input.annotations[r.ingress];
        if commented.insert(r.ingress) {
            let _ = writeln!(out, "# {}", src(r.ingress));
            for c in input.ingress_comments.get(&r.ingress).into_iter().flatten() {
                comment(&mut out, c);
            }
        }
        for c in &r.comments {
            comment(&mut out, c);
        }
        out.push_str("[[routes]]\n");
        let _ = writeln!(out, "host = {}", q(&r.host));
        let _ = writeln!(out, "path = {}", q(&r.path));
        let _ = writeln!(out, "service = {}", q(&services[&r.key]));
        if r.strip_prefix {
            out.push_str("strip_prefix = true # rewrite-target\n");
        }
        let tls = tls_hosts.iter().any(|t| tls_covers(t, &r.host));
        if a.force_ssl_redirect || (tls && a.ssl_redirect != Some(false)) {
            out.push_str("redirect_https = true\n");
        }
        if let Some(size) = &a.body_size {
            let _ = writeln!(out, "max_body_size = {}", q(size));
        }
        for (key, v) in [
            ("connect_timeout", a.connect_timeout),
            ("read_timeout", a.read_timeout),
            ("send_timeout", a.send_timeout),
        ] {
            if let Some(s) = v {
                let _ = writeln!(out, "{key} = \"{s}s\"");
            }
        }
        if let Some(zones) = route_zones.get(&r.ingress) {
            let _ = writeln!(out, "limits = {}", arr(zones));
        }
        if let Some(cors) = &a.cors {
            write_cors(&mut out, cors);
        }
        if !a.access.is_empty() {
            let _ = writeln!(out, "access = {}", arr(&a.access));
        }
        if let Some((realm, ns, secret)) = &a.basic_auth {
            let file = format!("{HTPASSWD_DIR}/{ns}/{secret}");
            if !needed.iter().any(|n| n.path == file) {
                needed.push(NeededFile {
                    path: file.clone(),
                    export: format!(
                        "kubectl -n {ns} get secret {secret} -o jsonpath='{{.data.auth}}' | base64 -d > {file}"
                    ),
                });
            }
            let realm = realm
                .as_deref()
                .map(|r| {
                    r.replace(['"', '\\'], "")
                        .chars()
                        .filter(|c| !c.is_control())
                        .collect::<String>()
                })
                .filter(|r| !r.is_empty());
            match realm {
                Some(realm) => {
                    let _ = writeln!(
                        out,
                        "basic_auth = {{ realm = {}, file = {} }}",
                        q(&realm),
                        q(&file)
                    );
                }
                None => {
                    let _ = writeln!(out, "basic_auth = {{ file = {} }}", q(&file));
                }
            }
        }
        if tls {
            let _ = writeln!(
                out,
                "response_headers = {{ Strict-Transport-Security = {} }} # ingress-nginx's hsts default",
                q(HSTS)
            );
        }
        out.push('\n');
    }

    for (key, name) in &services {
        let _ = writeln!(out, "# {}", service_src[name]);
        write_service(&mut out, name, key);
    }
    Output {
        toml: out,
        findings,
        needed_files: needed,
    }
}

fn write_cors(out: &mut String, cors: &Cors) {
    let mut parts = vec![format!("origins = {}", arr(&cors.origins))];
    if !cors.methods.is_empty() {
        parts.push(format!("methods = {}", arr(&cors.methods)));
    }
    if !cors.headers.is_empty() {
        parts.push(format!("headers = {}", arr(&cors.headers)));
    }
    if !cors.expose.is_empty() {
        parts.push(format!("expose = {}", arr(&cors.expose)));
    }
    if cors.credentials {
        parts.push("credentials = true".into());
    }
    if let Some(s) = cors.max_age {
        parts.push(format!("max_age = \"{s}s\""));
    }
    if cors.origins == ["*"] {
        out.push_str(
            "# cors-allow-origin \"*\": ingress-nginx also sends Allow-Credentials, which browsers\n\
             # refuse with a wildcard origin; answered without it (what browsers act on is the same)\n",
        );
    }
    let _ = writeln!(out, "cors = {{ {} }}", parts.join(", "));
}

fn write_service(out: &mut String, name: &str, key: &ServiceKey) {
    let transport = match key.protocol {
        BackendProtocol::Http => "",
        BackendProtocol::Https => "tls = true\nverify = false # ingress-nginx does not verify (proxy-ssl-verify off)\n",
        BackendProtocol::Grpc => "protocol = \"h2c\"\n",
        BackendProtocol::Grpcs => {
            "tls = true\nprotocol = \"h2\"\nverify = false # ingress-nginx does not verify (proxy-ssl-verify off)\n"
        }
    };
    let pool = |out: &mut String, pool: &str, weight: Option<u32>, server: &str| {
        let _ = writeln!(out, "[services.{}.pools.{}]", q(name), q(pool));
        if let Some(w) = weight {
            let _ = writeln!(out, "weight = {w}");
        }
        let _ = writeln!(out, "servers = [{}]", q(server));
        out.push_str(transport);
    };
    match &key.canary {
        None => pool(out, "main", None, &key.stable.address()),
        Some((server, c)) => {
            // Pools named so that pool_override reads ingress-nginx's header and cookie values:
            // "always" picks the canary, "never" the main pool, or the canary-by-header-value.
            let (stable_pool, canary_pool) = match &c.header_value {
                Some(v) => ("main".to_string(), v.clone()),
                None if c.header.is_some() || c.cookie.is_some() => {
                    ("never".into(), "always".into())
                }
                None => ("main".into(), "canary".into()),
            };
            let w = c.weight.min(c.total);
            let _ = writeln!(
                out,
                "# canary-weight {} of {}{}{}",
                c.weight,
                c.total,
                c.header
                    .as_deref()
                    .map(|h| format!(", canary-by-header {h}"))
                    .unwrap_or_default(),
                c.cookie
                    .as_deref()
                    .map(|h| format!(", canary-by-cookie {h}"))
                    .unwrap_or_default()
            );
            pool(out, &stable_pool, Some(c.total - w), &key.stable.address());
            pool(out, &canary_pool, Some(w), &server.address());
            let cookie = c.cookie.as_ref().filter(|_| canary_pool == "always");
            if c.header.is_some() || cookie.is_some() {
                let _ = writeln!(out, "[services.{}.pool_override]", q(name));
                if let Some(h) = &c.header {
                    let _ = writeln!(out, "header = {}", q(h));
                }
                if let Some(ck) = cookie {
                    let _ = writeln!(out, "cookie = {}", q(ck));
                }
            }
        }
    }
    if let Some(aff) = &key.affinity {
        let _ = writeln!(out, "[services.{}.affinity]", q(name));
        let _ = writeln!(out, "cookie = {}", q(&aff.cookie));
        match aff.max_age {
            Some(s) if s > 0 => {
                let _ = writeln!(out, "ttl = \"{s}s\"");
            }
            _ => out.push_str(
                "# ingress-nginx's cookie lasts the browser session; this one its ttl (24h)\n",
            ),
        }
    }
    // One block per service: a value Switchyard refuses takes the whole service out.
    out.push('\n');
}
