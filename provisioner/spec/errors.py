"""Spec problems as data: a field path (or host), what is wrong, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec."""

    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" (fix: {self.hint})" if self.hint else "")


class SpecError(ValueError):
    """A spec that cannot be used; carries every problem found, not just the first."""

    def __init__(self, source: str, issues: list[SpecIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  - {i}" for i in issues)
        noun = "problem" if len(issues) == 1 else "problems"
        super().__init__(f"{source}: {len(issues)} {noun} in the cluster spec:\n{lines}")
