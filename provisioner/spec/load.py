"""Reading a cluster spec: YAML text -> validated ``Cluster``, or a ``SpecError`` with every issue.

Scope: YAML parsing with line numbers, turning pydantic's errors into field paths with a fix,
running the cross-field rules, and resolving defaults that depend on data (the version).
"""

from __future__ import annotations

import difflib
import re
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from provisioner.spec import models, rules
from provisioner.spec.errors import SpecError, SpecIssue
from provisioner.versions import manifest

_PROVIDER_MODELS: dict[str, type[BaseModel]] = {
    "nspawn": models.NspawnProvider,
    "vagrant": models.VagrantProvider,
    "static": models.StaticProvider,
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key]})",
                key_node.start_mark,
            )
        if isinstance(key, str | int | float | bool):
            seen[key] = line
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def load_file(path: Path) -> models.Cluster:
    """Read and validate the spec at ``path``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(str(path), [SpecIssue(str(path), f"cannot read: {exc.strerror}",
                                              "check the path")]) from None
    return parse(text, str(path))


def parse(text: str, source: str = "<spec>") -> models.Cluster:
    """Validate spec text; every problem is reported at once."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None) or ""
        if context and not context.startswith("while "):  # "while parsing ..." points elsewhere
            problem = f"{context} {problem}"
        if problem.startswith("duplicate key"):
            hint = "keep one of them"
        elif "another document" in problem:
            hint = "keep one document per file (remove the extra '---')"
        else:
            hint = "fix the indentation or quoting there"
        raise SpecError(source, [SpecIssue(where, f"not valid YAML: {problem}", hint)]) from None
    if not isinstance(data, dict):
        got = "an empty document" if data is None else f"a {type(data).__name__}"
        raise SpecError(source, [SpecIssue("(document)", "expected a mapping with apiVersion, "
                                           f"kind, metadata and spec, got {got}",
                                           "start from inventories/nspawn-3cp-2w.yaml")])
    try:
        cluster = models.Cluster.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, [_issue(e, data) for e in exc.errors()]) from None
    issues = rules.check(cluster)
    if issues:
        raise SpecError(source, issues)
    return with_defaults(cluster)


def with_defaults(cluster: models.Cluster) -> models.Cluster:
    """Fill data-dependent defaults (the Kubernetes version) so the plan sees concrete values."""
    if cluster.spec.kubernetes_version is not None:
        return cluster
    spec = cluster.spec.model_copy(update={"kubernetes_version": manifest.default_version()})
    return cluster.model_copy(update={"spec": spec})


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    prev: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif prev == "provider" and part in _PROVIDER_MODELS:
            pass  # discriminated-union tag: not a key the user wrote
        else:
            out += ("." if out else "") + part
        prev = part
    return out or "(document)"


def _choices(expected: str) -> list[str]:
    """The values of pydantic's ``expected`` text: ``"'a', 'b' or 'c'"`` -> ``[a, b, c]``."""
    return re.findall(r"'([^']*)'", expected)


def _choice_hint(value: Any, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6) or [
        c for c in choices if c.lower() == str(value).lower()
    ]
    if close:
        return f"did you mean {close[0]!r}?"
    if len(choices) == 1:
        return f"write {choices[0]!r}"
    return "use one of " + ", ".join(repr(c) for c in choices)


def _issue(err: Any, data: dict[str, Any]) -> SpecIssue:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    path = _path(loc)
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if "hint" in ctx:  # our own validators (spec.models) carry the fix
        return SpecIssue(path, str(err["msg"]), str(ctx["hint"]))
    if kind == "invalid_key":
        return SpecIssue(_path(loc[:-1]), f"key {loc[-1]!r} is not text",
                         "field names are text: look for a stray number or a misplaced ':'")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        parent = _path(loc[:-1]) if len(loc) > 1 else ""
        known = _known_keys(loc[:-1], data)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else (
            f"remove it; known keys here: {', '.join(known)}" if known else "remove it")
        where = f"in {parent}" if parent else "at the top level"
        return SpecIssue(path if parent else "(document)", f"unknown field {key!r} {where}", hint)
    if kind == "missing":
        return SpecIssue(path, f"required field {str(loc[-1])!r} is missing",
                         "add it (see inventories/nspawn-3cp-2w.yaml for an example)")
    if kind == "literal_error":
        choices = _choices(str(ctx.get("expected", "")))
        what = f"expected {choices[0]!r}" if len(choices) == 1 else (
            "not one of " + ", ".join(repr(c) for c in choices))
        return SpecIssue(path, f"{value!r}: {what}", _choice_hint(value, choices))
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        return SpecIssue(path + ".type", f"unknown provider type {tag!r}",
                         _choice_hint(tag, list(_PROVIDER_MODELS)))
    if kind == "union_tag_not_found":
        return SpecIssue(path + ".type", "provider type is missing",
                         "set type: nspawn, vagrant or static")
    if kind in ("ip_v4_address", "ip_v4_network", "ip_v4_interface"):
        return _ip_issue(path, kind, value)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        hint = "write its fields as `key: value` lines indented under it"
        if isinstance(value, bool) and "enabled" in _known_keys(loc, data):
            hint = f"write `{loc[-1]}: {{enabled: {str(value).lower()}}}`"
        if loc[-1] == "provider":
            tag = value if isinstance(value, str) and value in _PROVIDER_MODELS else "nspawn"
            hint = f"write it as a mapping: `provider: {{type: {tag}}}`"
        return SpecIssue(path, f"expected a mapping, got {value!r}", hint)
    if kind in ("too_long", "too_short", "string_too_long", "string_too_short"):
        bound = "at most" if "max_length" in ctx else "at least"
        n = ctx.get("max_length", ctx.get("min_length"))
        unit = "characters" if isinstance(value, str) else "entries"
        if n == 1:
            unit = unit[:-1] if unit == "characters" else "entry"
        return SpecIssue(path, f"must have {bound} {n} {unit} (got {value!r})",
                         f"use {bound} {n} {unit}")
    if kind == "string_pattern_mismatch":
        desc = _field_description(loc)
        return SpecIssue(path, f"{value!r} does not have the required form",
                         desc or f"match the pattern {ctx.get('pattern')}")
    if kind == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
        return SpecIssue(path, f"expected text, got the number {value!r}",
                         f'quote it: "{value}"')
    msg = str(err["msg"]).removeprefix("Value error, ")
    return SpecIssue(path, msg if value is None or kind == "value_error"
                     else f"{msg} (got {value!r})", _generic_hint(kind, ctx))


def _ip_issue(path: str, kind: str, value: Any) -> SpecIssue:
    if kind == "ip_v4_address":
        return SpecIssue(path, f"{value!r} is not an IPv4 address", "write e.g. 192.168.56.11")
    what = "an IPv4 network in CIDR form"
    if isinstance(value, str) and "/" in value:
        try:
            fixed = IPv4Network(value, strict=False)
        except ValueError:
            pass
        else:
            return SpecIssue(path, f"{value!r} has host bits set",
                             f"write the network's first address: {fixed}")
    return SpecIssue(path, f"{value!r} is not {what}", "write e.g. 10.244.0.0/16")


def _generic_hint(kind: str, ctx: dict[str, Any]) -> str:
    bounds = {"ge": "at least", "gt": "above", "le": "at most", "lt": "below"}
    for key, word in bounds.items():
        if key in ctx:
            return f"use a value {word} {ctx[key]}"
    if kind == "list_type":
        return "write a YAML list, e.g. [a, b] or `- a` lines"
    if kind.startswith(("int_", "bool_", "float_")):
        return "write " + {"int": "a whole number", "boo": "true or false",
                           "flo": "a number"}[kind[:3]]
    return "check the value against `provisioner schema`"


def _field_description(loc: tuple[int | str, ...]) -> str:
    """The description of the field at ``loc`` (its documented form), or ''."""
    model: type[BaseModel] | None = models.Cluster
    info = None
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        if part in _PROVIDER_MODELS and info is not None and info.alias == "provider":
            model = _PROVIDER_MODELS[part]
            continue
        info = next((f for n, f in model.model_fields.items()
                     if (f.alias or n) == part or n == part), None)
        if info is None:
            return ""
        model = _model_of(info.annotation)
    return (info.description or "") if info is not None else ""


def _known_keys(loc: tuple[int | str, ...], data: dict[str, Any]) -> list[str]:
    """Aliases accepted at ``loc``, found by walking the models along the data."""
    model: type[BaseModel] | None = models.Cluster
    node: Any = data
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if part in _PROVIDER_MODELS:
            model = _PROVIDER_MODELS[part]
            continue
        field = next((f for n, f in model.model_fields.items()
                      if (f.alias or n) == part or n == part), None)
        if field is None:
            return []
        node = node.get(part) if isinstance(node, dict) else None
        model = _model_of(field.annotation)
    if model is None:
        return []
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
