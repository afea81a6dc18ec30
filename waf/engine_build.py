"""Build ``waf._engine``: cffi's compiled (API-mode) binding of libmodsecurity through engine_shim.cpp.

Run by setuptools at install (``cffi_modules`` in setup.py); needs Debian's libmodsecurity-dev,
libpcre2-dev and g++, which ``make`` installs.
"""
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).parent

ffibuilder = FFI()
ffibuilder.cdef("\n".join(
    line for line in (HERE / "engine_shim.h").read_text().splitlines() if not line.startswith("/*"))
    + "\nvoid free(void *ptr);\n")  # for the parser's error text, which the shim allocates
ffibuilder.set_source(
    "waf._engine",
    '#define PCRE2_CODE_UNIT_WIDTH 8\n' + (HERE / "engine_shim.cpp").read_text(),
    source_extension=".cpp",
    include_dirs=[str(HERE)],
    libraries=["modsecurity", "pcre2-8"],
    extra_compile_args=["-std=c++17", "-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
