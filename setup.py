"""Only for what pyproject.toml cannot say: the engine binding (waf/engine_build.py) compiled by cffi."""
from setuptools import setup

setup(cffi_modules=["waf/engine_build.py:ffibuilder"])
