"""PCRE2 with JIT for the engine.

The PyPI libmodsecurity wheel links its own PCRE2, built without JIT; some CRS rules then cost
seconds on large bodies (measured here, CRS 3.3.4: 0.153 s for a 64 KiB form with XSS, against
0.056 s with JIT; the engine issue measured 1.5 s against 0.027 s with CRS 4). The wheel exports
its PCRE2 symbols, so loading the system's libpcre2-8 (which has JIT) with RTLD_GLOBAL *before* the
wheel makes the dynamic linker bind every PCRE2 call of the engine to the system library, all of
them consistently. ``waf/__init__.py`` calls ``preload`` before anything imports the wheel.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
from dataclasses import dataclass

log = logging.getLogger("edgeward.waf")

SYSTEM_LIBRARY = "libpcre2-8.so.0"  # Debian package libpcre2-8-0
_PCRE2_CONFIG_JIT = 1
_PCRE2_CONFIG_VERSION = 11


@dataclass(frozen=True, slots=True)
class Pcre2:
    """What the engine's regular expressions run on."""

    library: str  # the library PCRE2 calls bind to, or "" when only the wheel's own copy is there
    version: str
    jit: bool


_STATE: Pcre2 | None = None


def preload() -> Pcre2:
    """Load the system PCRE2 into the global symbol scope (once) and report what is in effect."""
    global _STATE
    if _STATE is not None:
        return _STATE
    try:
        lib = ctypes.CDLL(SYSTEM_LIBRARY, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        _STATE = Pcre2("", "", False)
        return _STATE
    jit = ctypes.c_uint32(0)
    lib.pcre2_config_8(_PCRE2_CONFIG_JIT, ctypes.byref(jit))
    buffer = ctypes.create_string_buffer(64)
    lib.pcre2_config_8(_PCRE2_CONFIG_VERSION, buffer)
    _STATE = Pcre2(SYSTEM_LIBRARY, buffer.value.decode("ascii", "replace"), bool(jit.value))
    return _STATE


def describe() -> str:
    state = preload()
    if not state.library:
        return "PCRE2 of the libmodsecurity wheel, without JIT (install Debian's libpcre2-8-0)"
    return f"PCRE2 {state.version} ({state.library}), JIT {'on' if state.jit else 'OFF'}"


def warn_without_jit() -> None:
    """Say loudly at startup when the engine's regular expressions run without JIT."""
    state = preload()
    if not state.jit:
        log.warning("the WAF engine runs without PCRE2 JIT: large bodies can take seconds to inspect (%s)",
                    describe())
