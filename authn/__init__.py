"""Authentication: consumers and their credentials, and one module per method. A library: it
knows nothing of the pipeline (appliance/stages/authn.py adapts it)."""
