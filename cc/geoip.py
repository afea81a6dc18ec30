"""Country of an address from a MaxMind DB file (GeoLite2/GeoIP2 Country or City).

The file is copied to a private, unlinked file which is memory-mapped: a process that rewrites the
configured file in place (instead of replacing it) then cannot pull the data from under the
lookups (with a shared mapping, reads would return garbage, or SIGBUS once the file is shorter).
The configured file is looked at again at most every ``CHECK_EVERY`` seconds: a new one is opened
and used from then on; one that cannot be read is logged and the old one kept, so a broken
download never turns the lookups off.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import maxminddb

log = logging.getLogger("edgeward.geoip")


class GeoIPError(Exception):
    """The database cannot be opened (missing, unreadable, not a MaxMind DB)."""


def _open(path: Path) -> Any:
    try:
        fd, private = tempfile.mkstemp(prefix="edgeward-geoip-", suffix=".mmdb")
    except OSError as exc:
        raise GeoIPError(f"{path}: cannot make a private copy ({exc})") from exc
    try:
        with os.fdopen(fd, "wb") as copy, open(path, "rb") as source:
            shutil.copyfileobj(source, copy, 1 << 20)
        reader = maxminddb.open_database(private, maxminddb.MODE_AUTO)  # the C reader, mmap'd
    except FileNotFoundError as exc:
        raise GeoIPError(f"{path}: no such file") from exc
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoIPError(f"{path}: not a readable MaxMind DB ({exc})") from exc
    finally:
        os.unlink(private)  # the mapping keeps the data; nothing is left on disk
    if "country" not in reader.metadata().database_type.lower() and "city" not in reader.metadata().database_type.lower():
        reader.close()
        raise GeoIPError(f"{path}: a {reader.metadata().database_type} database has no countries")
    return reader


class CountryDB:
    CHECK_EVERY = 5.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader = _open(path)
        self._stamp = self._stat()
        self._next_check = time.monotonic() + self.CHECK_EVERY

    def _stat(self) -> tuple[int, int, float] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime

    def _maybe_reload(self) -> None:
        self._next_check = time.monotonic() + self.CHECK_EVERY
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            reader = _open(self.path)
        except GeoIPError as exc:
            log.error("geoip: %s; still using the database loaded before", exc)
            return
        old, self._reader = self._reader, reader
        old.close()
        log.info("geoip: reloaded %s", self.path)

    def country(self, address: str) -> str | None:
        """ISO 3166 code of the country the address is in (or registered in), or None."""
        if time.monotonic() >= self._next_check:
            self._maybe_reload()
        try:
            found = self._reader.get(address.split("%", 1)[0])
        except (ValueError, maxminddb.InvalidDatabaseError):
            return None
        if not isinstance(found, dict):
            return None
        for key in ("country", "registered_country"):
            place = found.get(key)
            if isinstance(place, dict) and isinstance(place.get("iso_code"), str):
                return str(place["iso_code"])
        return None

    def close(self) -> None:
        self._reader.close()
