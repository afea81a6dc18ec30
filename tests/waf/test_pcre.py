"""The engine's regular expressions run on PCRE2 with JIT (tests/waf/test_pcre.py for waf/pcre.py)."""
from __future__ import annotations

import ctypes
import subprocess

import pytest

from waf import pcre

from ..harness import EDGEWARD


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _global_binding(symbol: str) -> str:
    """The file a global lookup of ``symbol`` lands in: what the engine's PLT binds to."""
    process = ctypes.CDLL(None)
    address = ctypes.cast(getattr(process, symbol), ctypes.c_void_p)
    info = _DlInfo()
    assert process.dladdr(address, ctypes.byref(info))
    return (info.dli_fname or b"").decode()


def test_the_engines_pcre2_calls_bind_to_the_system_jit_build() -> None:
    state = pcre.preload()
    if not state.library:
        pytest.skip(f"{pcre.SYSTEM_LIBRARY} is absent (Debian package libpcre2-8-0; make test installs it)")
    assert state.jit, pcre.describe()
    import libmodsecurity  # noqa: F401 - the wheel, which carries its own PCRE2 without JIT, is loaded now

    for symbol in ("pcre2_compile_8", "pcre2_jit_compile_8", "pcre2_match_8", "pcre2_match_data_create_from_pattern_8"):
        assert _global_binding(symbol).endswith("libpcre2-8.so.0"), (symbol, _global_binding(symbol))


def test_version_command_shows_engine_and_jit() -> None:
    out = subprocess.run([EDGEWARD, "version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("edgeward ") and "engine: ModSecurity v3.0." in out
    assert "regex: PCRE2 " in out and ("JIT on" in out or "without JIT" in out)
