"""The single error type of the PKI package.

Scope: carries human-readable problems (what is wrong and how to fix it). Messages name
requests, files and fields; they never contain key material.
"""

from __future__ import annotations

from collections.abc import Sequence


class PkiError(ValueError):
    """A PKI plan or store that cannot be used; lists every problem found, not just the first."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        if len(self.problems) == 1:
            message = f"PKI: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"PKI: {len(self.problems)} problems:\n{lines}"
        super().__init__(message)
