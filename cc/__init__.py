"""Cheap protections that run before the expensive ones: IP and country access lists, GeoIP
lookups, and (as they land) throttles and bans. A library: it knows nothing of the pipeline."""
