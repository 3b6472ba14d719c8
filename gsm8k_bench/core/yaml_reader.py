"""Input files read with their line numbers, and checked so that every problem names file:line: key.

matrix.yaml, baselines.yaml and the references' JSON go through here: `LineNumberLoader` parses YAML
into mappings and lists that remember where they stood (`load` also names the file in a syntax error),
and a `NodeChecker` validates the parsed values (types, allowed keys, choices with a "did you mean"),
turning the first problem into one ConfigError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml

from gsm8k_bench.core.errors import ConfigError, cut_quoted, unknown_choice
from gsm8k_bench.core.json_input import MAX_DEPTH

T = TypeVar("T")
MAX_CHARS = 4 * 1024 * 1024  # matrix.yaml and baselines.yaml are tens of kB


class MappingWithLines(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key (1-based) and its own."""

    line: int = 0
    key_lines: dict[Any, int]


class ListWithLines(list[Any]):
    """A YAML sequence that remembers its line (1-based)."""

    line: int = 0


class LineNumberLoader(yaml.SafeLoader):
    """PyYAML's safe loader building MappingWithLines and ListWithLines, refusing duplicate keys."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        """Anchors and aliases are refused: an alias bomb (a few KB expanding to gigabytes) must not
        reach the constructor, and this project's files have no need to repeat themselves that way."""
        event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's parser is unannotated
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ConfigError(f"{event.start_mark.line + 1}: YAML anchors and aliases (&name, *name) are not "
                              "allowed here; write the values out")
        # Composing recurses per level: a nesting bomb ([[[[...) must stop here, not at Python's recursion limit.
        self.depth = getattr(self, "depth", 0) + 1
        try:
            if self.depth > MAX_DEPTH:
                raise ConfigError(f"{event.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep (the "
                                  "most allowed)")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> MappingWithLines:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"{key_node.start_mark.line + 1}: duplicate key {key!r} "
                    f"(first at line {seen[key]})"
                )
            seen[key] = key_node.start_mark.line + 1
        mapping = MappingWithLines(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = seen
        return mapping

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> ListWithLines:
        seq = ListWithLines(super().construct_sequence(node, deep=True))
        seq.line = node.start_mark.line + 1
        return seq


LineNumberLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, LineNumberLoader.construct_mapping)
LineNumberLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, LineNumberLoader.construct_sequence)


def load(text: str, path: Path) -> Any:
    """The document in `text` (read from `path`); a syntax error, an alias or a duplicate key is one
    ConfigError naming path.name and the line."""
    if len(text) > MAX_CHARS:
        raise ConfigError(f"{path.name}: {len(text)} characters, more than the {MAX_CHARS} allowed")
    try:
        return yaml.load(text, Loader=LineNumberLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{path.name}:{exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark else path.name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None


class NodeChecker:
    """Checks the values parsed from one file, turning every problem into one ConfigError with
    file:line: key (the line where the value came from YAML; JSON and defaults have none)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str, node: object = None, child: object = None) -> ConfigError:
        line = 0
        if isinstance(node, MappingWithLines) and child is not None:
            line = node.key_lines.get(child, node.line)
        elif isinstance(node, MappingWithLines | ListWithLines):
            line = node.line
        where = f"{self.path.name}:{line}" if line else self.path.name
        return ConfigError(f"{where}: {key}: {cut_quoted(message)}")

    def mapping(self, node: object, key: str, allowed: Iterable[str] | None = None,
                required: Iterable[str] = ()) -> dict[Any, Any]:
        if not isinstance(node, dict):
            # A YAML sequence arrives as this reader's line-tracking list: name it as the file's reader knows it.
            got = "list" if isinstance(node, list) else type(node).__name__
            raise self.fail(key, f"expected a mapping, got {got}", node)
        if allowed is not None:
            allowed = tuple(allowed)
            for child in node:
                if child not in allowed:
                    raise self.fail(f"{key}.{child}", unknown_choice("key", child, allowed), node, child)
        for child in required:
            if child not in node:
                raise self.fail(key, f"missing required key {child!r}", node)
        return node

    @overload
    def typed(self, node: object, key: str, kind: type[T], parent: object = None, child: object = None) -> T: ...

    @overload
    def typed(self, node: object, key: str, kind: tuple[type[int], type[float]], parent: object = None,
              child: object = None) -> float: ...

    def typed(self, node: object, key: str, kind: type[Any] | tuple[type[Any], ...], parent: object = None,
              child: object = None) -> Any:
        # bool is an int in Python; a YAML `yes` where a number belongs is still an error.
        numeric = kind in (int, float, (int, float))
        if not isinstance(node, kind) or (numeric and isinstance(node, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(key, f"expected {names}, got {node!r}", parent, child)
        if numeric and not math.isfinite(node):  # YAML's .nan and .inf: no timeout or bound means that
            raise self.fail(key, f"expected a finite number, got {node!r}", parent, child)
        return node

    def positive_int(self, node: object, key: str, parent: object = None, child: object = None,
                     minimum: int = 1) -> int:
        value = self.typed(node, key, int, parent, child)
        if value < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {value}", parent, child)
        return value

    def name(self, node: object, key: str, pattern: re.Pattern[str], parent: object = None) -> str:
        value = self.typed(node, key, str, parent, node)
        if not pattern.match(value):
            raise self.fail(key, f"name {value!r} must match {pattern.pattern} "
                            "(lowercase letters, digits, '.' and '-')", parent, value)
        return value

    def choice(self, node: object, key: str, kind: str, allowed: Iterable[str], parent: object = None,
               child: object = None) -> str:
        allowed = tuple(allowed)
        for value in allowed:
            if value == node:
                return value
        raise self.fail(key, unknown_choice(kind, node, allowed), parent, child)

    def choices(self, node: object, key: str, kind: str, allowed: Iterable[str], parent: object = None,
                child: object = None) -> tuple[str, ...]:
        items = self.typed(node, key, list, parent, child)
        for index, item in enumerate(items):
            self.choice(item, f"{key}[{index}]", kind, allowed, items)
        if len(set(items)) != len(items):
            raise self.fail(key, f"lists a value twice: {items}", parent, child)
        return tuple(items)

    def str_list(self, node: object, key: str, parent: object = None, child: object = None) -> tuple[str, ...]:
        items = self.typed(node, key, list, parent, child)
        for index, item in enumerate(items):
            self.typed(item, f"{key}[{index}]", str, items)
        return tuple(items)
