"""Spec input that cannot crash or hang: any file gets exit 1 and one screen, never a traceback.

Each case here is a kind of file a user can hand to ``provisioner validate`` (and so to every
command that loads a spec): wrong encodings, binary data, wrong shapes, nesting, alias bombs,
huge numbers, huge files, pipes and devices. Times are not asserted here (see
bench/validate_input.py for the measured numbers); the bounds that keep them short are.
"""

from __future__ import annotations

import codecs
import os
import threading
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from provisioner.cli import app
from provisioner.spec import SpecError, SpecIssue, load, load_file, parse
from provisioner.spec.errors import SHOWN_CHARS, SHOWN_ISSUES, shown
from provisioner.spec.load import MAX_BYTES, MAX_DEPTH, MAX_WEIGHT

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = (ROOT / "tests" / "specs" / "valid" / "01-minimal-nspawn.yaml").read_text()
runner = CliRunner()


def _laughs(levels: int = 9) -> str:
    text = "x-a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    prev = "a"
    for name in "bcdefghijk"[: levels - 1]:
        text += f"x-{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text


BAD_FILES: dict[str, bytes] = {
    "binary": bytes(range(256)) * 16,
    "utf16-bom": codecs.BOM_UTF16_LE + MINIMAL.encode("utf-16-le"),
    "utf16-no-bom": MINIMAL.encode("utf-16-le"),
    "utf32-bom": codecs.BOM_UTF32_BE + MINIMAL.encode("utf-32-be"),
    "latin1": MINIMAL.replace("mini", "m\xefni").encode("latin-1"),
    "empty": b"",
    "blank": b"   \n\n",
    "a-list": b"- apiVersion: provisioner.dev/v1alpha1\n- kind: Cluster\n",
    "a-scalar": b"just text\n",
    "flow-nesting": b"[" * 200_000 + b"]" * 200_000,
    "block-nesting": "".join("  " * i + f"k{i}:\n" for i in range(300)).encode(),
    "mapping-nesting": b"{a: " * 5000 + b"1" + b"}" * 5000,
    "billion-laughs": (_laughs() + MINIMAL).encode(),
    "laughs-in-spec": MINIMAL.replace("spec:\n", "spec:\n  hosts: *i\n").encode().replace(
        b"apiVersion", _laughs().encode() + b"apiVersion", 1),
    "alias-chain-deep": ("x-a0: &a0 [x]\n" + "".join(
        f"x-a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 60)) + MINIMAL).encode(),
    "alias-chain-long": ("x-a0: &a0 [x]\n" + "".join(
        f"x-a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 20_000)) + MINIMAL).encode(),
    "recursive-alias": b"a: &a [*a]\n",
    "recursive-map": b"a: &a {b: *a}\n",
    "huge-int": (MINIMAL + "  ssh: {port: " + "9" * 100_000 + "}\n").encode(),
    "huge-hex": (MINIMAL + "  ssh: {port: 0x" + "f" * 50_000 + "}\n").encode(),
    "base-60": ("a: " + ":".join(["1"] * 100_000) + "\n").encode(),
    "huge-float": (MINIMAL + "  ssh: {port: 1e999999}\n").encode(),
    "bad-date": (MINIMAL + "  kubernetesVersion: 2024-02-30\n").encode(),
    "control-char": b"apiVersion: a\x01b\n",
    "nul-in-middle": MINIMAL.encode() + b"\x00",
    "python-tag": b"a: !!python/object/apply:os.system [echo]\n",
    "unknown-tag": b"a: !vault |\n  abc\n",
    "binary-tag": b"a: !!binary '@@@'\n",
    "undefined-alias": b"a: *nowhere\n",
    "unhashable-key": b"? [a, b]\n: c\n",
    "null-keys": b"~: 1\nnull: 2\n",
    "tab-indent": b"spec:\n\tprovider: x\n",
    "two-documents": MINIMAL.encode() + b"---\n" + MINIMAL.encode(),
    "five-megabytes": MINIMAL.encode() + b"# " + b"x" * (5 << 20) + b"\n",
    "many-bad-hosts": (MINIMAL.replace("type: nspawn", "type: static") + "  hosts:\n" + "".join(
        f"    - {{name: Host_{i}, address: 10.0.{i // 250}.{i % 250 + 1}}}\n"
        for i in range(3000))).encode(),
    "long-line-value": (MINIMAL + "  kubernetesVersion: '" + "1" * 500_000 + "'\n").encode(),
}


def _assert_one_screen(text: str) -> None:
    lines = text.splitlines()
    assert len(lines) <= SHOWN_ISSUES + 2, text[:2000]
    assert all(len(line) <= 500 for line in lines), max(lines, key=len)[:200]
    assert "Traceback" not in text
    assert "internal error" not in text


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_exits_1_with_one_screen(name: str, tmp_path: Path) -> None:
    spec = tmp_path / f"{name}.yaml"
    spec.write_bytes(BAD_FILES[name])
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))
    assert "problem" in result.output
    _assert_one_screen(result.output)


@pytest.mark.parametrize("command", [["plan"], ["render", "--out", "OUT"], ["status"],
                                     ["machines", "status"], ["artifacts", "fetch"],
                                     ["verify"]])
def test_every_command_that_loads_a_spec_answers_the_same(command: list[str],
                                                          tmp_path: Path,
                                                          state_root: Path) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_bytes(BAD_FILES["billion-laughs"])
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    result = runner.invoke(app, [*args, str(spec)] if command[0] != "render" else
                           [args[0], str(spec), *args[1:]])
    assert result.exit_code == 1, result.output
    assert "expands to more than" in result.output
    _assert_one_screen(result.output)


@pytest.mark.parametrize("name", ["flow-nesting", "billion-laughs", "alias-chain-long",
                                  "recursive-map", "huge-int", "control-char", "bad-date",
                                  "undefined-alias", "two-documents"])
def test_pure_python_yaml_is_bounded_too(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libyaml PyYAML parses in Python; the same bounds hold."""
    monkeypatch.setattr(load, "_SpecLoader", load._PySpecLoader)
    monkeypatch.setattr(load, "_EventLoader", yaml.BaseLoader)
    with pytest.raises(SpecError) as info:
        parse(BAD_FILES[name])
    _assert_one_screen(str(info.value))
    assert parse(MINIMAL).metadata.name == "mini"


def _issue(text: str | bytes) -> SpecIssue:
    with pytest.raises(SpecError) as info:
        parse(text, "t.yaml")
    assert len(info.value.issues) == 1, info.value.issues
    return info.value.issues[0]


def test_utf16_is_named_with_the_fix() -> None:
    issue = _issue(BAD_FILES["utf16-bom"])
    assert issue.message == "the file is UTF-16 text"
    assert "iconv -f UTF-16 -t UTF-8" in issue.hint


def test_binary_and_latin1_name_the_position() -> None:
    assert _issue(b"apiVersion: x\nkind: \x00\n").path == "line 2, column 7"
    latin = _issue(BAD_FILES["latin1"])
    assert latin.message == "not UTF-8 text (byte 0xef)"
    assert latin.path == "line 5, column 10"


def test_utf8_byte_order_mark_is_fine() -> None:
    assert parse(codecs.BOM_UTF8 + MINIMAL.encode()).metadata.name == "mini"


def test_nesting_and_aliases_are_bounded() -> None:
    assert f"more than {MAX_DEPTH} levels" in _issue(BAD_FILES["flow-nesting"]).message
    assert f"more than {MAX_DEPTH} levels" in _issue(BAD_FILES["alias-chain-deep"]).message
    bomb = _issue(BAD_FILES["billion-laughs"])
    assert f"expands to more than {MAX_WEIGHT:,} values" in bomb.message
    assert "recursive" in _issue(BAD_FILES["recursive-map"]).message


def test_aliases_that_stay_small_are_fine() -> None:
    text = MINIMAL.replace("spec:\n", "x-sans: &sans [api.example.com, 10.0.0.10]\nspec:\n", 1)
    text += "  apiserver:\n    extraSANs: *sans\n"
    assert parse(text).spec.apiserver.extra_sans == ["api.example.com", "10.0.0.10"]


def test_numbers_are_bounded() -> None:
    assert _issue(BAD_FILES["huge-int"]).message.endswith("a number of 100000 characters "
                                                          "is too long")
    issue = _issue(MINIMAL + "  ssh: {port: 123456789012345678901234567890}\n")
    assert issue.path == "spec.ssh.port"
    assert "got 123456789012345678901234567890" in issue.message


def test_merge_keys_work_and_explicit_keys_win() -> None:
    text = """\
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: m}
x-login: &login {user: admin, port: 2222}
x-node: &node {ssh: {user: ubuntu}}
spec:
  provider: {type: static}
  ssh:
    <<: *login
    port: 22
    privateKeyFile: /keys/id
  hosts:
    - {<<: *node, name: a, address: 10.0.0.1}
    - <<: [*node]
      name: b
      address: 10.0.0.2
"""
    cluster = parse(text)
    assert (cluster.spec.ssh.user, cluster.spec.ssh.port) == ("admin", 22)
    assert [h.ssh.user for h in cluster.spec.hosts if h.ssh] == ["ubuntu", "ubuntu"]


def test_top_level_x_keys_are_for_anchors_only() -> None:
    assert parse("x-anything: {a: 1}\n" + MINIMAL).metadata.name == "mini"
    assert "unknown field 'y-anything'" in _issue("y-anything: 1\n" + MINIMAL).message


def test_error_text_is_one_screen_but_issues_are_all_there() -> None:
    with pytest.raises(SpecError) as info:
        parse(BAD_FILES["many-bad-hosts"], "big.yaml")
    assert len(info.value.issues) == 3000
    text = str(info.value)
    assert text.startswith("big.yaml: 3000 problems in the cluster spec:")
    assert text.splitlines()[-1] == f"  ... and {3000 - SHOWN_ISSUES} more (fix these first)"
    _assert_one_screen(text)


def test_echoed_values_are_cut_short() -> None:
    issue = _issue(MINIMAL + "  network: {cni: '" + "x" * 10_000 + "'}\n")
    echoed = issue.message.split(":")[0]
    assert len(echoed) == SHOWN_CHARS and echoed.endswith("…'")
    issue = _issue(MINIMAL.replace("name: mini", "name: '" + "N" * 5000 + "'"))
    assert len(str(issue)) < 300


@pytest.mark.parametrize(("value", "text"), [
    ("short", "'short'"),
    ("x" * 100, "'" + "x" * (SHOWN_CHARS - 3) + "…'"),
    ("a\nb", "'a\\nb'"),
    (10**5000, "a number of about 5001 digits"),
    (list(range(100)), "[0, 1, 2, 3, …]"),
    ({"k": "v" * 100}, "{'k': 'vvvvvvvvvvvvvvvvv…'}"),
    (None, "None"),
], ids=["short", "long", "newline", "huge-int", "list", "dict", "none"])
def test_shown(value: object, text: str) -> None:
    assert shown(value) == text


def test_file_size_is_bounded_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(5 << 30)  # a sparse 5 GiB file: only the first MiB may be read
    with pytest.raises(SpecError) as info:
        load_file(big)
    assert info.value.issues[0].message == "the file is 5120.0 MiB; a cluster spec is at most 1 MiB"
    exact = tmp_path / "exact.yaml"
    exact.write_bytes(b"#" * MAX_BYTES)
    with pytest.raises(SpecError) as info:
        load_file(exact)
    assert "got an empty document" in info.value.issues[0].message


def test_devices_directories_and_pipes_do_not_hang(tmp_path: Path) -> None:
    for path in (Path("/dev/zero"), tmp_path, tmp_path / "missing.yaml"):
        with pytest.raises(SpecError):
            load_file(path)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    done: list[BaseException] = []

    def read() -> None:
        try:
            load_file(fifo)
        except SpecError as exc:  # no writer: an empty document, at once
            done.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert done and "empty document" in str(done[0])


def test_a_pipe_with_a_writer_is_read() -> None:
    """As `provisioner validate <(make-spec)` hands it: a pipe whose writer is open."""
    r, w = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(w, MINIMAL.encode()), os.close(w)),
                              daemon=True)
    writer.start()
    try:
        assert load_file(Path(f"/dev/fd/{r}")).metadata.name == "mini"
    finally:
        os.close(r)
    writer.join(timeout=30)
