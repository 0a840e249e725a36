//! Kubernetes manifests read from YAML files into typed structs: Ingresses, Services and cert-manager issuers, each with its file and the line its document starts on.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_norway::Value;

use super::{Finding, IngressError};

/// Where a manifest came from: its file and the first line of its YAML document.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "string_map")]
    pub annotations: BTreeMap<String, String>,
}

impl Meta {
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// `networking.k8s.io/v1` Ingress, the fields ingress-nginx reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Ingress {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: IngressSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    #[serde(default)]
    pub default_backend: Option<IngressBackend>,
    #[serde(default)]
    pub tls: Vec<IngressTls>,
    #[serde(default)]
    pub rules: Vec<IngressRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub secret_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IngressRule {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub http: Option<HttpRule>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpRule {
    #[serde(default)]
    pub paths: Vec<HttpPath>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpPath {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub path_type: Option<String>,
    pub backend: IngressBackend,
}

impl HttpPath {
    /// The path as written, `/` when left out.
    pub fn path(&self) -> String {
        self.path.clone().unwrap_or_else(|| "/".into())
    }

    /// The path type, `ImplementationSpecific` when left out (as older manifests do).
    pub fn path_type(&self) -> String {
        self.path_type
            .clone()
            .unwrap_or_else(|| "ImplementationSpecific".into())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct IngressBackend {
    #[serde(default)]
    pub service: Option<ServiceBackend>,
    #[serde(default)]
    pub resource: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServiceBackend {
    pub name: String,
    #[serde(default)]
    pub port: ServicePort,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServicePort {
    #[serde(default)]
    pub number: Option<u16>,
    #[serde(default)]
    pub name: Option<String>,
}

/// `v1` Service: its ports (to resolve named ports) and whether it is headless.
#[derive(Debug, Clone, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(default)]
    pub ports: Vec<ServicePortSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    /// A number or a container port's name.
    #[serde(default)]
    pub target_port: Option<Value>,
}

impl Service {
    pub fn headless(&self) -> bool {
        self.spec.cluster_ip.as_deref() == Some("None")
    }
}

/// cert-manager `Issuer` or `ClusterIssuer`: its ACME server and contact.
#[derive(Debug, Clone, Deserialize)]
pub struct Issuer {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: IssuerSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IssuerSpec {
    #[serde(default)]
    pub acme: Option<IssuerAcme>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IssuerAcme {
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

/// Every manifest of the files that the conversion reads.
#[derive(Debug, Default)]
pub struct Manifests {
    pub ingresses: Vec<(Ingress, Origin)>,
    pub services: Vec<(Service, Origin)>,
    /// (`ClusterIssuer` or `Issuer`, the issuer, where)
    pub issuers: Vec<(String, Issuer, Origin)>,
}

/// Annotation values as strings: Kubernetes requires strings, but an unquoted `5` or `true`
/// is read as what it says rather than refused.
fn string_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: Option<BTreeMap<String, Value>> = Deserialize::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Null => String::new(),
                other => serde_norway::to_string(&other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            (k, v)
        })
        .collect())
}

/// The documents of a YAML stream: (first line, text), each text preceded by blank lines up to
/// its first line, so that the parser's positions (in its messages too) are the file's. A line
/// that starts with `---` (followed by nothing or a space) opens a document and `...` closes
/// one; YAML forbids both at the start of a line inside a scalar, so the split is exact.
fn documents(text: &str) -> Vec<(usize, String)> {
    let marker = |line: &str, m: &str| {
        line.strip_prefix(m).is_some_and(|rest| {
            rest.trim_end_matches(['\n', '\r']).is_empty() || rest.starts_with([' ', '\t'])
        })
    };
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if marker(line, "---") {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 1;
        } else if marker(line, "...") {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        if current.is_empty() {
            current.push_str(&"\n".repeat(start - 1));
        }
        current.push_str(line);
    }
    docs.push((start, current));
    docs
}

/// An object from its YAML value; the error names the field (`spec.rules: invalid type...`).
fn typed_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

/// `metadata.name` of an object, or "".
fn value_name(value: &Value) -> String {
    value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Whether a document has anything but blank lines, comments and its `---` marker.
fn has_content(doc: &str) -> bool {
    doc.lines().any(|l| {
        let l = l.trim();
        let l = l.strip_prefix("---").unwrap_or(l).trim();
        !l.is_empty() && !l.starts_with('#')
    })
}

/// A YAML error as `file:line:column: message` (positions are the file's: see [`documents`]).
fn yaml_error(file: &str, doc_line: usize, e: &serde_norway::Error) -> IngressError {
    let text = e.to_string();
    let (message, line, column) = match e.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
            (message, loc.line(), loc.column())
        }
        None => (text, doc_line, 1),
    };
    IngressError::Yaml {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    items: Vec<Value>,
}

impl Manifests {
    /// Reads one file's documents; other kinds are noted as findings and skipped.
    pub fn read(&mut self, path: &Path, findings: &mut Vec<Finding>) -> Result<(), IngressError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| IngressError::Read {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| IngressError::Yaml {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("not UTF-8: {e}"),
        })?;
        for (line, doc) in documents(&text) {
            let origin = Origin {
                file: file.clone(),
                line,
            };
            if !has_content(&doc) {
                continue;
            }
            let value: Value =
                serde_norway::from_str(&doc).map_err(|e| yaml_error(&file, line, &e))?;
            if value.is_null() {
                continue;
            }
            let head: Head =
                serde_norway::from_value(value.clone()).map_err(|e| IngressError::Yaml {
                    file: file.clone(),
                    line,
                    column: 1,
                    message: format!("not a Kubernetes object: {e}"),
                })?;
            if head.kind.as_deref() == Some("List") {
                for item in head.items {
                    self.add(item, &origin, findings)?;
                }
            } else {
                self.add(value, &origin, findings)?;
            }
        }
        Ok(())
    }

    fn add(
        &mut self,
        value: Value,
        origin: &Origin,
        findings: &mut Vec<Finding>,
    ) -> Result<(), IngressError> {
        let typed = |message: String| IngressError::Yaml {
            file: origin.file.clone(),
            line: origin.line,
            column: 1,
            message,
        };
        let head: Head = serde_norway::from_value(value.clone())
            .map_err(|e| typed(format!("not a Kubernetes object: {e}")))?;
        let api = head.api_version.unwrap_or_default();
        let kind = head.kind.unwrap_or_default();
        match (api.as_str(), kind.as_str()) {
            ("networking.k8s.io/v1", "Ingress") => {
                let ing: Ingress = typed_value(value).map_err(|e| typed(format!("Ingress {e}")))?;
                self.ingresses.push((ing, origin.clone()));
            }
            ("v1", "Service") => {
                let svc: Service = typed_value(value).map_err(|e| typed(format!("Service {e}")))?;
                self.services.push((svc, origin.clone()));
            }
            (api, "ClusterIssuer" | "Issuer") if api.starts_with("cert-manager.io/") => {
                let issuer: Issuer =
                    typed_value(value).map_err(|e| typed(format!("{kind} {e}")))?;
                self.issuers.push((kind.clone(), issuer, origin.clone()));
            }
            (_, "Ingress") => findings.push(Finding {
                file: origin.file.clone(),
                line: origin.line,
                what: format!("apiVersion {api}"),
                message: "only networking.k8s.io/v1 Ingresses are converted (`kubectl convert` \
                          or re-apply them as v1 first); skipped"
                    .into(),
            }),
            // The controller's ConfigMap: its settings are global, and not read.
            ("v1", "ConfigMap") if value_name(&value).contains("nginx") => findings.push(Finding {
                file: origin.file.clone(),
                line: origin.line,
                what: format!("ConfigMap {}", value_name(&value)),
                message: "ingress-nginx's ConfigMap is not read: the import assumes its \
                          defaults; carry changed settings over by hand"
                    .into(),
            }),
            // Deployments, Secrets and the rest of a manifest dump.
            _ => {}
        }
        Ok(())
    }

    /// The Service `name` in `namespace`, when its manifest was given.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .map(|(s, _)| s)
            .find(|s| s.metadata.name == name && s.metadata.namespace() == namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_on_markers_with_their_lines() {
        let docs = documents("a: 1\n---\nb: 2\n--- \nc: 3\n...\n---x: 4\n");
        let starts: Vec<usize> = docs.iter().map(|(l, _)| *l).collect();
        assert_eq!(starts, vec![1, 2, 4, 7]);
        assert_eq!(docs[1].1, "\n---\nb: 2\n");
        assert_eq!(docs[3].1, "\n\n\n\n\n\n---x: 4\n");
    }
}
