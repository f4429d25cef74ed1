"""The upgrade policy: one minor at a time, never down, refused before any host is touched.

Scope: ``provisioner.upgrade.check`` over survey reports of the lab spec's hosts (what each
host's ``kube-apiserver``/``kubelet --version`` said), the steps ``plan --diff`` shows, the
probe's version reading on a real executable, and that the programs it reads are where the
packaged manifest installs them. The rollout itself is proven in the lab.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from provisioner.converge.desired import VERSION_PROGRAMS
from provisioner.converge.probe import _versions
from provisioner.converge.survey import HostSurvey
from provisioner.plan import Plan, build_plan
from provisioner.spec.load import parse
from provisioner.upgrade import UpgradeRefused, check, parse_version

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "inventories" / "nspawn-3cp-2w.yaml"
CPS = ["lab-cp1", "lab-cp2", "lab-cp3"]
WORKERS = ["lab-w1", "lab-w2"]


def _plan(version: str) -> Plan:
    text = LAB.read_text().replace('kubernetesVersion: "1.37.2"',
                                   f'kubernetesVersion: "{version}"')
    return build_plan(parse(text, str(LAB)))


def _surveys(versions: dict[str, str]) -> dict[str, HostSurvey]:
    """Reports as the probe writes them: control-plane hosts run both programs."""
    out = {}
    for host, v in versions.items():
        progs = {"kubelet": v, **({"kube-apiserver": v} if host in CPS else {})}
        out[host] = HostSurvey(host, {"versions": progs})
    return out


def _all(version: str) -> dict[str, str]:
    return dict.fromkeys(CPS + WORKERS, version)


def test_parse_version() -> None:
    assert parse_version("1.37.2") == (1, 37, 2)
    assert parse_version("v1.36.3-rc.0+abc") == (1, 36, 3)
    assert parse_version("unknown") is None


def test_a_new_cluster_or_the_same_release_is_no_upgrade() -> None:
    plan = _plan("1.37.2")
    assert check(plan, {h: HostSurvey(h, {"versions": {}}) for h in CPS + WORKERS}) is None
    assert check(plan, {h: HostSurvey(h, None, error="unreachable") for h in CPS}) is None
    assert check(plan, _surveys(_all("1.37.2"))) is None


def test_one_minor_up_is_an_upgrade_with_its_steps() -> None:
    plan = _plan("1.37.2")
    up = check(plan, _surveys(_all("1.36.3")))
    assert up is not None
    assert up.sources == ["1.36.3"]
    assert set(up.behind) == set(CPS + WORKERS)
    assert up.behind["lab-cp1"] == {"kube-apiserver": "1.36.3", "kubelet": "1.36.3"}
    text = "\n".join(up.steps(plan))
    assert "upgrade 1.36.3 -> 1.37.2 (5 host(s) behind)" in text
    assert "etcd 3.6.8 -> 3.7.0, one member at a time" in text  # the pins of 1.36 and 1.37
    assert "lab-cp1, lab-cp2, lab-cp3" in text
    assert "etcd snapshot" in text


def test_a_half_done_upgrade_resumes() -> None:
    versions = _all("1.36.3") | {"lab-cp1": "1.37.2", "lab-cp2": "1.37.2"}
    up = check(_plan("1.37.2"), _surveys(versions))
    assert up is not None and set(up.behind) == {"lab-cp3", *WORKERS}


def test_skipping_a_minor_is_refused_with_the_path() -> None:
    with pytest.raises(UpgradeRefused) as exc:
        check(_plan("1.37.2"), _surveys(_all("1.35.4")))
    msg = str(exc.value)
    assert "skips a minor release" in msg and "1.35 -> 1.36, never 1.35 -> 1.37" in msg
    assert "lab-cp1 runs kube-apiserver 1.35.4" in msg and "lab-w2 runs kubelet 1.35.4" in msg
    assert "upgrade through 1.36.3 -> 1.37.2" in msg
    assert "set spec.kubernetesVersion to 1.36.3" in msg
    assert "nothing was changed" in msg


def test_one_host_left_behind_two_minors_is_refused() -> None:
    versions = _all("1.36.3") | {"lab-w2": "1.35.4"}
    with pytest.raises(UpgradeRefused, match=r"lab-w2 runs kubelet 1\.35\.4"):
        check(_plan("1.37.2"), _surveys(versions))


@pytest.mark.parametrize(("installed", "wanted"), [("1.37.2", "1.36.3"), ("1.36.3", "1.35.4")])
def test_going_down_is_refused(installed: str, wanted: str) -> None:
    with pytest.raises(UpgradeRefused) as exc:
        check(_plan(wanted), _surveys(_all(installed)))
    msg = str(exc.value)
    assert f"{wanted} is older than what the cluster runs" in msg
    assert f"lab-cp1 runs kube-apiserver {installed}" in msg
    assert f"set spec.kubernetesVersion to {installed}" in msg


def test_a_patch_downgrade_is_refused() -> None:
    surveys = _surveys(_all("1.37.2") | {"lab-cp1": "1.37.3"})
    with pytest.raises(UpgradeRefused, match=r"lab-cp1 runs kube-apiserver 1\.37\.3"):
        check(_plan("1.37.2"), surveys)


def test_probe_reads_and_caches_program_versions(tmp_path: Path) -> None:
    program = tmp_path / "kubelet"
    program.write_text("#!/bin/sh\necho 'Kubernetes v1.36.3'\n")
    program.chmod(0o755)
    settled = time.time_ns() + 10 * 10**9
    used: dict[str, object] = {}
    found = _versions({"kubelet": str(program), "kube-apiserver": str(tmp_path / "none")},
                      {}, used, settled)
    assert found == {"kubelet": "1.36.3"}
    entry = used[f"version {program}"]
    assert isinstance(entry, list) and entry[4] == "1.36.3"
    # A cached entry for the same file is used without starting the program again.
    program.write_text("#!/bin/sh\nexit 1\n")
    st = os.stat(program)
    key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    assert _versions({"kubelet": str(program)}, {f"version {program}": [*key, "1.36.3"]},
                     {}, settled) == {"kubelet": "1.36.3"}
    # The file changed (new stat): it is asked again, and a failing program reports nothing.
    assert _versions({"kubelet": str(program)}, {f"version {program}": [0, 0, 0, 0, "1.0.0"]},
                     {}, settled) == {}


def test_the_probed_programs_are_where_the_manifest_installs_them() -> None:
    data = yaml.safe_load((ROOT / "provisioner" / "versions" / "artifacts.yaml").read_text())
    for name, path in VERSION_PROGRAMS:
        dests = [i["dest"] for i in data["artifacts"][name]["install"]]
        assert path in dests, (name, dests)


def test_an_upgrade_drains_the_nodes_behind_in_batches() -> None:
    plan = _plan("1.37.2")
    versions = _all("1.36.3") | {"lab-cp1": "1.37.2"}
    up = check(plan, _surveys(versions))
    assert up is not None
    assert up.drained(plan) == ["lab-cp2", "lab-cp3", "lab-w1", "lab-w2"]
    assert up.node_vars(plan, 2, 120) == {
        "kubelet_drain_hosts": ["lab-cp2", "lab-cp3", "lab-w1", "lab-w2"], "node_batch": 2,
        "kubelet_drain_timeout": 120}
    assert "4. nodes, 2 at a time: cordon, drain" in "\n".join(up.steps(plan, 2))


def test_a_one_node_cluster_upgrades_without_a_drain(tmp_path: Path) -> None:
    text = LAB.read_text()
    text = text.replace("controlPlane:\n    count: 3", "controlPlane:\n    count: 1")
    text = text.replace("workers:\n    count: 2", "workers:\n    count: 0")
    plan = build_plan(parse(text, str(LAB)))
    up = check(plan, _surveys({"lab-cp1": "1.36.3"}))
    assert up is not None and up.drained(plan) == []
    assert "running pods stay where they are" in "\n".join(up.steps(plan))



def test_the_release_is_checked_before_artifacts_only_when_it_changed(
        tmp_path: Path, state_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from provisioner.membership import read_applied, write_applied
    from provisioner.provision import ProvisionError, _release_first
    from provisioner.state import cluster_dir

    asked: list[list[str]] = []

    def survey_double(wants: dict[str, object], plan: Plan, runner: object
                      ) -> dict[str, HostSurvey]:
        """Test double of the SSH survey: every host reports 1.35.4."""
        asked.append(sorted(wants))
        return _surveys(_all("1.35.4"))

    monkeypatch.setattr("provisioner.converge.survey", survey_double)
    plan = _plan("1.37.2")
    sdir = cluster_dir("lab")
    with pytest.raises(ProvisionError, match="skips a minor release"):
        _release_first(plan, read_applied(sdir), None)  # type: ignore[arg-type]  # no record yet
    assert asked == [sorted(CPS + WORKERS)]
    spec = tmp_path / "spec.yaml"
    spec.write_text(LAB.read_text())
    write_applied(sdir, plan, spec)
    _release_first(plan, read_applied(sdir), None)  # type: ignore[arg-type]  # the recorded release
    assert len(asked) == 1


def test_a_probe_for_no_files_keeps_the_hash_cache(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from provisioner.converge import probe

    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({"/usr/local/bin/kubelet": [1, 2, 3, 4, "abc"]}))
    request = {"cache": str(cache), "versions": {}}
    script = Path(probe.__file__).read_text() + f"\n_main({json.dumps(request)!r})\n"
    subprocess.run([sys.executable, "-"], input=script.encode(), check=True,
                   capture_output=True)
    assert json.loads(cache.read_text()) == {"/usr/local/bin/kubelet": [1, 2, 3, 4, "abc"]}
