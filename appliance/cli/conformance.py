"""``edgeward conformance``: CRS regression tests through the engine (and a running appliance)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.cli.common import config_arg, load

def cmd_conformance(args: argparse.Namespace) -> int:
    """Run CRS's regression tests through the engine; the last line is `N passed, N failed, N skipped`."""
    from rules.activation import GLOBAL
    from rules.errors import BundleError
    from waf.conformance import load_overrides, run_suite
    from waf.diagnostics import route_xml_errors

    from appliance.bundles import activations_for, store_for

    route_xml_errors()  # the engine runs on this thread; CRS's XML tests must not spray stderr
    directory = Path(args.directory)
    if not directory.is_dir():
        print(f"{directory}: not a directory", file=sys.stderr)
        return 2
    config = load(args)
    state = config.state_dir
    store = store_for(state)
    try:
        if args.bundle:
            manifest = store.resolve(args.bundle)
        else:
            active = activations_for(state).active(GLOBAL)
            if active is None:
                raise BundleError("no bundle given and none active (use --bundle REF)")
            manifest = store.resolve(active.digest)
        store.verify(manifest)
    except BundleError as exc:
        print(exc, file=sys.stderr)
        return 2
    overrides = load_overrides(Path(args.overrides)) if args.overrides else None
    http = access_log = None
    if args.http:
        host, _, port = args.http.rpartition(":")
        http = (host or "127.0.0.1", int(port))
        if config.access_log.enabled and config.access_log.path != "-":
            access_log = Path(config.access_log.path)
        else:
            print("note: the appliance's access log is not a file (access_log.path): rule-id expectations are "
                  "judged in-process, not over the wire", file=sys.stderr)
    plain, applied = run_suite(directory, store.path(manifest), manifest.load_order, overrides, http=http,
                               access_log=access_log)
    shown = applied or plain
    for result in shown.results:
        if result.status == "failed" or (args.verbose and result.status == "skipped"):
            print(f"{result.status.upper()} {result.case.test_id}: {result.reason}")
    print(f"bundle {manifest.ref} ({manifest.digest[:12]}), engine DetectionOnly, paranoia 4")
    if applied is not None:
        print(f"without overrides: {plain.line()}")
        print(f"with overrides ({args.overrides}): {applied.line()}")
    print(shown.line())
    return 1 if shown.count("failed") and args.strict else 0


_HTML_SIGNATURES = (b"<!DOCTYPE HTML", b"<HTML", b"<HEAD", b"<SCRIPT", b"<IFRAME", b"<H1", b"<DIV", b"<FONT",
                    b"<TABLE", b"<A", b"<STYLE", b"<TITLE", b"<B", b"<BODY", b"<BR", b"<P", b"<!--")


def sniff(body: bytes) -> str:
    """The Content-Type Go's http.DetectContentType gives a body (the cases CRS's tests meet)."""
    head = body.lstrip(b"\t\n\x0c\r ")[:512]
    upper = head.upper()
    for signature in _HTML_SIGNATURES:
        if upper.startswith(signature) and upper[len(signature):len(signature) + 1] in (b" ", b">"):
            return "text/html; charset=utf-8"
    if head.startswith(b"<?xml"):
        return "text/xml; charset=utf-8"
    if any(b < 0x20 and b not in (0x09, 0x0A, 0x0C, 0x0D, 0x1B) for b in head):
        return "application/octet-stream"
    return "text/plain; charset=utf-8"


def cmd_backend(args: argparse.Namespace) -> int:
    """The upstream CRS's tests expect (go-ftw's ``albedo``): ``POST /reflect`` with a JSON body
    ``{"status": 200, "headers": {...}, "body": "..."}`` (or ``encodedBody``, base64) is answered
    with exactly that response, which is how the response-rule tests (95x) get their responses;
    anything else gets an empty 200. Built on the standard library's lenient HTTP server: like
    albedo it accepts what a strict parser would refuse (two Content-Type headers), so the verdict
    a test checks is the WAF's, not the backend's."""
    import base64
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            status, headers, content = 200, {}, b""
            if self.command == "POST" and self.path.split("?", 1)[0] == "/reflect":
                try:
                    spec = json.loads(body)
                    content = (base64.b64decode(spec["encodedBody"]) if spec.get("encodedBody")
                               else str(spec.get("body") or "").encode())
                    headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
                    status = int(spec.get("status") or 200)
                except (ValueError, TypeError, AttributeError, KeyError) as exc:
                    status, content = 400, f"bad reflect request: {exc}\n".encode()
                if not any(k.lower() == "content-type" for k in headers):
                    headers["Content-Type"] = sniff(content)  # as albedo's Go server does
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _answer

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    print(f"conformance backend on http://{args.listen}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("conformance", help="run CRS's regression tests (ftw / go-ftw YAML) through the engine")
    config_arg(p)
    p.add_argument("directory")
    p.add_argument("--bundle", help="bundle reference (default: the globally active one)")
    p.add_argument("--overrides", help="YAML file of known engine differences, each with a reason")
    p.add_argument("--http", metavar="HOST:PORT", help="send tests to the appliance running this config: "
                   "web-server-only tests, and every go-ftw test (CRS 4), judged from its access log")
    p.add_argument("--strict", action="store_true", help="exit 1 when a test fails")
    p.add_argument("-v", "--verbose", action="store_true", help="list skipped tests with their reasons")
    p.set_defaults(func=cmd_conformance)
    b = sub.add_parser("conformance-backend", help="the upstream CRS's regression tests expect (POST /reflect)")
    b.add_argument("--listen", default="127.0.0.1:8090", help="HOST:PORT (default 127.0.0.1:8090)")
    b.set_defaults(func=cmd_backend)
