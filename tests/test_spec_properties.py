"""Property-based tests of `provisioner validate` over generated bad input (hypothesis).

Whatever the file holds, validate exits 0 (a valid spec) or 1 (a listed problem), prints one
screen, never a traceback or an internal error, and answers within the per-example deadline.
Inputs: random bytes, random YAML documents, and valid specs with one value replaced by a
generated one or one key dropped (the mistakes a user makes one at a time).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from provisioner.cli import app
from provisioner.spec import SpecError, parse
from provisioner.spec.errors import SHOWN_ISSUES

ROOT = Path(__file__).resolve().parents[1]
SPECS = [p.read_text() for p in sorted((ROOT / "tests" / "specs" / "valid").glob("*.yaml"))]
runner = CliRunner()
SETTINGS = settings(max_examples=150, deadline=timedelta(seconds=3),
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=80),
    st.sampled_from(["", "~", "0x1F", "1:30", "2024-02-30", "10.0.0.300", "fd00::1",
                     "-oProxyCommand=sh", "'quoted'", "a" * 300, "10.96.0.1/12", "*.x",
                     "https://h.test.com/\"", "\u202e", "\x7f", "null", "<<"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=12), st.integers(), st.none()), inner,
                    max_size=4)), max_leaves=20)


def _validate(tmp: Path, data: bytes) -> None:
    spec = tmp / "spec.yaml"
    spec.write_bytes(data)
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))
    out = result.output
    assert "Traceback" not in out and "internal error" not in out, out
    assert len(out.splitlines()) <= SHOWN_ISSUES + 3, out
    if result.exit_code == 1:
        assert "problem" in out


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _set(node: Any, path: tuple[Any, ...], value: Any, drop: bool) -> None:
    for part in path[:-1]:
        node = node[part]
    if drop and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value


@SETTINGS
@given(data=st.binary(max_size=2000))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    _validate(tmp_path, data)


@SETTINGS
@given(doc=values)
def test_random_yaml_documents(tmp_path: Path, doc: Any) -> None:
    _validate(tmp_path, yaml.safe_dump(doc, allow_unicode=True).encode())


@SETTINGS
@given(spec=st.sampled_from(SPECS), choice=st.data(), value=values, drop=st.booleans())
def test_valid_spec_with_one_value_changed(tmp_path: Path, spec: str, choice: st.DataObject,
                                           value: Any, drop: bool) -> None:
    doc = yaml.safe_load(spec)
    path = choice.draw(st.sampled_from(_paths(doc)))
    _set(doc, path, value, drop)
    _validate(tmp_path, yaml.safe_dump(doc, allow_unicode=True).encode())


@SETTINGS
@given(spec=st.sampled_from(SPECS), cut=st.integers(min_value=0, max_value=4000),
       junk=st.text(alphabet="-:[]{}&*!|>'\"%@`#,? \n\t", max_size=20))
def test_valid_spec_with_text_spliced(tmp_path: Path, spec: str, cut: int, junk: str) -> None:
    _validate(tmp_path, (spec[:cut] + junk + spec[cut:]).encode())


@SETTINGS
@given(doc=values)
def test_parse_raises_only_spec_errors(doc: Any) -> None:
    try:
        parse(yaml.safe_dump(doc))
    except SpecError as exc:
        assert exc.issues and all(i.hint for i in exc.issues), exc


def test_a_key_path_with_an_unknown_user_is_not_an_internal_error() -> None:
    """``~nosuchuser/key`` cannot be expanded (RuntimeError in pathlib): the spec still loads
    and the path stays as written (found by the spliced-text property above)."""
    from provisioner.spec import parse

    cluster = parse("apiVersion: provisioner.dev/v1alpha1\nkind: Cluster\nmetadata: {name: k}\n"
                    "spec:\n  provider: {type: nspawn}\n"
                    "  ssh: {privateKeyFile: ~nosuchuser-provisioner/id}\n")
    from provisioner.spec.topology import machines
    assert str(machines(cluster)[0].ssh_key) == "~nosuchuser-provisioner/id"
