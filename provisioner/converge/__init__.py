"""Converge only what differs: the desired state of each host, one survey, the phases to run.

``desired`` says what the selected phases want on each host, ``survey`` asks every host at
once what it holds (``probe``, read-only), ``targets`` picks the hosts each phase runs on and
``diff`` shows the differences (``plan --diff``).
"""

from __future__ import annotations

import json

from provisioner.converge.desired import HostWant, WantFile, desired
from provisioner.converge.survey import (
    Difference,
    HostSurvey,
    added_only,
    compare,
    network_only,
    survey,
    targets,
)


def survey_json(surveys: dict[str, HostSurvey]) -> str:
    """The survey of a run (``survey.json``): per host, the differences and the time taken;
    paths and states only, never file contents."""
    return json.dumps({
        name: {
            "seconds": round(s.seconds, 3),
            "probe_seconds": (s.report or {}).get("seconds"),
            "error": None if s.error is None else str(s.error),
            "differences": [{"phases": list(d.phases), "kind": d.kind, "target": d.target,
                             "detail": d.detail} for d in s.differences],
        } for name, s in sorted(surveys.items())
    }, indent=1) + "\n"


__all__ = ["Difference", "HostSurvey", "HostWant", "WantFile", "added_only", "compare",
           "desired", "network_only", "survey", "survey_json", "targets"]
