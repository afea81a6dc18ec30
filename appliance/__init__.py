"""Edgeward: the running appliance (CLI, config, pipeline, proxy, server, admin plane)."""
