"""Rule bundles as artifacts: import, manifest, content digest, store, activation history.

A library: knows nothing of the pipeline, never imports ``appliance`` or ``waf``. The engine
preflight is passed in by the caller as a function.
"""
