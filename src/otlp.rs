//! Request spans for OpenTelemetry: queued by the proxy off the hot path, encoded as OTLP protobuf, sent by a background service.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::trace_context::TraceContext;

/// Spans waiting for the next export; past this many, new ones are dropped (and counted).
const QUEUE_MAX: usize = 8192;
/// A batch is sent at once when this many spans wait, else at the export interval.
pub const BATCH: usize = 512;

/// One finished request, as its span will say it.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace: TraceContext,
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Status 5xx or a proxy error: the span's status is ERROR.
    pub error: Option<String>,
    pub attributes: Vec<(&'static str, Attr)>,
}

#[derive(Debug, Clone)]
pub enum Attr {
    Text(String),
    Int(i64),
}

/// The spans of finished requests until the exporter takes them.
#[derive(Debug, Default)]
pub struct SpanQueue {
    spans: parking_lot::Mutex<Vec<SpanRecord>>,
    dropped: AtomicU64,
    /// Wakes the exporter when a batch is full.
    pub full: tokio::sync::Notify,
}

impl SpanQueue {
    /// Queues a span; drops it (counted) when the exporter is far behind.
    pub fn push(&self, span: SpanRecord) {
        let mut spans = self.spans.lock();
        if spans.len() >= QUEUE_MAX {
            drop(spans);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        spans.push(span);
        let batch_full = spans.len() == BATCH;
        drop(spans);
        if batch_full {
            self.full.notify_one();
        }
    }

    /// Everything queued so far.
    pub fn take(&self) -> Vec<SpanRecord> {
        std::mem::take(&mut *self.spans.lock())
    }

    /// Spans dropped because the queue was full, since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("cannot reach the OTLP endpoint {endpoint}: {source}")]
    Send {
        endpoint: String,
        source: reqwest::Error,
    },
    #[error("the OTLP endpoint {endpoint} answered {status}: {body}")]
    Refused {
        endpoint: String,
        status: u16,
        body: String,
    },
}

/// POSTs one batch as `application/x-protobuf` (OTLP/HTTP).
pub async fn send(
    client: &reqwest::Client,
    endpoint: &str,
    service_name: &str,
    spans: &[SpanRecord],
) -> Result<(), OtlpError> {
    let body = encode(service_name, spans);
    let resp = client
        .post(endpoint)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|source| OtlpError::Send {
            endpoint: endpoint.to_string(),
            source,
        })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(OtlpError::Refused {
        endpoint: endpoint.to_string(),
        status: status.as_u16(),
        body: body.chars().take(200).collect(),
    })
}

/// An `ExportTraceServiceRequest` holding `spans` under one resource and one scope.
pub fn encode(service_name: &str, spans: &[SpanRecord]) -> Vec<u8> {
    use prost::Message;
    let request = proto::ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(proto::Resource {
                attributes: vec![
                    text("service.name", service_name),
                    text("service.version", env!("CARGO_PKG_VERSION")),
                ],
            }),
            scope_spans: vec![proto::ScopeSpans {
                scope: Some(proto::InstrumentationScope {
                    name: "switchyard".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans: spans.iter().map(span).collect(),
            }],
        }],
    };
    request.encode_to_vec()
}

fn span(s: &SpanRecord) -> proto::Span {
    proto::Span {
        trace_id: s.trace.trace_id.to_be_bytes().to_vec(),
        span_id: s.trace.span_id.to_be_bytes().to_vec(),
        parent_span_id: s
            .trace
            .parent_id
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        flags: u32::from(s.trace.flags),
        name: s.name.clone(),
        kind: proto::SPAN_KIND_SERVER,
        start_time_unix_nano: nanos(s.start),
        end_time_unix_nano: nanos(s.end),
        attributes: s
            .attributes
            .iter()
            .map(|(key, value)| proto::KeyValue {
                key: (*key).into(),
                value: Some(match value {
                    Attr::Text(t) => proto::AnyValue {
                        value: Some(proto::any_value::Value::StringValue(t.clone())),
                    },
                    Attr::Int(i) => proto::AnyValue {
                        value: Some(proto::any_value::Value::IntValue(*i)),
                    },
                }),
            })
            .collect(),
        status: Some(match &s.error {
            Some(message) => proto::Status {
                message: message.clone(),
                code: proto::STATUS_CODE_ERROR,
            },
            None => proto::Status {
                message: String::new(),
                code: proto::STATUS_CODE_UNSET,
            },
        }),
    }
}

fn text(key: &str, value: &str) -> proto::KeyValue {
    proto::KeyValue {
        key: key.into(),
        value: Some(proto::AnyValue {
            value: Some(proto::any_value::Value::StringValue(value.into())),
        }),
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The subset of opentelemetry-proto (`collector/trace/v1`, `trace/v1`, `common/v1`,
/// `resource/v1`) that one server span per request needs, with the proto's field numbers.
mod proto {
    pub const SPAN_KIND_SERVER: i32 = 2;
    pub const STATUS_CODE_UNSET: i32 = 0;
    pub const STATUS_CODE_ERROR: i32 = 2;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(fixed32, tag = "16")]
        pub flags: u32,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(int32, tag = "3")]
        pub code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 3")]
        pub value: Option<any_value::Value>,
    }

    pub mod any_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            StringValue(String),
            #[prost(int64, tag = "3")]
            IntValue(i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SpanRecord {
        SpanRecord {
            trace: TraceContext {
                trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
                span_id: 0x1122334455667788,
                parent_id: Some(0x00f067aa0ba902b7),
                flags: 1,
            },
            name: "GET api".into(),
            start: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            end: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            error: None,
            attributes: vec![("http.response.status_code", Attr::Int(200))],
        }
    }

    #[test]
    fn ids_and_times_go_out_as_the_proto_wants_them() {
        use prost::Message;
        let bytes = encode("edge", &[record()]);
        let back = proto::ExportTraceServiceRequest::decode(&bytes[..]).expect("decodes");
        let span = &back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&span.span_id), "1122334455667788");
        assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            250_000_000
        );
        assert_eq!(span.kind, proto::SPAN_KIND_SERVER);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let q = SpanQueue::default();
        for _ in 0..QUEUE_MAX + 3 {
            q.push(record());
        }
        assert_eq!(q.take().len(), QUEUE_MAX);
        assert_eq!(q.take_dropped(), 3);
        assert_eq!(q.take_dropped(), 0);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
