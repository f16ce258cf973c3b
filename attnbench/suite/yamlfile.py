"""YAML with line numbers: a SafeLoader whose mappings and lists remember the
line of every key and item, so that every error in a suite can name its line."""

from __future__ import annotations

from typing import Any

import yaml

from attnbench.errors import SuiteError


class LineDict(dict):
    line: int = 0
    lines: dict[Any, int]


class _LineList(list):
    line: int = 0
    lines: list[int]


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.key_path: list[str] = []  # the keys and indexes above the node being read

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A scalar the safe constructors cannot read (``!!int x``, the date
        2001-02-30, a 5000-digit integer) raises ValueError & co. without a
        line; make it a YAML error at the node."""
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, SuiteError, RecursionError):
            raise
        except Exception as exc:  # noqa: BLE001 - any constructor failure is the file's fault
            shown = node.value if isinstance(node, yaml.ScalarNode) else node.id
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            tag = str(node.tag).rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown!r} as {tag} ({type(exc).__name__}: {str(exc)[:80]})",
                node.start_mark) from None


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    data = LineDict()
    data.line = node.start_mark.line + 1
    data.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise SuiteError(f"a key must be a plain name, got {key!r}", line=line)
        if key in data:
            raise SuiteError("duplicate key", line=line, key=_key_path(loader, str(key)))
        loader.key_path.append(f".{key}")  # where we are, for the message of a duplicate key
        try:
            data[key] = loader.construct_object(value_node, deep=True)
        finally:
            loader.key_path.pop()
        data.lines[key] = line
    return data


def _key_path(loader: _Loader, key: str) -> str:
    """``defaults.batch``, ``variants[1].params.k``: a key with the sections it is in."""
    return ("".join(loader.key_path) + f".{key}").lstrip(".")


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _LineList:
    data = _LineList()
    for i, child in enumerate(node.value):
        loader.key_path.append(f"[{i}]")
        try:
            data.append(loader.construct_object(child, deep=True))
        finally:
            loader.key_path.pop()
    data.line = node.start_mark.line + 1
    data.lines = [child.start_mark.line + 1 for child in node.value]
    return data


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def plain(value: Any) -> Any:
    """Strip the line bookkeeping: plain dicts and lists for the rest of the code."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def read_yaml(text: str, path: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except SuiteError as exc:
        exc.file = path
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        kind = "value" if isinstance(exc, yaml.constructor.ConstructorError) else "syntax"
        raise SuiteError(f"YAML {kind} error: {problem}", file=path,
                         line=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise SuiteError("the YAML is nested too deeply to be a suite", file=path) from None
