"""The manifest's YAML, read safely: plain data plus where each key and value was written.

`PositionedDocument` records the line and column of every key and value so that every later
problem (schema, rules, plan) can point at the manifest; `_LimitedLoader` refuses documents
whose aliases would expand past what a manifest needs. Nothing here knows the schema or the
meaning of any key, and nothing here reads files: the text is handed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tfjsbuild.errors import Problem
from tfjsbuild.manifest.types import Location, line_at

KeyPath = tuple[str | int, ...]


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_MERGE_TAG = "tag:yaml.org,2002:merge"

# What a manifest may make the loader do. A few hundred bytes of nested aliases (a "billion
# laughs") expand to billions of values: 300 bytes took 50 s and 3.5 GB before these limits.
# A 1,000-model manifest sharing settings by `<<: *base` is ~94 KB and ~27,000 values.
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_EXPANDED_VALUES = 100_000
MAX_NESTING = 100  # the schema needs 6 levels; metadata a few more; Python recursion ~300


class _LimitExceeded(yaml.MarkedYAMLError):
    """A document the loader refuses to expand; located at the alias or value that crossed."""


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that counts, while composing (before anything is constructed), how many
    values the document holds with every alias expanded where it is used, and refuses it
    past `MAX_EXPANDED_VALUES`, nested past `MAX_NESTING`, or containing itself."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.expanded = 0
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(node) -> values in it, aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped stub
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self.sizes.get(id(node)) if node is not None else 1
            if size is None:  # its anchor's value is still being composed
                raise self._refuse(
                    event,
                    f"alias *{event.anchor} is inside the value it names, which would make "
                    "the manifest infinite: use an alias only after the value it names ends",
                )
            self._count(event, size, f"alias *{event.anchor}")
            return node
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise self._refuse(
                    event,
                    f"values nested more than {MAX_NESTING} levels deep: a manifest needs "
                    "a handful",
                )
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        size = 1 + sum(self.sizes[id(child)] for child in children)
        if node is not None:
            self.sizes[id(node)] = size
        self._count(event, 1, "this value")
        return node

    def _count(self, event: yaml.Event, values: int, what: str) -> None:
        self.expanded += values
        if self.expanded > MAX_EXPANDED_VALUES:
            raise self._refuse(
                event,
                f"{what} makes the manifest more than {MAX_EXPANDED_VALUES:,} values with "
                "its aliases expanded (each alias is a full copy of what it names): "
                "write shared settings once under `defaults:` instead",
            )

    @staticmethod
    def _refuse(event: yaml.Event, message: str) -> _LimitExceeded:
        mark: Any = event.start_mark  # the stubs have two Mark classes for one thing
        return _LimitExceeded(problem=message, problem_mark=mark)


@dataclass(frozen=True)
class Mark:
    line: int
    column: int


class PositionedDocument:
    """A YAML document as plain data plus the position of every key and value."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = tuple(text.splitlines())
        self.key_marks: dict[KeyPath, Mark] = {}
        self.merged_pairs: dict[int, int] = {}  # id(mapping node) -> pairs merged in by `<<`
        self.value_marks: dict[KeyPath, Mark] = {}
        self.problems: list[Problem] = []
        self.data: Any = None
        self._load(text)

    def _load(self, text: str) -> None:
        loader = _LimitedLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                self.value_marks[()] = _mark(node)
                self.data = self._construct(loader, node, ())
        except _LimitExceeded as error:
            mark = error.problem_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            self.problems.append(self.problem(line, column, "", str(error.problem)))
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            message = " ".join(filter(None, [error.context, error.problem])) or str(error)
            self.problems.append(self.problem(line, column, "", f"invalid YAML: {message}"))
        except yaml.YAMLError as error:
            self.problems.append(self.problem(1, 1, "", f"invalid YAML: {error}"))
        finally:
            loader.dispose()

    def _construct(self, loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath) -> Any:
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_TAGS:
            # Scalars go through SafeLoader, which refuses unknown tags; collections are built
            # here, so refuse object-constructing tags (!!python/object...) the same way.
            self.problems.append(
                self.problem_at(
                    _mark(node), path, f"unsupported YAML tag {node.tag}: use plain values"
                )
            )
            return None
        if isinstance(node, yaml.MappingNode):
            return self._construct_mapping(loader, node, path)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item_node in enumerate(node.value):
                child = (*path, index)
                self.value_marks[child] = _mark(item_node)
                items.append(self._construct(loader, item_node, child))
            return items
        return loader.construct_object(node, deep=True)

    def _construct_mapping(
        self, loader: yaml.SafeLoader, node: yaml.MappingNode, path: KeyPath
    ) -> dict[str, Any]:
        if id(node) not in self.merged_pairs:  # an alias constructs the same node again
            explicit = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
            loader.flatten_mapping(node)  # resolves `<<` merge keys like SafeLoader does
            self.merged_pairs[id(node)] = len(node.value) - explicit
        # flatten_mapping puts the merged pairs first: a key given here overrides a merged
        # one, and a later merge source an earlier one, as YAML says; only keys written
        # twice in this mapping itself are duplicates.
        merged = self.merged_pairs[id(node)]
        result: dict[str, Any] = {}
        explicit_keys: set[KeyPath] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                self.problems.append(
                    self.problem_at(_mark(key_node), path, f"keys must be text, got {key!r}")
                )
                continue
            child = (*path, key)
            if key in result and child not in explicit_keys:
                if index < merged:
                    continue  # merged twice: the first source listed wins
                del result[key]  # a merged value, overridden by the key written here
            if key in result:
                first = self.key_marks[child]
                self.problems.append(
                    self.problem_at(
                        _mark(key_node),
                        child,
                        f"duplicate key '{key}' (first defined on line {first.line}); "
                        "YAML keeps only one of them: remove or rename the other",
                    )
                )
                continue
            self.key_marks[child] = _mark(key_node)
            self.value_marks[child] = _mark(value_node)
            if index >= merged:
                explicit_keys.add(child)
            result[key] = self._construct(loader, value_node, child)
        return result

    def problem(self, line: int, column: int, key_path: str, message: str) -> Problem:
        return Problem(self.path, line, column, key_path, message, line_at(self.lines, line))

    def problem_at(self, mark: Mark, path: KeyPath, message: str) -> Problem:
        return self.problem(mark.line, mark.column, format_key_path(path), message)

    def key_mark(self, path: KeyPath) -> Mark:
        """Position of the key that names `path` (the value's, for list items and the root)."""
        while path:
            if path in self.key_marks:
                return self.key_marks[path]
            if path in self.value_marks:
                return self.value_marks[path]
            path = path[:-1]
        return self.value_marks.get((), Mark(1, 1))

    def value_mark(self, path: KeyPath) -> Mark:
        while path:
            if path in self.value_marks:
                return self.value_marks[path]
            path = path[:-1]
        return self.value_marks.get((), Mark(1, 1))

    def location(self, path: KeyPath, *, key: bool = True) -> Location:
        mark = self.key_mark(path) if key else self.value_mark(path)
        return Location(self.path, mark.line, mark.column, format_key_path(path))


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def format_key_path(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text
