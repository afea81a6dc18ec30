"""The ModSecurity adapter: compile a bundle plus a policy into a rule set, map a request to a
transaction, collect what matched. A library: never imports ``appliance``, ``rules`` or the others.
"""
from waf.pcre import preload as _preload_pcre2

_preload_pcre2()  # before anything imports the engine: its PCRE2 calls must bind to the JIT build
