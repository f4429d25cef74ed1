"""Execute: run phase playbooks with ansible-runner; events drive progress and the run log.

Scope: ``run_playbook`` (the one executor), its result records, the event recorder and the
progress views. Nothing here knows about specs or plans; ``provisioner.provision`` decides
which playbooks run where.
"""

from provisioner.execute.events import EVENTS_FILE, EventRecorder, slowest_tasks
from provisioner.execute.model import Failure, HostResult, PhaseResult, TaskTiming
from provisioner.execute.progress import (
    CompactProgress,
    JsonProgress,
    LineProgress,
    LiveProgress,
    NullProgress,
    Progress,
    ProgressSink,
    SerializedProgress,
    progress_for,
)
from provisioner.execute.runner import PLAYBOOKS, ExecuteError, link_project, run_playbook

__all__ = [
    "EVENTS_FILE",
    "PLAYBOOKS",
    "CompactProgress",
    "EventRecorder",
    "ExecuteError",
    "Failure",
    "HostResult",
    "JsonProgress",
    "LineProgress",
    "LiveProgress",
    "NullProgress",
    "PhaseResult",
    "Progress",
    "ProgressSink",
    "SerializedProgress",
    "TaskTiming",
    "link_project",
    "progress_for",
    "run_playbook",
    "slowest_tasks",
]
