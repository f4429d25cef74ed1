"""Spec problems as data: a field path (or host), what is wrong, and how to fix it.

Scope: the issue record, the error that carries every issue, and ``shown``, which every
message uses to echo a user's value: short, one line, and safe for any value YAML can make
(a megabyte of text, a number of ten thousand digits, a structure of shared aliases).
"""

from __future__ import annotations

from dataclasses import dataclass

# A value echoed in a message is cut to this many characters (then an ellipsis).
SHOWN_CHARS = 60
# The error text lists this many issues, then how many more there are: one screen.
SHOWN_ISSUES = 15
# One issue line is cut to this many characters (hints list choices, but not pages of them).
ISSUE_CHARS = 400
_BIG_INT_DIGITS = 30


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with an ellipsis; never raises."""
    if isinstance(value, int) and not isinstance(value, bool) and (
            value.bit_length() > _BIG_INT_DIGITS * 3.33):
        # repr() of a huge int is slow, and refused past 4300 digits.
        return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"
    if isinstance(value, str | bytes) and len(value) > limit:
        # repr() of the whole would copy it all: cut first, keep the closing quote.
        text = repr(value[: max(limit - 3, 1)]).replace("\n", "\\n")
        return text[: limit - 2] + "…" + text[-1]
    if isinstance(value, list | tuple | dict | set | frozenset):
        return _shown_collection(value, limit)
    try:
        text = repr(value)
    except Exception:  # an echo must never fail; the type is still worth showing
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown_collection(value: object, limit: int) -> str:
    """A collection's first few items, without walking it all (it may share aliases)."""
    if isinstance(value, dict):
        parts = []
        for k, v in list(value.items())[:4]:
            parts.append(f"{shown(k, 20)}: {shown(v, 20)}")
        text = "{" + ", ".join(parts) + (", …" if len(value) > 4 else "") + "}"
    else:
        assert isinstance(value, list | tuple | set | frozenset)
        items = [shown(v, 20) for v in list(value)[:4]]
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        text = open_ + ", ".join(items) + (", …" if len(value) > 4 else "") + close
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec."""

    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" (fix: {self.hint})" if self.hint else "")


class SpecError(ValueError):
    """A spec that cannot be used; carries every problem found, not just the first.

    The text lists the first ``SHOWN_ISSUES`` (a spec with thousands of bad hosts still
    gets one screen); ``issues`` holds them all.
    """

    def __init__(self, source: str, issues: list[SpecIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = [f"  - {_cut(str(i))}" for i in issues[:SHOWN_ISSUES]]
        if len(issues) > SHOWN_ISSUES:
            lines.append(f"  ... and {len(issues) - SHOWN_ISSUES} more (fix these first)")
        noun = "problem" if len(issues) == 1 else "problems"
        super().__init__(f"{_cut(source, 200)}: {len(issues)} {noun} in the cluster spec:\n"
                         + "\n".join(lines))


def _cut(text: str, limit: int = ISSUE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
