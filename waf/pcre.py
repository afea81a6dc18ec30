"""PCRE2 with JIT for the engine.

Without JIT some CRS rules cost seconds on large bodies (the engine issue measured 1.5 s against
0.027 s for a 64 KiB form with XSS under CRS 4's rule 941140). Debian's libmodsecurity3 links the
system libpcre2-8, which has JIT, and compiles every rule's regex with ``pcre2_jit_compile``.
``engine.pcre2`` asks that same library, in this process, whether JIT works: built in, and a
pattern actually compiled with it (it can be refused at run time where memory cannot be made
executable).
"""
from __future__ import annotations

import logging

from .engine import Pcre2, pcre2

log = logging.getLogger("edgeward.waf")

_STATE: Pcre2 | None = None


def state() -> Pcre2:
    global _STATE
    if _STATE is None:
        _STATE = pcre2()
    return _STATE


def describe() -> str:
    current = state()
    return f"PCRE2 {current.version} (libpcre2-8.so.0), JIT {'on' if current.jit else 'OFF'}"


def warn_without_jit() -> None:
    """Say loudly at startup when the engine's regular expressions run without JIT."""
    if not state().jit:
        log.warning("the WAF engine runs without PCRE2 JIT: large bodies can take seconds to inspect (%s)",
                    describe())
