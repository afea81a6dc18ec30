"""A bundle may only use files inside itself.

Rule files can name other files: ``Include``, ``@pmFromFile``, ``@ipMatchFromFile``,
``SecGeoLookupDb`` and friends. Compiled from the store, an absolute path or a ``..`` would make
the engine read a host file (and a URL would make it fetch one), so the rules that run would no
longer be the bytes that were imported, verified and signed. Such references are refused at import.
"""
from __future__ import annotations

import re

# Directives whose first argument is a path, and operators whose argument is one or more paths.
_DIRECTIVES = re.compile(
    rb"^\s*(Include|IncludeOptional|SecGeoLookupDb|SecUnicodeMapFile|SecAuditLog|SecAuditLog2|SecAuditLogStorageDir"
    rb"|SecDebugLog|SecDataDir|SecTmpDir|SecUploadDir|SecRemoteRules)\s+(.+?)\s*$",
    re.MULTILINE | re.IGNORECASE)
_OPERATORS = re.compile(rb"@(pmFromFile|pmf|ipMatchFromFile|ipMatchF|inspectFile)\s+([^\"]+)", re.IGNORECASE)
_ALWAYS_REFUSED = {b"secremoterules"}
_COMMENT = re.compile(rb"^\s*#.*$", re.MULTILINE)


def _bad(path: bytes) -> str | None:
    text = path.decode("utf-8", "replace").strip().strip("'\"")
    if "://" in text:
        return "a URL"
    if text.startswith("/") or text.startswith("\\") or re.match(r"^[A-Za-z]:", text):
        return "an absolute path"
    if ".." in re.split(r"[/\\]", text):
        return "a path that leaves the bundle"
    return None


def outside_references(files: dict[str, bytes]) -> list[str]:
    """Problems, one per reference to something outside the bundle, as ``file: what``."""
    problems = []
    for rel, data in sorted(files.items()):
        if not rel.endswith(".conf"):
            continue
        data = _COMMENT.sub(b"", data)  # commented-out examples are not references
        for directive, argument in _DIRECTIVES.findall(data):
            name = directive.decode()
            if directive.lower() in _ALWAYS_REFUSED:
                problems.append(f"{rel}: {name} fetches rules from outside the bundle")
            elif (why := _bad(argument.split()[0] if argument.split() else b"")) is not None:
                problems.append(f"{rel}: {name} names {why} ({argument.decode('utf-8', 'replace')})")
        for operator, argument in _OPERATORS.findall(data):
            for path in argument.split():
                if (why := _bad(path)) is not None:
                    problems.append(f"{rel}: @{operator.decode()} names {why} ({path.decode('utf-8', 'replace')})")
    return problems
