"""The engine's regular expressions run on PCRE2 with JIT (tests/waf/test_pcre.py for waf/pcre.py)."""
from __future__ import annotations

import subprocess

from waf import pcre
from waf.compiler import engine_version

from ..harness import EDGEWARD


def _mapped_libraries() -> set[str]:
    with open("/proc/self/maps") as maps:
        return {line.split()[-1] for line in maps if ".so" in line}


def test_the_engine_compiles_regexes_with_jit_in_this_process() -> None:
    assert engine_version().startswith("ModSecurity v3.0.")  # the engine (and the PCRE2 it links) is loaded
    state = pcre.state()
    assert state.jit, pcre.describe()
    assert state.version.startswith("10.")
    libraries = _mapped_libraries()
    assert any("/libmodsecurity.so.3" in path for path in libraries), libraries  # Debian's engine
    pcre2 = {path for path in libraries if "pcre2" in path}
    assert len(pcre2) == 1 and "libpcre2-8.so.0" in next(iter(pcre2)), pcre2  # one PCRE2: the system's


def test_version_command_shows_engine_and_jit() -> None:
    out = subprocess.run([EDGEWARD, "version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("edgeward ") and "engine: ModSecurity v3.0." in out
    assert "regex: PCRE2 " in out and "JIT on" in out
