//! gRPC through Switchyard with real grpcio servers and clients: over an h2 (TLS) and an h2c
//! upstream, unary, server streaming and bidi calls, an error status with its message, client
//! deadlines; Switchyard's own answers as Trailers-Only responses (no route, no upstream, rate
//! limit, upstream timeout); gRPC responses never compressed; an h2c listener beside HTTP/1.1.
#![allow(clippy::unwrap_used)] // tests unwrap freely

use std::time::Duration;

use bytes::Bytes;
use testkit::*;

const BIN: Bin = testkit::bin!();

/// Both upstreams behind one proxy: `h2c.test` → the plain server (protocol h2c), `h2.test` →
/// the TLS server (protocol h2, verified with the test CA); `down.test` → a dead server with an
/// active check (so: no upstream); `limited.test` one call per hour; `slow.test` a 500 ms
/// upstream timeout. Listener "grpc" takes h2c (prior knowledge) and HTTP/1.1; "https" is TLS.
fn world(plain: &GrpcServer, tls: &GrpcServer) -> Running {
    World::new()
        .listener("grpc", false)
        .listener_option("grpc", "h2c", true)
        .https()
        .certificate("localhost")
        .address("plain", format!("127.0.0.1:{}", plain.port))
        .address("tls", format!("127.0.0.1:{}", tls.port))
        .dead("dead")
        .route("h2c.test", "plain")
        .route("h2.test", "tls")
        .route("down.test", "down")
        .route_with(Route::new("limited.test", "plain").set("limits", vec!["one"]))
        .route_with(Route::new("slow.test", "plain").set("read_timeout", "500ms"))
        .pool("plain", "main", 1, &["plain"])
        .pool("tls", "main", 1, &["tls"])
        .pool("down", "main", 1, &["dead"])
        .toml(
            r#"
[services.plain.pools.main]
protocol = "h2c"

[services.tls.pools.main]
tls = true
protocol = "h2"
ca = "{certs}/test-ca.crt"

[services.down.health]
path = "/"
interval = "100ms"
timeout = "200ms"

[limits.zones.one]
key = "client_ip"
rate = "1r/h"
burst = 0
"#,
        )
        .start(BIN)
}

fn target(w: &Running) -> String {
    format!("127.0.0.1:{}", w.port("grpc"))
}

#[test]
fn grpc_calls_pass_through_h2_and_h2c_upstreams() {
    let (plain, tls) = (GrpcServer::plain(), GrpcServer::tls());
    let w = world(&plain, &tls);
    for upstream in ["h2c.test", "h2.test"] {
        let calls = [
            Call::new("Unary", "hi").authority(upstream),
            Call::new("Count", "3").authority(upstream),
            Call::chat(&["a", "b"]).authority(upstream),
            Call::new("Missing", "thing").authority(upstream),
            Call::new("Slow", "3").timeout(0.5).authority(upstream),
        ];
        let out = grpc_calls(&target(&w), None, &calls);
        let what = format!("via {upstream}: {out:?}");
        assert_eq!(
            (&*out[0].code, &out[0].responses[..]),
            ("OK", &["echo:hi".to_string()][..]),
            "{what}"
        );
        assert_eq!(out[1].code, "OK", "{what}");
        assert_eq!(out[1].responses, ["item-0", "item-1", "item-2"], "{what}");
        assert_eq!(out[2].code, "OK", "{what}");
        assert_eq!(out[2].responses, ["re:a", "re:b"], "{what}");
        // The server's own status and message, in its trailers.
        assert_eq!(out[3].code, "NOT_FOUND", "{what}");
        assert_eq!(out[3].details, "no such thing: thing", "{what}");
        // The client's deadline.
        assert_eq!(out[4].code, "DEADLINE_EXCEEDED", "{what}");
    }
    // A gRPC client on the TLS listener (ALPN h2) reaches the same upstreams.
    let https = format!("127.0.0.1:{}", w.https());
    let out = grpc_calls(
        &https,
        Some("localhost"),
        &[Call::new("Unary", "tls").authority("h2.test")],
    );
    assert_eq!(out[0].code, "OK", "{out:?}");
    assert_eq!(out[0].responses, ["echo:tls"]);
}

#[test]
fn switchyard_answers_grpc_clients_with_grpc_statuses() {
    let (plain, tls) = (GrpcServer::plain(), GrpcServer::tls());
    let w = world(&plain, &tls);
    // The dead server is found down by its check first: then there is no upstream at all.
    assert!(
        w.proxy
            .wait_for_log("of service \"down\" is unhealthy", Duration::from_secs(10)),
        "{}",
        w.proxy.stderr()
    );
    let calls = [
        Call::new("Unary", "x").authority("nothing.test"),
        Call::new("Unary", "x").authority("down.test"),
        Call::new("Unary", "first").authority("limited.test"),
        Call::new("Unary", "second").authority("limited.test"),
        Call::new("Slow", "3").authority("slow.test"),
    ];
    let out = grpc_calls(&target(&w), None, &calls);
    let what = format!("{out:?}");
    assert_eq!(out[0].code, "UNIMPLEMENTED", "{what}");
    assert!(
        out[0]
            .details
            .starts_with("no route for this host and path (request "),
        "{what}"
    );
    assert_eq!(out[1].code, "UNAVAILABLE", "{what}");
    assert!(
        out[1].details.starts_with("no upstream server available"),
        "{what}"
    );
    assert_eq!(out[2].code, "OK", "{what}");
    assert_eq!(out[3].code, "RESOURCE_EXHAUSTED", "{what}");
    assert!(out[3].details.starts_with("rate limit exceeded"), "{what}");
    assert_eq!(out[3].trailing["retry-after"], "3600", "{what}");
    assert_eq!(out[4].code, "DEADLINE_EXCEEDED", "{what}");
    assert!(out[4].details.starts_with("upstream timed out"), "{what}");
}

/// One request over h2c with prior knowledge, as a raw HTTP/2 client sees it.
struct H2Answer {
    status: u16,
    headers: ::http::HeaderMap,
    /// Whether the response HEADERS frame ended the stream (Trailers-Only).
    headers_only: bool,
    body: Vec<u8>,
    trailers: Option<::http::HeaderMap>,
}

fn h2_call(port: u16, authority: &str, path: &str, message: &[u8]) -> H2Answer {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (send, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut send = send.ready().await.unwrap();
        let request = ::http::Request::post(format!("http://{authority}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("accept-encoding", "gzip, br")
            .body(())
            .unwrap();
        let (response, mut stream) = send.send_request(request, false).unwrap();
        // A gRPC message: uncompressed, 4-byte length, then the bytes.
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(message);
        stream.send_data(Bytes::from(frame), true).unwrap();
        let response = response.await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body_stream = response.into_body();
        let headers_only = body_stream.is_end_stream();
        let mut body = Vec::new();
        while let Some(chunk) = body_stream.data().await {
            let chunk = chunk.unwrap();
            body_stream
                .flow_control()
                .release_capacity(chunk.len())
                .unwrap();
            body.extend_from_slice(&chunk);
        }
        let trailers = body_stream.trailers().await.unwrap();
        H2Answer {
            status,
            headers,
            headers_only,
            body,
            trailers,
        }
    })
}

#[test]
fn trailers_only_errors_and_uncompressed_grpc_on_the_wire() {
    let (plain, tls) = (GrpcServer::plain(), GrpcServer::tls());
    let w = world(&plain, &tls);
    let port = w.port("grpc");

    // No route: HTTP 200, one HEADERS frame with END_STREAM carrying the gRPC status.
    let a = h2_call(port, "nothing.test", "/test.Echo/Unary", b"x");
    assert_eq!(a.status, 200);
    assert!(a.headers_only, "not Trailers-Only: {:?}", a.headers);
    assert_eq!(a.headers["content-type"], "application/grpc");
    assert_eq!(a.headers["grpc-status"], "12");
    assert!(a.headers.contains_key("grpc-message"));
    assert!(a.body.is_empty() && a.trailers.is_none());

    // A call through a route with compression on, from a client that accepts gzip: the
    // response is the server's own frames, then its trailers.
    let message = b"a message long enough that gzip would take it: ".repeat(4);
    let a = h2_call(port, "h2c.test", "/test.Echo/Unary", &message);
    assert_eq!(a.status, 200, "{:?}", a.headers);
    assert!(
        a.headers.get("content-encoding").is_none(),
        "{:?}",
        a.headers
    );
    let mut expected = b"echo:".to_vec();
    expected.extend_from_slice(&message);
    assert_eq!(&a.body[5..], &expected[..]);
    assert_eq!(a.trailers.expect("trailers")["grpc-status"], "0");

    // The h2c listener still speaks HTTP/1.1.
    let resp = http1_client()
        .get(format!("http://nothing.test:{port}/"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_proxy_error(&json_body(resp), 404);
}
