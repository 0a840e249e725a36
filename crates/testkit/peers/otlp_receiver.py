"""An OTLP/HTTP traces receiver for the tests: decodes each POST /v1/traces body with the
official opentelemetry-proto messages (PyPI `opentelemetry-proto`) and appends every span as one
JSON line (protobuf's JSON mapping, ids as hex) to the file given.

usage: otlp_receiver.py PORT OUT_FILE [STATUS]   (STATUS: the HTTP status to answer, default 200)
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PORT, OUT = int(sys.argv[1]), sys.argv[2]
STATUS = int(sys.argv[3]) if len(sys.argv) > 3 else 200


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
            self.send_error(415 if self.path == "/v1/traces" else 404)
            return
        request = ExportTraceServiceRequest.FromString(body)
        with open(OUT, "a") as out:
            for rs in request.resource_spans:
                resource = MessageToDict(rs.resource)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        line = MessageToDict(span)
                        line["traceId"] = span.trace_id.hex()
                        line["spanId"] = span.span_id.hex()
                        line["parentSpanId"] = span.parent_span_id.hex()
                        line["resource"] = resource
                        line["scope"] = ss.scope.name
                        out.write(json.dumps(line) + "\n")
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(STATUS)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
