"""Reading a cluster spec: bytes or text -> validated ``Cluster``, or a ``SpecError`` with every
issue.

Scope: reading the file within bounds, YAML parsing with line numbers, turning pydantic's
errors into field paths with a fix, running the cross-field rules, checking the local files
the spec names (``spec.files``), and resolving defaults that depend on data (the version).

Any input answers with a ``Cluster`` or a ``SpecError`` of one screen, never a traceback,
a hang or unbounded memory: the file is read up to ``MAX_BYTES``; it must be UTF-8 text;
nesting is limited to ``MAX_DEPTH`` levels and the document, with every alias expanded, to
``MAX_WEIGHT`` nodes (so "billion laughs" alias bombs are refused before anything walks
them); numbers are at most ``MAX_NUMBER_CHARS`` characters long.
"""

from __future__ import annotations

import codecs
import difflib
import os
import re
import stat
from ipaddress import IPv4Network
from pathlib import Path
from typing import IO, Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from provisioner.spec import files, models, rules
from provisioner.spec.errors import SpecError, SpecIssue, shown
from provisioner.versions import manifest

# A cluster spec is a few KB; a thousand hosts take about 60 KB. 1 MiB leaves room and keeps
# what a wrong file (a log, an image, /dev/zero) costs to a megabyte.
MAX_BYTES = 1 << 20
# The spec's models nest 6 levels deep; YAML nested deeper than this is not a spec.
MAX_DEPTH = 32
# Nodes (each scalar, list and mapping) with every alias expanded: a spec of MAX_BYTES of
# short entries has about 300,000. Aliases can multiply that a billionfold in a few lines.
MAX_WEIGHT = 400_000
# Characters of one number: enough for any port, count or size; Python's int() of a long
# digit string (or YAML 1.1's base-60 '1:2:3...') costs quadratic time.
MAX_NUMBER_CHARS = 100
_MERGE_TAG = "tag:yaml.org,2002:merge"
EXTENSION_PREFIX = "x-"
_TOO_DEEP_HINT = ("a spec nests about 6 levels: look for stray '[' or '{' or a runaway "
                  "indentation")

_PROVIDER_MODELS: dict[str, type[BaseModel]] = {
    "nspawn": models.NspawnProvider,
    "vagrant": models.VagrantProvider,
    "static": models.StaticProvider,
}


class _Refused(yaml.MarkedYAMLError):
    """YAML this loader will not build: too deep, too large once expanded, a huge number."""

    def __init__(self, problem: str, hint: str, mark: Any) -> None:
        super().__init__(None, None, problem, mark)
        self.hint = hint


class _SpecConstructor(yaml.constructor.SafeConstructor):
    """SafeConstructor refusing duplicate mapping keys (PyYAML keeps the last one), long
    numbers, and turning Python's errors on odd scalars (2024-13-01) into YAML errors."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        """Construct one node; a ValueError of Python's becomes a marked YAML error."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {shown(node.value)}: {exc}",
                node.start_mark) from None


# libyaml's parser (in C) when PyYAML has it, as its PyPI wheels do: ten times faster than
# the Python one. Its composer recurses in C, so the nesting is checked on the events first.
_CParser: Any
try:
    from yaml._yaml import CParser as _CParser
except ImportError:  # PyYAML built without libyaml
    _CParser = None
_EventLoader: Any = getattr(yaml, "CBaseLoader", yaml.BaseLoader)


class _PySpecLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,
                    yaml.composer.Composer, _SpecConstructor, yaml.resolver.Resolver):
    """The pure-Python loader (PyYAML without libyaml)."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _SpecConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)


if _CParser is not None:
    class _CSpecLoader(_CParser, _SpecConstructor, yaml.resolver.Resolver):  # type: ignore[misc]
        """The libyaml loader."""

        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            _SpecConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _SpecLoader: Any = _CSpecLoader
else:
    _SpecLoader = _PySpecLoader


def _scan(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and undefined aliases, from the event stream
    (the parser keeps a stack, it does not recurse), before anything composes the nodes."""
    events = _EventLoader(text)
    depth = 0
    anchors: set[str] = set()
    try:
        while events.check_event():
            event = events.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _Refused(f"nested more than {MAX_DEPTH} levels deep",
                                   _TOO_DEEP_HINT, event.start_mark)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            if isinstance(event, yaml.AliasEvent):
                if event.anchor not in anchors:
                    raise yaml.composer.ComposerError(
                        None, None, f"found undefined alias {shown(event.anchor, 40)}",
                        # libyaml's marks have the same line and column as PyYAML's
                        event.start_mark)  # type: ignore[arg-type]
            elif isinstance(event, yaml.NodeEvent) and event.anchor is not None:
                anchors.add(event.anchor)
    finally:
        events.dispose()


def _construct_mapping(loader: _SpecConstructor, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # `<<: *anchor`: merged keys may be overridden by the ones written here
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {shown(key)} (first on line {seen[key]})",
                key_node.start_mark,
            )
        if isinstance(key, str | int | float | bool):
            seen[key] = line
    return loader.construct_mapping(node)


def _number(kind: str) -> Any:
    base = getattr(yaml.SafeLoader, f"construct_yaml_{kind}")

    def construct(loader: _SpecConstructor, node: yaml.ScalarNode) -> Any:
        if len(node.value) > MAX_NUMBER_CHARS:
            raise _Refused(f"a number of {len(node.value)} characters is too long",
                           "quote it if it is text, or write a smaller number",
                           node.start_mark)
        return base(loader, node)

    return construct


for _tag, _fn in ((yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping),
                  ("tag:yaml.org,2002:int", _number("int")),
                  ("tag:yaml.org,2002:float", _number("float"))):
    _SpecConstructor.add_constructor(_tag, _fn)


def _weigh(root: yaml.Node) -> None:
    """Refuse a node graph that is cyclic, too deep or too large once aliases are expanded.

    Sizes are memoised per node, so this costs the composed graph's size, not the expansion's.
    """
    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (weight, height)
    active: set[int] = set()

    def weigh(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep once aliases are expanded",
                           "use fewer levels of aliases", node.start_mark)
        if key in memo:
            weight, height = memo[key]
        elif key in active:
            raise _Refused("an alias refers to a node that contains it (a recursive structure)",
                           "an anchored value cannot contain an alias to itself",
                           node.start_mark)
        else:
            active.add(key)
            weight, height = 1, 1
            if isinstance(node, yaml.ScalarNode):
                weight += len(node.value) // 256  # long strings weigh too
            else:
                children = (node.value if isinstance(node, yaml.SequenceNode)
                            else [n for pair in node.value for n in pair])
                for child in children:
                    w, h = weigh(child, depth + 1)
                    weight += w
                    height = max(height, h + 1)
                    if weight > MAX_WEIGHT:
                        break
            active.discard(key)
            memo[key] = (weight, height)
        if depth + height > MAX_DEPTH + 1:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep once aliases are expanded",
                           "use fewer levels of aliases", node.start_mark)
        if weight > MAX_WEIGHT:
            raise _Refused(f"the document expands to more than {MAX_WEIGHT:,} values (aliases "
                           "included)", "write the values out instead of nesting aliases of "
                           "aliases", node.start_mark)
        return weight, height

    weigh(root, 0)


def _open(path: Path) -> IO[bytes]:
    # O_NONBLOCK: opening a named pipe without a writer would wait forever; cleared after the
    # open so that reading a pipe with a writer (`validate <(gen-spec)`) waits for its data.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory")
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise OSError(0, "not a regular file (a device or socket)")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_bounded(path: Path) -> bytes:
    """The file's bytes, at most ``MAX_BYTES``; raises ``SpecError`` (a larger file too)."""
    try:
        with _open(path) as f:
            data = f.read(MAX_BYTES + 1)
            size = max(len(data), os.fstat(f.fileno()).st_size)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpecError(str(path), [SpecIssue(str(path), f"cannot read: {why}",
                                              "check the path")]) from None
    if size > MAX_BYTES:
        raise SpecError(str(path), [_too_large(size)])
    return data


def _too_large(size: int) -> SpecIssue:
    return SpecIssue("(document)", f"the file is {size / 2**20:.1f} MiB; a cluster spec is at "
                     f"most {MAX_BYTES / 2**20:.0f} MiB", "check that this is the spec (one "
                     "with a thousand hosts is about 60 KB)")


def load_file(path: Path, *, require_files: bool = False) -> models.Cluster:
    """Read and validate the spec at ``path``, and the local files it names.

    Relative file paths in the spec start at the spec's folder, and the returned spec names
    every local file by that resolved, absolute path. Files that exist must be right (a
    caFile holds PEM certificates, ...); missing ones are errors only with ``require_files``,
    for commands that read them (``artifacts build`` makes artifacts.path, so it must not
    require it).
    """
    return parse(read_bounded(path), str(path), path.resolve().parent, require_files)


def parse(text: str | bytes, source: str = "<spec>", base: Path | None = None,
          require_files: bool = False) -> models.Cluster:
    """Validate spec text; every problem is reported at once.

    With ``base`` (the spec's folder) the local files the spec names are checked too, and
    named by their resolved paths in the result (``spec.files.resolved``).
    """
    try:
        return _parse(text, source, base, require_files)
    except SpecError:
        raise
    except Exception as exc:
        # The last line of "never a traceback": a bug here still answers in one line.
        raise SpecError(source, [SpecIssue(
            "(document)", f"internal error while reading the spec: {type(exc).__name__}: "
            f"{shown(str(exc), 120)}", "please report it with the spec file")]) from exc


def _parse(text: str | bytes, source: str, base: Path | None,
           require_files: bool) -> models.Cluster:
    if len(text) > MAX_BYTES:
        raise SpecError(source, [_too_large(len(text))])
    if isinstance(text, bytes):
        text = _decode(text, source)
    data = _load_yaml(text, source)
    if not isinstance(data, dict):
        got = "an empty document" if data is None else f"a {type(data).__name__}"
        raise SpecError(source, [SpecIssue("(document)", "expected a mapping with apiVersion, "
                                           f"kind, metadata and spec, got {got}",
                                           "start from inventories/nspawn-3cp-2w.yaml")])
    # Top-level `x-...` keys are the spec's place for anchors (`x-ssh: &ssh {...}`, then
    # `<<: *ssh`), as in compose files; nothing reads them.
    data = {k: v for k, v in data.items()
            if not (isinstance(k, str) and k.startswith(EXTENSION_PREFIX))}
    try:
        cluster = models.Cluster.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, [_issue(e, data) for e in exc.errors()]) from None
    issues = rules.check(cluster)
    if issues:
        raise SpecError(source, issues)
    if base is not None:
        problems, missing = files.check(cluster, base)
        if problems or (require_files and missing):
            raise SpecError(source, problems + (missing if require_files else []))
        cluster = files.resolved(cluster, base)
    return with_defaults(cluster)


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is dropped), or a SpecError naming the encoding."""
    for bom, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                      (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if data.startswith(bom):
            raise SpecError(source, [SpecIssue(
                "(document)", f"the file is {name} text",
                f"save it as UTF-8, e.g. with `iconv -f {name} -t UTF-8`")])
    data = data.removeprefix(codecs.BOM_UTF8)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise SpecError(source, [SpecIssue(
            _where(data, nul), "the file holds NUL bytes: it is binary, or UTF-16 text "
            "without a byte-order mark", "name the YAML spec file, saved as UTF-8 text")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(source, [SpecIssue(
            _where(data, exc.start), f"not UTF-8 text (byte 0x{data[exc.start]:02x})",
            "save the file as UTF-8")]) from None


def _where(data: bytes | str, offset: int) -> str:
    nl: Any = b"\n" if isinstance(data, bytes) else "\n"
    line = data.count(nl, 0, offset) + 1
    column = offset - (data.rfind(nl, 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _load_yaml(text: str, source: str) -> Any:
    try:
        _scan(text)
        loader = _SpecLoader(text)
    except yaml.YAMLError as exc:
        raise SpecError(source, [_yaml_issue(exc, text)]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _weigh(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise SpecError(source, [_yaml_issue(exc, text)]) from None
    finally:
        loader.dispose()


def _yaml_issue(exc: yaml.YAMLError, text: str) -> SpecIssue:
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        what = f"{char!r}" if isinstance(char, str) else f"0x{char:02x}"
        return SpecIssue(_where(text, exc.position), f"not valid YAML: the character {what} is "
                         "not allowed in YAML text", "remove it (control characters cannot "
                         "appear in a spec, not even quoted)")
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"
    problem = str(getattr(exc, "problem", None) or exc)
    context = getattr(exc, "context", None) or ""
    if context and not context.startswith("while "):  # "while parsing ..." points elsewhere
        problem = f"{context} {problem}"
    if len(problem) > 200:
        problem = problem[:199] + "…"
    if "maximum nesting depth" in problem:  # libyaml's own limit (1000), met while scanning
        problem, hint = f"nested more than {MAX_DEPTH} levels deep", _TOO_DEEP_HINT
    elif isinstance(exc, _Refused):
        hint = exc.hint
    elif problem.startswith("duplicate key"):
        hint = "keep one of them"
    elif "another document" in problem:
        hint = "keep one document per file (remove the extra '---')"
    elif "undefined alias" in problem:
        hint = "define the anchor (&name) before its alias (*name)"
    elif "could not determine a constructor" in problem:
        hint = "remove the tag (a '!' word): a spec is plain YAML"
    elif "expected a mapping or list of mappings for merging" in problem or (
            "expected a mapping for merging" in problem):
        hint = "merge (<<) only mappings: `<<: *anchor` or `<<: [*a, *b]`"
    elif problem.startswith("cannot read the value"):
        hint = "quote it to make it text, or fix the value"
    else:
        hint = "fix the indentation or quoting there"
    return SpecIssue(where, f"not valid YAML: {problem}", hint)


def with_defaults(cluster: models.Cluster) -> models.Cluster:
    """Fill data-dependent defaults (the Kubernetes version) so the plan sees concrete values."""
    if cluster.spec.kubernetes_version is not None:
        return cluster
    spec = cluster.spec.model_copy(update={"kubernetes_version": manifest.default_version()})
    return cluster.model_copy(update={"spec": spec})


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    prev: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif prev == "provider" and part in _PROVIDER_MODELS:
            pass  # discriminated-union tag: not a key the user wrote
        else:
            out += ("." if out else "") + (part if isinstance(part, str) else shown(part, 30))
        prev = part
    return out or "(document)"


def _choices(expected: str) -> list[str]:
    """The values of pydantic's ``expected`` text: ``"'a', 'b' or 'c'"`` -> ``[a, b, c]``."""
    return re.findall(r"'([^']*)'", expected)


def _choice_hint(value: Any, choices: list[str]) -> str:
    word = value[:64] if isinstance(value, str) else shown(value, 64)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6) or [
        c for c in choices if c.lower() == word.lower()
    ]
    if close:
        return f"did you mean {close[0]!r}?"
    if len(choices) == 1:
        return f"write {choices[0]!r}"
    return "use one of " + ", ".join(repr(c) for c in choices)


def _issue(err: Any, data: dict[str, Any]) -> SpecIssue:
    loc: tuple[Any, ...] = tuple(err["loc"])
    path = _path(loc)
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    example = _example(loc)
    if "hint" in ctx:  # our own validators (spec.models) carry the fix
        hint = str(ctx["hint"])
        if example and "e.g." not in hint:
            hint += f", e.g. {example}"
        return SpecIssue(path, str(err["msg"]), hint)
    if kind == "invalid_key":
        return SpecIssue(_path(loc[:-1]), f"key {shown(loc[-1])} is not text",
                         "field names are text: look for a stray number or a misplaced ':'")
    if kind == "extra_forbidden":
        key = loc[-1] if isinstance(loc[-1], str) else shown(loc[-1])
        parent = _path(loc[:-1]) if len(loc) > 1 else ""
        known = _known_keys(loc[:-1], data)
        close = difflib.get_close_matches(key[:64], known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else (
            f"remove it; known keys here: {', '.join(known)}" if known else "remove it")
        where = f"in {parent}" if parent else "at the top level"
        return SpecIssue(path if parent else "(document)",
                         f"unknown field {shown(key)} {where}", hint)
    if kind == "missing":
        return SpecIssue(path, f"required field {shown(str(loc[-1]))} is missing",
                         "add it (see inventories/nspawn-3cp-2w.yaml for an example)")
    if kind == "literal_error":
        choices = _choices(str(ctx.get("expected", "")))
        what = f"expected {choices[0]!r}" if len(choices) == 1 else (
            "not one of " + ", ".join(repr(c) for c in choices))
        return SpecIssue(path, f"{shown(value)}: {what}", _choice_hint(value, choices))
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        return SpecIssue(path + ".type", f"unknown provider type {shown(tag)}",
                         _choice_hint(tag, list(_PROVIDER_MODELS)))
    if kind == "union_tag_not_found":
        return SpecIssue(path + ".type", "provider type is missing",
                         "set type: nspawn, vagrant or static")
    if kind in ("ip_v4_address", "ip_v4_network", "ip_v4_interface"):
        return _ip_issue(path, kind, value, example)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        hint = "write its fields as `key: value` lines indented under it"
        if isinstance(value, bool) and "enabled" in _known_keys(loc, data):
            hint = f"write `{loc[-1]}: {{enabled: {str(value).lower()}}}`"
        if loc[-1] == "provider":
            tag = value if isinstance(value, str) and value in _PROVIDER_MODELS else "nspawn"
            hint = f"write it as a mapping: `provider: {{type: {tag}}}`"
        return SpecIssue(path, f"expected a mapping, got {shown(value)}", hint)
    if kind in ("too_long", "too_short", "string_too_long", "string_too_short"):
        bound = "at most" if "max_length" in ctx else "at least"
        n = ctx.get("max_length", ctx.get("min_length"))
        unit = "characters" if isinstance(value, str) else "entries"
        if n == 1:
            unit = unit[:-1] if unit == "characters" else "entry"
        return SpecIssue(path, f"must have {bound} {n} {unit} (got {shown(value)})",
                         f"use {bound} {n} {unit}")
    if kind == "string_pattern_mismatch":
        info = _field_info(loc)
        desc = info.description if info is not None and info.description else ""
        return SpecIssue(path, f"{shown(value)} does not have the required form",
                         desc or f"match the pattern {ctx.get('pattern')}")
    if kind == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
        return SpecIssue(path, f"expected text, got the number {shown(value)}",
                         f'quote it: "{shown(value, 30)}"')
    msg = str(err["msg"]).removeprefix("Value error, ")
    return SpecIssue(path, msg if value is None or kind == "value_error"
                     else f"{msg} (got {shown(value)})", _generic_hint(kind, ctx))


def _ip_issue(path: str, kind: str, value: Any, example: str) -> SpecIssue:
    if kind == "ip_v4_address":
        return SpecIssue(path, f"{shown(value)} is not an IPv4 address",
                         f"write e.g. {example or '192.168.56.11'}")
    what = "an IPv4 network in CIDR form"
    if isinstance(value, str) and "/" in value and len(value) < 64:
        try:
            fixed = IPv4Network(value, strict=False)
        except ValueError:
            pass
        else:
            return SpecIssue(path, f"{shown(value)} has host bits set",
                             f"write the network's first address: {fixed}")
    return SpecIssue(path, f"{shown(value)} is not {what}",
                     f"write e.g. {example or '10.244.0.0/16'}")


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


def _field_info(loc: tuple[Any, ...]) -> FieldInfo | None:
    """The field at ``loc`` (list positions and union tags skipped), or None."""
    model: type[BaseModel] | None = models.Cluster
    info: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if part in _PROVIDER_MODELS and info is not None and info.alias == "provider":
            model = _PROVIDER_MODELS[part]
            continue
        if model is None:
            return None
        info = next((f for n, f in model.model_fields.items()
                     if (f.alias or n) == part or n == part), None)
        if info is None:
            return None
        model = _model_of(info.annotation)
    return info


def _example(loc: tuple[Any, ...]) -> str:
    """An example value of the field at ``loc``: its documented example or its default."""
    info = _field_info(loc)
    if info is None:
        return ""
    if info.examples:
        return str(info.examples[0])
    default = info.default
    if default is PydanticUndefined or default is None or isinstance(default, bool | list):
        return ""
    return str(default)


def _known_keys(loc: tuple[Any, ...], data: dict[str, Any]) -> list[str]:
    """Aliases accepted at ``loc``, found by walking the models along the data."""
    model: type[BaseModel] | None = models.Cluster
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        if part in _PROVIDER_MODELS:
            model = _PROVIDER_MODELS[part]
            continue
        field = next((f for n, f in model.model_fields.items()
                      if (f.alias or n) == part or n == part), None)
        if field is None:
            return []
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
