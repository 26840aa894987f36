"""Read sweep specs: YAML -> `key=value` overrides -> pydantic, with errors naming file and key."""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sparse_transfer.config.spec import SweepSpec

__all__ = [
    "MAX_SPEC_BYTES",
    "SpecError",
    "apply_overrides",
    "dump_spec",
    "load_spec",
    "parse_spec",
    "read_yaml",
]

# A real spec is a few kilobytes; parsing and validating a huge one costs seconds and GBs.
MAX_SPEC_BYTES = 1 << 20
# A real spec holds a few hundred values. YAML aliases repeat what they name, so a small
# file can stand for billions of values ("billion laughs"): counted before they are built.
MAX_SPEC_VALUES = 100_000


class SpecError(ValueError):
    """A spec that cannot run; the message names the file and the dotted key."""


def load_spec(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    path = Path(path)
    return parse_spec(read_yaml(path, "spec"), source=str(path), overrides=overrides)


def read_yaml(path: Path, kind: str) -> Any:
    """A spec file's YAML, refused before parsing when it is missing, too large or not text."""
    if not path.is_file():
        raise SpecError(f"{path}: no such {kind} file")
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            f"{path}: {size} bytes; a {kind} is at most {MAX_SPEC_BYTES} bytes (1 MiB)"
        )
    try:
        loader = yaml.SafeLoader(path.read_bytes().decode("utf-8"))
        try:  # parsed once: the node graph is checked, then built into values
            root = loader.get_single_node()
            _check_shape(root, path, kind)
            return None if root is None else loader.construct_document(root)
        finally:
            loader.dispose()
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to be a {kind}") from None


def _check_shape(root: yaml.Node | None, path: Path, kind: str) -> None:
    """Refuse a document whose aliases expand past MAX_SPEC_VALUES or refer to themselves,
    from its node graph (each shared node counted once per use, computed once)."""
    sizes: dict[int, int] = {}
    building: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in building:
            raise SpecError(f"{path}: a YAML alias refers to a value that holds it")
        building.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(key) + size(value) for key, value in node.value)
        else:
            total = 1
        building.discard(id(node))
        sizes[id(node)] = total
        return total

    if root is not None and (total := size(root)) > MAX_SPEC_VALUES:
        raise SpecError(
            f"{path}: expands to {total} values through YAML aliases; a {kind} holds at most "
            f"{MAX_SPEC_VALUES}"
        )


def parse_spec(raw: Any, *, source: str, overrides: list[str] | None = None) -> SweepSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a spec is a YAML mapping, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [], source=source)
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_format(err, source, SweepSpec)) from None


def apply_overrides(raw: dict, overrides: list[str], *, source: str) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) before validation."""
    raw = yaml.safe_load(yaml.safe_dump(raw))  # deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SpecError(f"{source}: override {item!r} is not of the form key=value")
        parts = key.split(".")
        node = raw
        for part in parts[:-1]:
            node = _child(node, part, key, source)
        last = parts[-1]
        value = _value(text, key, source)
        if isinstance(node, list):
            node[_index(node, last, key, source)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SpecError(_plain(source, key, parts[-2]))
    return raw


def _value(text: str, key: str, source: str) -> Any:
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise SpecError(
            f"{source}: override {key!r}: value {text!r} is not valid YAML ({problem}); "
            "quote it to give a string"
        ) from None


def _child(node: Any, part: str, key: str, source: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key, source)]
    if not isinstance(node, dict):
        raise SpecError(_plain(source, key, part))
    if node.get(part) is None:  # absent, or an explicit null: becomes a mapping
        node[part] = {}
    return node[part]


def _plain(source: str, key: str, part: str) -> str:
    return f"{source}: override {key!r}: {part!r} is a plain value, it has no keys"


def _index(node: list, part: str, key: str, source: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise SpecError(f"{source}: override {key!r}: no list index {part!r} (length {len(node)})")
    return int(part)


def _format(err: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    problems = []
    for problem in err.errors():
        key, message = _dotted(problem["loc"]), _message(problem)
        if problem["type"] == "extra_forbidden" and model is not None:
            message += _did_you_mean(str(problem["loc"][-1]), _keys_at(model, problem["loc"]))
        # Cross-field checks name their key first: "early_stopping.grace_period: ...".
        found = _KEYED.match(message)
        if found and key == "(top level)":
            key, message = found.group(1), found.group(2)
        problems.append((key, message, problem))
    problems = _drop_union_noise(problems)
    lines = [f"{source}: invalid sweep spec ({len(problems)} problem(s))"]
    lines += [f"  {key}: {message}" for key, message, _ in problems]
    return "\n".join(lines)


_KEYED = re.compile(r"^([A-Za-z_][\w.\[\]]*): (.*)$", re.S)
_SCALAR_MISMATCH = {
    "float_parsing",
    "float_type",
    "int_parsing",
    "int_type",
    "string_type",
    "int_from_float",
    "bool_parsing",
}


def _drop_union_noise(problems: list) -> list:
    """A search-space value is a distribution or a scalar: when the distribution branch reports
    a real problem, the scalar branches' 'not a number/string' complaints are noise."""
    keys_with_real = {key for key, _, p in problems if p["type"] not in _SCALAR_MISMATCH}
    return [
        (k, m, p)
        for k, m, p in problems
        if not (p["type"] in _SCALAR_MISMATCH and k in keys_with_real)
    ]


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        # Union members and tagged-union tags add loc parts that mean nothing to a user.
        if isinstance(part, str) and (
            part.startswith(("function-", "tagged-union[")) or part in _UNION_TAGS
        ):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_UNION_TAGS = {"loguniform", "uniform", "int", "choice", "float", "str", "int-str"}


def _message(problem: dict) -> str:
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "extra_forbidden":
        return "unknown key (not allowed here)"
    if problem["type"] == "union_tag_invalid":
        return message.replace("Input tag", "distribution")
    return message


def _did_you_mean(unknown: str, valid: set[str]) -> str:
    close = difflib.get_close_matches(unknown, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _keys_at(model: type[BaseModel], loc: tuple) -> set[str]:
    """The keys allowed beside the unknown one at `loc`: the fields of every model the spec's
    schema allows there (all members of a union)."""
    level: list = [model]
    for part in loc[:-1]:
        models = [m for t in level for m in _models_in(t)]
        if isinstance(part, int):
            level = [a for m in level for a in _items_of(m)]
        else:
            fields = [m.model_fields[part].annotation for m in models if part in m.model_fields]
            # else a dict's key, or a union's tag in `loc` (the same level)
            level = fields or [a for t in level for a in _items_of(t)] or level
    return {name for t in level for m in _models_in(t) for name in m.model_fields}


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _items_of(annotation) -> list:
    """What a list (or a dict) of `annotation` holds."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, dict):
        return [typing.get_args(annotation)[-1]]
    return [i for arg in typing.get_args(annotation) for i in _items_of(arg)]


def dump_spec(spec: SweepSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
