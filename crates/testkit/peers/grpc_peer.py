#!/usr/bin/env python3
"""A real gRPC server and client (grpcio) for Switchyard's tests: generic handlers over raw
bytes, so no generated code and no .proto file.

    grpc_peer.py server PORT [CERT KEY]
        Serves test.Echo on 127.0.0.1:PORT (TLS with CERT and KEY when given) until killed.
    grpc_peer.py client TARGET [CA NAME]
        Reads a JSON list of calls on stdin, makes each on one channel to TARGET (TLS trusting
        CA, for server name NAME, when given) and prints a JSON list of outcomes.

test.Echo's methods (requests and responses are UTF-8 text):
    Unary   unary         "x" -> "echo:x"
    Count   server stream "N" -> "item-0" ... "item-(N-1)"
    Chat    bidi stream   each "x" -> "re:x"
    Missing unary         aborts with NOT_FOUND "no such thing: x"
    Slow    unary         "S" -> sleeps S seconds, then "late"

A call is {"method": "Unary", "request": "x" (a list for Chat), "timeout": seconds,
"authority": optional :authority}; its outcome is {"code": "OK", "details": "...",
"responses": [...], "trailing": {...}}.
"""
import json
import sys
import time
from concurrent import futures

import grpc

SERVICE = "test.Echo"


def unary(request, context):
    return b"echo:" + request


def count(request, context):
    for i in range(int(request)):
        yield b"item-%d" % i


def chat(requests, context):
    for r in requests:
        yield b"re:" + r


def missing(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())


def slow(request, context):
    time.sleep(float(request))
    return b"late"


def serve(port, cert=None, key=None):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Missing": grpc.unary_unary_rpc_method_handler(missing),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    address = "127.0.0.1:%d" % port
    if cert:
        with open(cert, "rb") as c, open(key, "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if bound != port:
        sys.exit("cannot bind %s" % address)
    server.start()
    server.wait_for_termination()


def outcome(code, details, responses, trailing):
    return {
        "code": code.name,
        "details": details or "",
        "responses": [r.decode("utf-8", "replace") for r in responses],
        "trailing": {k: v if isinstance(v, str) else v.decode("utf-8", "replace") for k, v in (trailing or ())},
    }


def call(channel, c):
    path = "/%s/%s" % (SERVICE, c["method"])
    timeout = c.get("timeout", 10)
    request = c.get("request", "")
    responses = []
    try:
        if c["method"] == "Count":
            it = channel.unary_stream(path)(request.encode(), timeout=timeout)
            for r in it:
                responses.append(r)
            return outcome(it.code(), it.details(), responses, it.trailing_metadata())
        if c["method"] == "Chat":
            it = channel.stream_stream(path)(iter([r.encode() for r in request]), timeout=timeout)
            for r in it:
                responses.append(r)
            return outcome(it.code(), it.details(), responses, it.trailing_metadata())
        response, rpc = channel.unary_unary(path).with_call(request.encode(), timeout=timeout)
        return outcome(rpc.code(), rpc.details(), [response], rpc.trailing_metadata())
    except grpc.RpcError as e:
        return outcome(e.code(), e.details(), responses, e.trailing_metadata())


def client(target, ca=None, name=None):
    calls = json.load(sys.stdin)
    results = []
    for c in calls:
        options = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
        if c.get("authority"):
            options.append(("grpc.default_authority", c["authority"]))
        if ca:
            with open(ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            options.append(("grpc.ssl_target_name_override", name))
            channel = grpc.secure_channel(target, creds, options=options)
        else:
            channel = grpc.insecure_channel(target, options=options)
        with channel:
            results.append(call(channel, c))
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "server":
        serve(int(sys.argv[2]), *sys.argv[3:5])
    elif len(sys.argv) >= 3 and sys.argv[1] == "client":
        client(sys.argv[2], *sys.argv[3:5])
    else:
        sys.exit(__doc__)
