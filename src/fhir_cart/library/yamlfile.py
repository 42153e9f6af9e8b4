"""Reading the project's YAML files into models: one loader, one error style.

Every YAML file fhir_cart reads (terminology, concept library, status table, profiles, centre
mappings, study definitions, registry files) goes through :func:`read_yaml` and is checked
by :func:`validate_model` (or both at once, :func:`load_model`). A file that does not fit
its model is a :class:`ConfigError` naming, for each problem, the file, the key path, what
is wrong, and where known the line, the value given and the fix::

    mapping file m.yaml is invalid: events[0].colour: Extra inputs are not permitted
    (line 12; value 'red'; fix: remove the key, or correct its spelling)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fhir_cart.errors import ConfigError

__all__ = [
    "WrittenKeysLoader",
    "describe_errors",
    "load_model",
    "read_yaml",
    "read_yaml_text",
    "validate_model",
]

M = TypeVar("M", bound=BaseModel)

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML was built with it (several times faster on the concept
library and terminology, read by every command), else the pure-Python one: same documents."""

_PATH = re.compile(r"^[\w\[\]\.]+: ")
"""A model check's message that starts with a key path of its own (``columns.x: ...``)."""

_TAGS = {"int", "str", "float", "bool", "list", "dict", "none"}
"""Union branch names pydantic puts into an error's location (never a key of the file)."""

_FIXES = {
    "extra_forbidden": "remove the key, or correct its spelling",
    "missing": "add the key",
    "literal_error": "use one of the values listed",
    "enum": "use one of the values listed",
    "int_parsing": "give a whole number",
    "int_type": "give a whole number",
    "float_parsing": "give a number",
    "float_type": "give a number",
    "bool_parsing": "give true or false",
    "bool_type": "give true or false",
    "string_type": "give a text (quote it)",
    "list_type": "give a list (- item lines, or [a, b])",
    "dict_type": "give a mapping (key: value lines)",
    "model_type": "give a mapping (key: value lines)",
    "date_from_datetime_parsing": "give a date as YYYY-MM-DD",
    "date_parsing": "give a date as YYYY-MM-DD",
}


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML of ``path`` (safe loader); ConfigError 'cannot read <what> <path>: ...'
    when the file is missing, unreadable or not YAML. Checking the shape is the caller's."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    return read_yaml_text(text, path, what)


def read_yaml_text(text: str, path: Path, what: str) -> Any:
    """:func:`read_yaml` of a file's text already read."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - safe
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc


def load_model(path: Path, model: type[M], what: str) -> M:
    """``path`` read (:func:`read_yaml`) and checked against ``model`` (:func:`validate_model`)."""
    return validate_model(read_yaml(path, what), model, what, path)


def validate_model(
    raw: Any,
    model: type[M],
    what: str,
    path: Path | None = None,
    *,
    extra: Mapping[str, Any] | None = None,
) -> M:
    """``raw`` (a file's YAML) as ``model``; ConfigError '<what> <path> is invalid: ...' in
    the style of :func:`describe_errors`. ``extra``: keys added that the file does not give
    (the folder it is in, say)."""
    where = f"{what} {path}" if path is not None else what
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must hold a YAML mapping of keys (key: value) at the top")
    try:
        return model.model_validate({**raw, **extra} if extra else raw)
    except ValidationError as exc:
        raise ConfigError(f"{where} is invalid: {describe_errors(exc, path)}") from exc


def describe_errors(exc: ValidationError, path: Path | None = None) -> str:
    """A pydantic error as ``key.path: what is wrong (line N; value V; fix: F)``, one per
    problem, joined by ``; ``. Union branches the input was never meant for are left out
    (only the deepest key path of each problem is said); the line is looked up in ``path``
    when given."""
    root = _compose(path)
    found: dict[str, list[str]] = {}
    details: dict[str, str] = {}
    for error in exc.errors():
        key, loc = _key_path(error["loc"], root)
        for message in str(error["msg"]).removeprefix("Value error, ").split("; "):
            if key and _PATH.match(message):
                name, _, rest = message.partition(": ")
                where, text = f"{key}.{name}", rest
            else:
                where, text = key, message
            if text not in found.setdefault(where, []):
                found[where].append(text)
            details.setdefault(where, _detail(error, _line(root, loc)))
    deepest = [
        p for p in found if not any(o != p and o.startswith(p) and o[len(p)] in ".[" for o in found)
    ]
    problems = []
    for where in deepest or list(found):
        said = " or ".join(found[where])
        detail = f" ({details[where]})" if details[where] else ""
        problems.append(f"{where}: {said}{detail}" if where else f"{said}{detail}")
    return "; ".join(problems)


def _key_path(loc: Sequence[int | str], root: yaml.Node | None) -> tuple[str, list[int | str]]:
    """The key path as written in the file (``events[0].columns``) and the location parts
    that are keys or positions of the file. A union branch pydantic names in the location
    (``int``, a model's class name) is left out unless the file has a key of that name."""
    text, parts = "", []
    node = root
    for part in loc:
        child = _child(node, part) if node is not None else None
        branch = isinstance(part, str) and ("[" in part or part in _TAGS or part[:1].isupper())
        if child is None and branch:
            continue
        node = child[1] if child is not None else None
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        parts.append(part)
    return text, parts


def _detail(error: Mapping[str, Any], line: int | None) -> str:
    out = []
    if line is not None:
        out.append(f"line {line}")
    value = error.get("input")
    if error["type"] != "missing" and isinstance(value, str | int | float | bool):
        out.append(f"value {value!r}")
    fix = _FIXES.get(error["type"])
    if fix is not None:
        out.append(f"fix: {fix}")
    return "; ".join(out)


def _compose(path: Path | None) -> yaml.Node | None:
    """The file's node tree (with line marks), only when an error needs its lines."""
    if path is None:
        return None
    try:
        return yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return None


def _line(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The line of the deepest node of ``loc`` the file has (a missing key: its parent)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        key_node, node = child
        line = key_node.start_mark.line + 1
    return line


def _child(node: yaml.Node, part: int | str) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if str(key_node.value) == str(part):
                return key_node, value_node
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item = node.value[part]
        return item, item
    return None


WrittenKeysLoader: Any = type("WrittenKeysLoader", (_Loader,), {})
"""Safe YAML, but every mapping key is the text as written (``1: male`` maps the word '1',
``no: negative`` the word 'no', not a boolean) and a key given twice is an error. On libyaml's
parser where PyYAML was built with it, as :func:`read_yaml` (about six times faster on a
centre mapping, read by every command and many times by the tests): the same documents, and
errors name the same file, line and column."""


def _construct_mapping(
    loader: yaml.constructor.SafeConstructor, node: yaml.MappingNode, deep: bool = False
) -> Any:
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key: Any = key_node.value
        else:
            key = loader.construct_object(key_node, deep=True)
        if key in out:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (line {line})", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


WrittenKeysLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)
