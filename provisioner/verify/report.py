"""Verify output: a rich table, stable JSON and JUnit XML.

JSON and JUnit carry no timestamps or durations, and rows are in registry order, so two runs
against an unchanged cluster give identical output.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from provisioner.verify.model import STATUSES, CheckResult

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skipped": "dim"}
# Characters XML 1.0 cannot carry (command output may contain them).
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def counts(results: Sequence[CheckResult]) -> dict[str, int]:
    """Results per status, every status present."""
    c = Counter(r.status for r in results)
    return {s: c.get(s, 0) for s in STATUSES}


def exit_code(results: Sequence[CheckResult]) -> int:
    """1 when any check failed, else 0."""
    return 1 if any(r.status == "fail" for r in results) else 0


def to_json(cluster: str, results: Sequence[CheckResult]) -> str:
    """The report as JSON (sorted keys, fixed row order, newline-terminated)."""
    data = {
        "cluster": cluster,
        "passed": exit_code(results) == 0,
        "counts": counts(results),
        "checks": [r.to_json() for r in results],
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _xml(text: str) -> str:
    return _XML_BAD.sub("?", text)


def to_junit(cluster: str, results: Sequence[CheckResult]) -> str:
    """One testcase per check and target; fail -> <failure>, skipped -> <skipped>."""
    c = counts(results)
    suites = ET.Element("testsuites", name="provisioner verify", tests=str(len(results)),
                        failures=str(c["fail"]), skipped=str(c["skipped"]), errors="0")
    suite = ET.SubElement(suites, "testsuite", name=f"verify {cluster}",
                          tests=str(len(results)), failures=str(c["fail"]),
                          skipped=str(c["skipped"]), errors="0")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"verify.{r.name}",
                             name=f"{r.name}[{r.target}]")
        if r.status == "fail":
            failure = ET.SubElement(case, "failure", message=_xml(r.evidence), type="fail")
            failure.text = _xml(f"{r.evidence}\nhint: {r.hint}")
        elif r.status == "skipped":
            ET.SubElement(case, "skipped", message=_xml(r.evidence))
        else:
            out = ET.SubElement(case, "system-out")
            out.text = _xml(f"{r.status}: {r.evidence}" + (f"\nhint: {r.hint}" if r.hint else ""))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def table(results: Sequence[CheckResult]) -> Table:
    """check | target | status | evidence | hint."""
    t = Table("check", "target", "status", "evidence", "hint", box=box.SIMPLE)
    for r in results:
        t.add_row(r.name, r.target, Text(r.status, style=_STYLE[r.status]),
                  Text(r.evidence), Text(r.hint))
    return t


def summary_line(results: Sequence[CheckResult]) -> str:
    """``verify passed: 20 ok, 1 warn, 0 fail, 2 skipped``."""
    c = counts(results)
    word = "FAILED" if c["fail"] else "passed"
    return f"verify {word}: " + ", ".join(f"{n} {s}" for s, n in c.items())
