"""Value types shared by every config section: durations, sizes, listen addresses, paths
relative to the config file, and ``Strict`` (unknown keys are errors)."""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _duration(value: Any, zero: bool = False) -> float:
    """Accept ``5``, ``2.5``, ``500ms``, ``10s``, ``5m``, ``1h``, ``7d``; return seconds (``zero``:
    also ``0``, where zero turns a feature off)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s, 500ms or 5m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (use e.g. 10s, 500ms, 5m)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0 or (seconds == 0 and not zero):
        raise ValueError("must be greater than zero" if not zero else "must not be negative")
    return seconds


def _size(value: Any) -> int:
    """Accept ``1048576``, ``512k``, ``10m``, ``1g`` (binary units); return bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 10m")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a size (use e.g. 64k, 10m, 1g)")
        unit = (match.group(2) or "b")[0].lower()
        size = int(match.group(1)) * {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    if size < 0:
        raise ValueError("must not be negative")
    return size


def _relative_to_config(path: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file, so the appliance's CWD never matters."""
    base = (info.context or {}).get("base_dir")
    return path if path.is_absolute() or base is None else Path(base) / path


Duration = Annotated[float, BeforeValidator(_duration)]
DurationOrZero = Annotated[float, BeforeValidator(lambda value: _duration(value, zero=True))]


def parse_duration(value: str) -> float:
    """A duration given outside the config file (a command's option, an API field)."""
    return _duration(value)


FilePath = Annotated[Path, AfterValidator(_relative_to_config)]


Size = Annotated[int, BeforeValidator(_size)]


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``; raise ValueError with a plain message."""
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{value!r} is not host:port")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"{host!r} is not an IP address (or localhost)") from None
    if not 0 < int(port) < 65536:
        raise ValueError(f"port {port} is out of range")
    return host, int(port)


def _listen(value: Any) -> str:
    parse_listen(value)
    return str(value)


Listen = Annotated[str, BeforeValidator(_listen)]


class Strict(BaseModel):
    """Every config section forbids unknown keys so a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


