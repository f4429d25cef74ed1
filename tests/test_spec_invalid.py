"""The invalid-spec corpus: every file under tests/specs/invalid fails with the issues it names.

Each file starts with its expectations as comments:

- ``# expect: TEXT``: some issue's ``str()`` (``path: message (fix: hint)``) contains TEXT;
- ``# expect-count: N``: the number of issues (default: the number of ``expect`` lines);
- ``# allow-empty-hint``: an issue may come without a fix (none does today);
- ``# why: ...``: free text for the reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.spec import SpecError, SpecIssue, parse

CORPUS = Path(__file__).parent / "specs" / "invalid"
FILES = sorted(CORPUS.glob("*.yaml"))
# Where an issue may point: a field path, a YAML position, a host, or the document itself.
PATH_ROOTS = ("spec.", "apiVersion", "kind", "metadata", "line ", "host ", "(document)")


@dataclass(frozen=True)
class Case:
    """One corpus file and the expectations written in its header."""

    path: Path
    text: str
    expects: tuple[str, ...]
    count: int
    allow_empty_hint: bool


def _case(path: Path) -> Case:
    text = path.read_text()
    expects: list[str] = []
    count: int | None = None
    allow_empty_hint = False
    for line in text.splitlines():
        if line.startswith("# expect: "):
            expects.append(line.removeprefix("# expect: "))
        elif line.startswith("# expect-count: "):
            count = int(line.removeprefix("# expect-count: "))
        elif line.strip() == "# allow-empty-hint":
            allow_empty_hint = True
    return Case(path, text, tuple(expects), len(expects) if count is None else count,
                allow_empty_hint)


CASES = [_case(p) for p in FILES]


def _issues(case: Case) -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        parse(case.text, case.path.name)
    assert info.value.source == case.path.name
    return info.value.issues


def test_corpus_is_large_and_well_formed() -> None:
    assert len(CASES) >= 60
    names = [c.path.name for c in CASES]
    assert len({n.split("-", 1)[0] for n in names}) == len(names), "numbers must be unique"
    for case in CASES:
        assert case.expects, f"{case.path.name}: no '# expect:' line"
        assert case.text.startswith("# expect"), f"{case.path.name}: header must come first"


@pytest.mark.parametrize("case", CASES, ids=[c.path.stem for c in CASES])
def test_invalid_spec_reports_expected_issues(case: Case) -> None:
    issues = _issues(case)
    rendered = [str(i) for i in issues]
    for expect in case.expects:
        assert any(expect in r for r in rendered), (
            f"{case.path.name}: no issue contains {expect!r}; got:\n" + "\n".join(rendered)
        )
    assert len(issues) == case.count, "\n".join(rendered)


@pytest.mark.parametrize("case", CASES, ids=[c.path.stem for c in CASES])
def test_every_issue_says_how_to_fix_it(case: Case) -> None:
    for issue in _issues(case):
        assert issue.message.strip(), issue
        if not case.allow_empty_hint:
            assert issue.hint.strip(), f"{case.path.name}: no fix for {issue}"
        assert "Input should" not in issue.hint, issue


@pytest.mark.parametrize("case", CASES, ids=[c.path.stem for c in CASES])
def test_every_issue_names_where(case: Case) -> None:
    for issue in _issues(case):
        assert issue.path == "spec" or issue.path.startswith(PATH_ROOTS), (
            f"{case.path.name}: {issue}"
        )
        # The discriminated-union tag is pydantic's, not a key the user wrote.
        assert ".nspawn" not in issue.path and ".static" not in issue.path, issue


def test_error_text_lists_every_issue() -> None:
    case = next(c for c in CASES if "many-issues-at-once" in c.path.name)
    with pytest.raises(SpecError) as info:
        parse(case.text, "cluster.yaml")
    text = str(info.value)
    assert text.startswith(f"cluster.yaml: {case.count} problems in the cluster spec:")
    for expect in case.expects:
        assert expect in text


def test_issue_str_carries_the_fix() -> None:
    issue = SpecIssue("spec.x", "is wrong", "make it right")
    assert str(issue) == "spec.x: is wrong (fix: make it right)"
    assert str(SpecIssue("spec.x", "is wrong")) == "spec.x: is wrong"
