"""Hosts that leave the spec are never dropped silently; worker removal is checked first.

Scope: the record of the cluster as last provisioned (``provisioner.membership``), the
refusal ``provision`` gives before touching anything when a recorded host left the spec, which
hosts ``node remove`` accepts and how it reaches a host the spec no longer names, and the two
playbook runs a removal makes (the day-2 runner is replaced by a test double here; the lab
test in tests/lab/test_cluster.py drains and resets real nodes).
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provisioner.cli import app
from provisioner.day2 import Day2Run
from provisioner.execute import PhaseResult
from provisioner.execute.progress import NullProgress
from provisioner.membership import (
    APPLIED_FILE,
    MembershipError,
    forget_hosts,
    left_spec,
    read_applied,
    removal,
    write_applied,
)
from provisioner.nodes import REMOVAL_DIR, remove_locked
from provisioner.plan import Plan, build_plan
from provisioner.provision import ProvisionError, provision
from provisioner.spec.load import load_file
from provisioner.state import cluster_dir

SPEC = """apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {{name: lab}}
spec:
  kubernetesVersion: "1.37.2"
  provider: {{type: nspawn}}
  controlPlane: {{count: {cps}}}
  workers: {{count: {workers}}}
"""


def _spec(tmp_path: Path, workers: int, name: str = "spec.yaml", cps: int = 3) -> Path:
    """The lab's hosts (lab-cp1.., lab-w1..) in a spec that names no local files."""
    path = tmp_path / name
    path.write_text(SPEC.format(cps=cps, workers=workers))
    return path


def _plan(path: Path) -> Plan:
    return build_plan(load_file(path, require_files=False))


def test_the_record_round_trips_privately(tmp_path: Path, state_root: Path) -> None:
    spec = _spec(tmp_path, 3)
    sdir = cluster_dir("lab")
    write_applied(sdir, _plan(spec), spec)
    assert stat.S_IMODE((sdir / APPLIED_FILE).stat().st_mode) == 0o600
    applied = read_applied(sdir)
    assert applied is not None
    assert applied.spec == spec.read_text() and applied.spec_dir == str(tmp_path)
    assert applied.version == "1.37.2"
    assert applied.hosts["lab-w3"] == ["kube_node"]
    assert set(applied.hosts["lab-cp1"]) == {"etcd", "kube_control_plane", "kube_node"}
    assert [h.name for h in applied.plan().hosts][-1] == "lab-w3"
    forget_hosts(sdir, ["lab-w3"])
    after = read_applied(sdir)
    assert after is not None and "lab-w3" not in after.hosts and after.spec == applied.spec


def test_no_record_and_a_broken_record_mean_nothing_left(tmp_path: Path,
                                                         state_root: Path) -> None:
    sdir = cluster_dir("lab")
    plan = _plan(_spec(tmp_path, 2))
    assert left_spec(plan, read_applied(sdir)) == []
    (sdir / APPLIED_FILE).write_text("[not a record")
    assert read_applied(sdir) is None


def test_provision_refuses_a_spec_that_dropped_a_host(tmp_path: Path,
                                                      state_root: Path) -> None:
    sdir = cluster_dir("lab")
    old = _spec(tmp_path, 3, "old.yaml")
    write_applied(sdir, _plan(old), old)
    new = _spec(tmp_path, 2)
    with pytest.raises(ProvisionError) as exc:
        provision(new, None, None, None, False, NullProgress())
    msg = str(exc.value)
    assert "lab-w3 (kube_node)" in msg and "nothing was changed" in msg
    assert "provisioner node remove FILE lab-w3" in msg and "--prune" in msg
    assert not (sdir / "runs").exists() and not (sdir / "rendered").exists()


def test_removing_control_plane_nodes_drains_from_one_that_stays(tmp_path: Path,
                                                                 state_root: Path) -> None:
    sdir = cluster_dir("lab")
    old = _spec(tmp_path, 2, "old.yaml")
    write_applied(sdir, _plan(old), old)
    # A shrunk control plane: 3 -> 1, the two that left reached as the record describes them.
    shrunk = removal(_plan(_spec(tmp_path, 2, cps=1)), read_applied(sdir),
                     ["lab-cp2", "lab-cp3"])
    assert shrunk.recorded and shrunk.kubectl_host == "lab-cp1"
    assert shrunk.control_plane == ("lab-cp2", "lab-cp3") == shrunk.etcd
    # The first control-plane node itself can go: another one drains it.
    first = removal(_plan(old), read_applied(sdir), ["lab-cp1"])
    assert first.kubectl_host == "lab-cp2" and first.etcd == ("lab-cp1",)
    workers = removal(_plan(old), read_applied(sdir), ["lab-w1"])
    assert workers.control_plane == () == workers.etcd


def _dedicated_etcd_spec(tmp_path: Path) -> Path:
    path = tmp_path / "dedicated.yaml"
    path.write_text(SPEC.format(cps=1, workers=1) + "  etcd: {placement: dedicated, count: 3}\n")
    return path


def test_a_dedicated_etcd_host_is_refused(tmp_path: Path) -> None:
    plan = _plan(_dedicated_etcd_spec(tmp_path))
    member = next(h.name for h in plan.etcd)
    assert member not in {h.name for h in plan.control_plane}
    with pytest.raises(MembershipError, match=f"{member} is a dedicated etcd host"):
        removal(plan, None, [member])


def test_removal_picks_the_plan_that_reaches_the_host(tmp_path: Path,
                                                      state_root: Path) -> None:
    sdir = cluster_dir("lab")
    old = _spec(tmp_path, 3, "old.yaml")
    write_applied(sdir, _plan(old), old)
    applied = read_applied(sdir)
    in_spec = removal(_plan(old), applied, ["lab-w2"])
    assert not in_spec.recorded and in_spec.kubectl_host == "lab-cp1"
    gone = removal(_plan(_spec(tmp_path, 2)), applied, ["lab-w3"])
    assert gone.recorded and gone.spec_dir == tmp_path
    assert "lab-w3" in {h.name for h in gone.plan.hosts}


@pytest.mark.parametrize(("names", "match"), [
    (["lab-cp1", "lab-cp2", "lab-cp3"], "no control-plane node would be left"),
    (["lab-w9"], "lab-w9: not a host of the spec or of the cluster as last provisioned; its "
                 "hosts are lab-cp1, lab-cp2, lab-cp3, lab-w1, lab-w2"),
    ([], "name at least one node"),
])
def test_removal_refuses(tmp_path: Path, names: list[str], match: str) -> None:
    with pytest.raises(MembershipError, match=match):
        removal(_plan(_spec(tmp_path, 2)), None, names)


def _run(plan: Plan, phase: str, ok: bool = True) -> Day2Run:
    result = PhaseResult(phase, f"{phase}.yml", "successful" if ok else "failed",
                         0 if ok else 2, 1.5, {})
    return Day2Run(plan, result, Path("/nonexistent"), "run")


def test_remove_drains_from_the_first_control_plane_then_resets_the_host(
        tmp_path: Path, state_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sdir = cluster_dir("lab")
    old = _spec(tmp_path, 3, "old.yaml")
    write_applied(sdir, _plan(old), old)
    chosen = removal(_plan(_spec(tmp_path, 2)), read_applied(sdir), ["lab-w3"])
    calls: list[dict[str, Any]] = []

    def run_rendered_double(plan: Plan, sdir_: Path, spec_dir: Path, out: Path,
                            playbook: str, name: str, hosts: list[str],
                            extravars: dict[str, Any], progress: Any, run_id: str | None = None,
                            scratch: bool = False) -> Day2Run:
        """Test double of the day-2 runner: records each playbook run."""
        calls.append({"playbook": playbook, "hosts": hosts, "vars": extravars, "out": out,
                      "scratch": scratch, "spec_dir": spec_dir})
        return _run(plan, name)

    monkeypatch.setattr("provisioner.nodes.run_rendered", run_rendered_double)
    result = remove_locked(chosen, sdir, tmp_path, 120, NullProgress())
    assert result.failed is None and result.seconds == 3.0
    drain, reset = calls
    assert drain["playbook"] == "node-remove.yml" and drain["hosts"] == ["lab-cp1"]
    assert drain["vars"] == {"node_remove_names": ["lab-w3"], "node_remove_timeout": 120,
                             "node_remove_control_plane": [], "node_remove_etcd": [],
                             "node_remove_forget": False, "kube_first_control_plane": "lab-cp1"}
    assert reset["playbook"] == "reset.yml" and reset["hosts"] == ["lab-w3"]
    assert reset["vars"]["reset_etcd_data"] is False
    assert "kubelet" in reset["vars"]["provisioner_artifacts"]
    assert all(c["scratch"] and c["out"] == sdir / REMOVAL_DIR for c in calls)
    applied = read_applied(sdir)
    assert applied is not None and "lab-w3" not in applied.hosts


def test_a_failed_drain_resets_nothing_and_keeps_the_record(
        tmp_path: Path, state_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sdir = cluster_dir("lab")
    spec = _spec(tmp_path, 2)
    write_applied(sdir, _plan(spec), spec)
    chosen = removal(_plan(spec), read_applied(sdir), ["lab-w2"])
    playbooks: list[str] = []

    def run_rendered_double(plan: Plan, *args: Any, **kwargs: Any) -> Day2Run:
        """Test double of the day-2 runner: the drain fails."""
        playbooks.append(args[3])
        return _run(plan, args[4], ok=False)

    monkeypatch.setattr("provisioner.nodes.run_rendered", run_rendered_double)
    result = remove_locked(chosen, sdir, tmp_path, 60, NullProgress())
    assert result.failed is not None and result.reset is None
    assert playbooks == ["node-remove.yml"]
    applied = read_applied(sdir)
    assert applied is not None and "lab-w2" in applied.hosts


def test_node_remove_cli_names_the_problem(tmp_path: Path, state_root: Path) -> None:
    result = CliRunner().invoke(app, ["node", "remove", str(_spec(tmp_path, 2, cps=1)),
                                      "lab-cp1", "--yes"])
    assert result.exit_code == 1
    assert "no control-plane node would be left" in result.output
    assert "Traceback" not in result.output


def test_plan_diff_names_joining_leaving_and_the_upgrade(tmp_path: Path,
                                                        state_root: Path) -> None:
    from provisioner.converge.survey import HostSurvey
    from provisioner.provision import cluster_changes

    sdir = cluster_dir("lab")
    old = _spec(tmp_path, 3, "old.yaml")
    write_applied(sdir, _plan(old), old)
    plan = _plan(_spec(tmp_path, 2))
    surveys = {h.name: HostSurvey(h.name, {"identity": "ca/ca: sha256:1\n",
                                           "versions": {"kubelet": "1.36.3"}})
               for h in plan.hosts if h.name != "lab-w2"}
    surveys["lab-w2"] = HostSurvey("lab-w2", {"identity": "", "versions": {}})
    lines, data = cluster_changes(plan, sdir, surveys)
    text = "\n".join(lines)
    assert data["joining"] == ["lab-w2"] and data["leaving"] == ["lab-w3"]
    assert "joining: lab-w2 (new hosts" in text
    assert "leaving: lab-w3 (no longer in the spec): provision refuses" in text
    assert data["upgrade"]["from"] == ["1.36.3"] and data["upgrade"]["to"] == "1.37.2"
    assert "upgrade 1.36.3 -> 1.37.2 (4 host(s) behind)" in text
    surveys["lab-w1"] = HostSurvey("lab-w1", {"identity": "x", "versions": {"kubelet": "1.35.4"}})
    lines, data = cluster_changes(plan, sdir, surveys)
    assert "skips a minor release" in data["upgrade"]["refused"]
    assert any(line.startswith("refused: ") for line in lines)



def test_plan_diff_says_how_etcd_members_join_and_leave(tmp_path: Path,
                                                        state_root: Path) -> None:
    from provisioner.converge.survey import HostSurvey
    from provisioner.provision import cluster_changes

    sdir = cluster_dir("lab")
    one = _spec(tmp_path, 1, "one.yaml", cps=1)
    write_applied(sdir, _plan(one), one)
    grown = _plan(_spec(tmp_path, 1, cps=3))
    surveys = {h.name: HostSurvey(h.name, {"identity": "" if h.name in ("lab-cp2", "lab-cp3")
                                           else "ca/ca: sha256:1\n", "versions": {}})
               for h in grown.hosts}
    text = "\n".join(cluster_changes(grown, sdir, surveys)[0])
    assert "etcd: lab-cp2, lab-cp3 join the running cluster one at a time" in text
    assert "learner" in text and "leave etcd" not in text
    write_applied(sdir, grown, _spec(tmp_path, 1, cps=3))
    shrunk = _plan(one)
    surveys = {h.name: HostSurvey(h.name, {"identity": "x", "versions": {}})
               for h in shrunk.hosts}
    lines, data = cluster_changes(shrunk, sdir, surveys)
    text = "\n".join(lines)
    assert data["leaving"] == ["lab-cp2", "lab-cp3"]
    assert "etcd: with --prune, lab-cp2, lab-cp3 stop serving" in text and "join" not in text


STATIC = """apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {{name: metal}}
spec:
  kubernetesVersion: "1.37.2"
  provider: {{type: static}}
  ssh: {{user: debian, privateKeyFile: id_ed25519}}
  hosts:
    - {{name: cp-a, address: 10.20.0.11}}
{workers}
  controlPlane: {{hosts: [cp-a]}}
  workers: {{hosts: [{names}]}}
"""


def _static(tmp_path: Path, name: str, workers: list[str]) -> Path:
    path = tmp_path / name
    path.write_text(STATIC.format(
        workers="\n".join(f"    - {{name: {w}, address: 10.20.0.{21 + i}}}"
                          for i, w in enumerate(workers)), names=", ".join(workers)))
    return path


def test_removal_refuses_names_from_two_different_specs(tmp_path: Path,
                                                        state_root: Path) -> None:
    sdir = cluster_dir("metal")
    old = _static(tmp_path, "old.yaml", ["node-a", "node-b"])
    write_applied(sdir, _plan(old), old)
    # node-c is new in the current spec (never provisioned), node-b only in the record.
    current = _plan(_static(tmp_path, "spec.yaml", ["node-a", "node-c"]))
    with pytest.raises(MembershipError, match="node-c and node-b are not in the same spec"):
        removal(current, read_applied(sdir), ["node-b", "node-c"])
    assert removal(current, read_applied(sdir), ["node-b"]).recorded is True
    assert removal(current, read_applied(sdir), ["node-c"]).recorded is False


def test_forget_drops_an_unreachable_host_whose_reset_failed(
        tmp_path: Path, state_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sdir = cluster_dir("lab")
    old = _spec(tmp_path, 3, "old.yaml")
    write_applied(sdir, _plan(old), old)

    def run_rendered_double(plan: Plan, *args: Any, **kwargs: Any) -> Day2Run:
        """Test double of the day-2 runner: the drain works, the reset finds no host."""
        return _run(plan, args[4], ok=args[3] == "node-remove.yml")

    monkeypatch.setattr("provisioner.nodes.run_rendered", run_rendered_double)
    chosen = removal(_plan(_spec(tmp_path, 2)), read_applied(sdir), ["lab-w3"])
    kept = remove_locked(chosen, sdir, tmp_path, 60, NullProgress())
    assert kept.failed is not None and not kept.forgotten
    applied = read_applied(sdir)
    assert applied is not None and "lab-w3" in applied.hosts
    gone = remove_locked(chosen, sdir, tmp_path, 60, NullProgress(), forget=True)
    assert gone.failed is None and gone.forgotten
    applied = read_applied(sdir)
    assert applied is not None and "lab-w3" not in applied.hosts


def test_an_upgrade_needs_every_host_and_the_whole_rollout() -> None:
    from provisioner.converge.survey import HostSurvey
    from provisioner.plan import select_phases
    from provisioner.provision import _upgrade_preconditions

    plan = build_plan(load_file(Path(__file__).resolve().parents[1] / "inventories" /
                                "nspawn-3cp-2w.yaml", require_files=False))
    every = {h.name: HostSurvey(h.name, {"versions": {"kubelet": "1.36.3"}})
             for h in plan.hosts}
    _upgrade_preconditions(plan, select_phases(plan, None, None), every)
    with pytest.raises(ProvisionError, match="needs the etcd, control-plane phase"):
        _upgrade_preconditions(plan, select_phases(plan, ["node"], None), every)
    every["lab-w2"] = HostSurvey("lab-w2", None, error="unreachable")
    with pytest.raises(ProvisionError, match="lab-w2 did not answer the survey"):
        _upgrade_preconditions(plan, select_phases(plan, None, None), every)


def test_a_host_whose_address_would_move_is_refused_before_anything(
        tmp_path: Path, state_root: Path) -> None:
    """Generated machines are numbered control plane first: growing the control plane of a
    cluster made without controlPlaneSlots would move its workers, which is refused."""
    sdir = cluster_dir("lab")
    one = _spec(tmp_path, 1, "one.yaml", cps=1)
    write_applied(sdir, _plan(one), one)
    with pytest.raises(ProvisionError) as exc:
        provision(_spec(tmp_path, 1, cps=3), None, None, None, False, NullProgress())
    msg = str(exc.value)
    assert "lab-w1: 192.168.56.12 -> 192.168.56.14" in msg and "nothing was changed" in msg
    assert "controlPlaneSlots" in msg
    assert not (sdir / "runs").exists()


def test_control_plane_slots_keep_the_other_machines_in_place(tmp_path: Path) -> None:
    def places(cps: int) -> dict[str, tuple[str, str]]:
        path = tmp_path / f"slots-{cps}.yaml"
        path.write_text(SPEC.format(cps=cps, workers=2).replace(
            "provider: {type: nspawn}", "provider: {type: nspawn, controlPlaneSlots: 3}"))
        return {h.name: (str(h.address), str(h.pod_cidr)) for h in _plan(path).hosts}

    # Addresses and the bridge CNI's pod subnets both stay where they were.
    one, three = places(1), places(3)
    assert one == {"lab-cp1": ("192.168.56.11", "10.244.0.0/24"),
                   "lab-w1": ("192.168.56.14", "10.244.3.0/24"),
                   "lab-w2": ("192.168.56.15", "10.244.4.0/24")}
    assert three == {**one, "lab-cp2": ("192.168.56.12", "10.244.1.0/24"),
                     "lab-cp3": ("192.168.56.13", "10.244.2.0/24")}


def test_an_old_record_without_addresses_is_checked_through_its_spec(
        tmp_path: Path, state_root: Path) -> None:
    import json

    sdir = cluster_dir("lab")
    one = _spec(tmp_path, 1, "one.yaml", cps=1)
    write_applied(sdir, _plan(one), one)
    record = json.loads((sdir / APPLIED_FILE).read_text())
    del record["addresses"]  # as written before addresses were kept
    (sdir / APPLIED_FILE).write_text(json.dumps(record))
    with pytest.raises(ProvisionError) as exc:
        provision(_spec(tmp_path, 1, cps=3), None, None, None, False, NullProgress())
    assert "lab-w1: 192.168.56.12 -> 192.168.56.14" in str(exc.value)


def test_pod_subnets_follow_node_order_not_the_etcd_hosts(tmp_path: Path) -> None:
    """Dedicated etcd hosts take addresses but no pod subnet: the nodes' subnets are their
    order among the nodes, as before kept slots existed."""
    plan = _plan(_dedicated_etcd_spec(tmp_path))
    assert {h.name: str(h.pod_cidr) for h in plan.nodes} == {
        "lab-cp1": "10.244.0.0/24", "lab-w1": "10.244.1.0/24"}
