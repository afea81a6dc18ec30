"""Read a config file: YAML with line numbers, ``${VAR}`` from the environment, then the schema.

Every problem is collected and reported as ``FILE:LINE: key: problem`` so an operator fixes them all
in one pass. Duplicate YAML keys are errors (PyYAML would silently keep the last one).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import ValidationError

from appliance.config.checks import cross_checks
from appliance.config.schema import Config
from appliance.errors import ConfigError, ConfigProblem

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
}

Loc = tuple[Any, ...]


class _Reader:
    """Turns a composed YAML node tree into Python values, remembering each path's line."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Loc, int] = {}
        self.problems: list[ConfigProblem] = []
        self._scalars = yaml.SafeLoader("")

    def read(self, node: yaml.Node, loc: Loc) -> Any:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalars.construct_object(key_node)
                if key in out:
                    self._problem(loc + (key,), key_node.start_mark.line + 1, "duplicate key")
                    continue
                self.lines[loc + (key,)] = key_node.start_mark.line + 1
                out[key] = self.read(value_node, loc + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, loc + (i,)) for i, item in enumerate(node.value)]
        value = self._scalars.construct_object(node)
        if isinstance(value, str) and "${" in value:
            value = _ENV.sub(lambda m: self._env(m, loc, node.start_mark.line + 1), value)
        return value

    def _env(self, match: re.Match[str], loc: Loc, line: int) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name, default)
        if value is None:
            self._problem(loc, line, f"environment variable {name} is not set")
            return ""
        return value

    def _problem(self, loc: Loc, line: int, problem: str) -> None:
        self.problems.append(ConfigProblem(self.file, line, dotted(loc), problem))

    def line_of(self, loc: Loc) -> int:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1


def dotted(loc: Loc) -> str:
    """``('domains', 0, 'hosts')`` -> ``domains[0].hosts``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


Check = Callable[[Config], list[tuple[Loc, str]]]


def load_config(path: str | os.PathLike[str], check: Check | None = None, text: str | None = None) -> Config:
    """Load and validate ``path``; raise ConfigError listing every problem found.

    ``check`` runs deeper checks on a schema-valid config (building the stages, which compiles
    WAF rule sets) and returns (location, problem) pairs, reported with their lines too. ``text``
    stands in for the file's content (a saved copy), still read as if it were at ``path``."""
    file = str(path)
    try:
        if text is None:
            text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(file, 1, "(file)", f"cannot read: {exc}")]) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(file, line, "(yaml)", f"invalid YAML: {reason}")]) from exc
    reader = _Reader(file)
    data = reader.read(root, ()) if root is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(file, 1, "(top)", "the config must be a mapping of keys")])
    problems = reader.problems
    config = None
    base_dir = Path(path).resolve().parent
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = _clean_loc(err["loc"])
            message = _MESSAGES.get(err["type"], err["msg"].removeprefix("Value error, "))
            problems.append(ConfigProblem(file, reader.line_of(loc), dotted(loc), message))
    for loc, message in cross_checks(data):
        problems.append(ConfigProblem(file, reader.line_of(loc), dotted(loc), message))
    if config is not None:
        if check is not None and not problems:
            for loc, message in check(config):
                problems.append(ConfigProblem(file, reader.line_of(loc), dotted(loc), message))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line))
    assert config is not None
    return config


def _clean_loc(loc: tuple[Any, ...]) -> Loc:
    # pydantic adds the validator's name for annotated/union members (e.g. "function-before[...]")
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
