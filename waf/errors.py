"""Errors raised by the waf package.

Hierarchy::

    WafError
    └── WafCompileError     the engine refused the rules (holds ModSecurity's parser message)
"""
from __future__ import annotations


class WafError(Exception):
    """Base class of every WAF error."""


class WafCompileError(WafError):
    """ModSecurity could not compile a rule set."""
