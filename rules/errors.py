"""Errors raised by the rules package.

Hierarchy::

    BundleError
    ├── BundleSourceError     the source cannot be read or has no CRS layout
    ├── BundleCompileError    the engine refused the bundle (holds the parser's message)
    ├── BundleNotFound        no bundle matches a reference
    ├── BundleCorrupt         stored files no longer match the manifest's digests
    └── ActivationsCorrupt    the activation history cannot be read
"""
from __future__ import annotations


class BundleError(Exception):
    """Base class of every bundle error."""


class BundleSourceError(BundleError):
    """The import source cannot be read or is not a rule set."""


class BundleCompileError(BundleError):
    """The engine could not compile the bundle."""


class BundleNotFound(BundleError):
    """No stored bundle matches the reference."""


class BundleCorrupt(BundleError):
    """A stored bundle's files differ from its manifest."""


class ActivationsCorrupt(BundleError):
    """The activation history file is unreadable or not a history."""
