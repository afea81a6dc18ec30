"""The engine's own diagnostics go to the log, rate-limited, never to stderr.

libxml2, which ModSecurity uses for XML request bodies, prints parser errors on stderr by default,
and those errors quote the request body: an attacker could fill the appliance's stderr with text of
their choosing. ``route_xml_errors`` installs a structured error handler in the libxml2 the engine
loaded (per thread in Debian's build, so it is called on every thread that runs the engine), and the handler logs at most ``BURST`` messages per ``WINDOW`` seconds, counting the rest.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time

log = logging.getLogger("edgeward.waf.engine")

BURST = 20
WINDOW = 60.0
MAX_MESSAGE = 200


class _XmlError(ctypes.Structure):
    """libxml2's ``xmlError`` (stable since 2.6)."""

    _fields_ = [
        ("domain", ctypes.c_int), ("code", ctypes.c_int), ("message", ctypes.c_char_p), ("level", ctypes.c_int),
        ("file", ctypes.c_char_p), ("line", ctypes.c_int), ("str1", ctypes.c_char_p), ("str2", ctypes.c_char_p),
        ("str3", ctypes.c_char_p), ("int1", ctypes.c_int), ("int2", ctypes.c_int), ("ctxt", ctypes.c_void_p),
        ("node", ctypes.c_void_p),
    ]


_HANDLER_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(_XmlError))


class RateLimitedLog:
    """At most ``burst`` lines per ``window`` seconds; the number left out is logged with the next."""

    def __init__(self, burst: int = BURST, window: float = WINDOW) -> None:
        self.burst, self.window = burst, window
        self.started = time.monotonic()
        self.count = 0
        self.suppressed = 0

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if now - self.started >= self.window:
            if self.suppressed:
                log.warning("engine diagnostics: %d more left out in the last %.0f s", self.suppressed, self.window)
            self.started, self.count, self.suppressed = now, 0, 0
        if self.count >= self.burst:
            self.suppressed += 1
            return
        self.count += 1
        log.warning("engine diagnostic: %s", message)


_SINK = RateLimitedLog()


def _on_xml_error(_data: int | None, error: ctypes._Pointer[_XmlError]) -> None:
    try:
        raw = error.contents.message or b""
        text = raw.decode("utf-8", "replace").strip()
        _SINK(repr(text[:MAX_MESSAGE]) + (" (cut)" if len(text) > MAX_MESSAGE else ""))
    except Exception:  # a callback from C must never raise
        pass


_HANDLER = _HANDLER_TYPE(_on_xml_error)  # kept alive for the life of the process


def _libxml2() -> ctypes.CDLL | None:
    """The libxml2 the engine links against (Debian's libxml2.so.2, already loaded with it)."""
    try:
        return ctypes.CDLL("libxml2.so.2")
    except OSError:
        return None


_ROUTED = threading.local()


def route_xml_errors() -> bool:
    """Send libxml2's errors on this thread to the rate-limited log (once per thread); False if
    libxml2 is not found."""
    if getattr(_ROUTED, "done", False):
        return True
    lib = _libxml2()
    if lib is None:
        return False
    lib.xmlSetStructuredErrorFunc.argtypes = [ctypes.c_void_p, _HANDLER_TYPE]
    lib.xmlSetStructuredErrorFunc.restype = None
    lib.xmlSetStructuredErrorFunc(None, _HANDLER)
    _ROUTED.done = True
    return True
