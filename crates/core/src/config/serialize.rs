//! How the model is written out for `GET /v1/config` where a type's own form is not the config file's.
//!
//! The model derives `Serialize` and names these with `serialize_with`, so a new field shows up on
//! its own; a secret is a [`crate::secret::Secret`], which serializes as `"<redacted>"`.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::Serializer;

use crate::limits::client_ip::TrustedProxies;
use crate::limits::conn::ConnCaps;
use crate::limits::{KeyKind, ZoneKind, ZoneSpec};
use crate::rollout::WindowSpec;

/// `"30s"`, or `"500ms"` when not whole seconds: the way the config file writes durations.
pub fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if d.subsec_millis() == 0 {
        s.collect_str(&format_args!("{}s", d.as_secs()))
    } else {
        s.collect_str(&format_args!("{}ms", d.as_millis()))
    }
}

pub fn opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration(d, s),
        None => s.serialize_none(),
    }
}

/// A path as text, even one that is not UTF-8.
pub fn path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&p.display())
}

pub fn opt_path<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => path(p, s),
        None => s.serialize_none(),
    }
}

/// A value in its `Display` form (a host pattern, a header name).
pub fn opt_display<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

pub fn methods<S: Serializer>(m: &[Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.iter().map(Method::as_str))
}

/// A live window as the config writes it: its length.
pub fn window<S: Serializer>(w: &WindowSpec, s: S) -> Result<S::Ok, S::Error> {
    duration(&w.length(), s)
}

pub fn trusted_proxies<S: Serializer>(t: &TrustedProxies, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(t.0.iter().map(ToString::to_string))
}

/// Connection caps under their config keys, for `#[serde(flatten)]` into `[limits]`.
pub fn conn_caps<S: Serializer>(c: &ConnCaps, s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(2))?;
    map.serialize_entry("max_connections", &c.total)?;
    map.serialize_entry("max_connections_per_ip", &c.per_ip)?;
    map.end()
}

/// Rate-limit zones: `{"name", "key", "requests", "per", "burst", "max_keys"}` each.
pub fn zones<S: Serializer>(zones: &[ZoneSpec], s: S) -> Result<S::Ok, S::Error> {
    struct Zone<'a>(&'a ZoneSpec);
    impl serde::Serialize for Zone<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            struct Per(Duration);
            impl serde::Serialize for Per {
                fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    duration(&self.0, s)
                }
            }
            let z = self.0;
            let key = match &z.key {
                KeyKind::ClientIp => "client_ip".to_string(),
                KeyKind::ClientIpRoute => "client_ip_route".to_string(),
                KeyKind::Header(h) => format!("header:{h}"),
            };
            let mut st = s.serialize_struct("Zone", 9)?;
            st.serialize_field("name", &z.name)?;
            st.serialize_field("key", &key)?;
            match z.kind {
                ZoneKind::Rate { rate, burst } => {
                    st.serialize_field("kind", "rate")?;
                    st.serialize_field("requests", &rate.requests)?;
                    st.serialize_field("per", &Per(rate.per))?;
                    st.serialize_field("burst", &burst)?;
                }
                ZoneKind::Window { rate } => {
                    st.serialize_field("kind", "window")?;
                    st.serialize_field("requests", &rate.requests)?;
                    st.serialize_field("per", &Per(rate.per))?;
                }
                ZoneKind::Concurrency { max } => {
                    st.serialize_field("kind", "concurrency")?;
                    st.serialize_field("max", &max)?;
                }
            }
            st.serialize_field("max_keys", &z.max_keys)?;
            st.serialize_field("status", &z.status)?;
            if z.scope == crate::limits::Scope::Cluster {
                st.serialize_field("scope", "cluster")?;
            }
            st.end()
        }
    }
    s.collect_seq(zones.iter().map(Zone))
}
