"""The converge fast path: desired state per host, the host probe, differences, phase targets.

The probe runs for real here, as a subprocess fed the same standard input the hosts get, on
files in a temporary directory. The comparisons are fed reports built from the desired state
(what a converged host reports), then changed one thing at a time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from provisioner.components.cni import ROUTES
from provisioner.converge import (
    HostWant,
    WantFile,
    added_only,
    compare,
    desired,
    network_only,
    targets,
)
from provisioner.converge.survey import HostSurvey, probe_command
from provisioner.execute.runner import PLAYBOOKS
from provisioner.plan import build_plan
from provisioner.render.material import prepare
from provisioner.render.tree import render
from provisioner.spec import parse

SPEC = """
apiVersion: provisioner.dev/v1alpha1
kind: Cluster
metadata: {name: cv}
spec:
  provider: {type: nspawn}
  controlPlane: {count: 3}
  workers: {count: 2}
"""
EVERY_PHASE = ["preflight", "os", "runtime", "etcd", "lb", "control-plane", "node", "addons"]


def _probe(want: HostWant) -> dict[str, Any]:
    """Run the probe as the hosts do: ``python3 -`` with the script and request on stdin."""
    command, stdin = probe_command(want)
    assert command == "python3 -"
    out = subprocess.run([sys.executable, "-"], input=stdin, capture_output=True, check=True)
    report: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return report


def _with(want: HostWant, **overrides: Any) -> HostWant:
    """``want`` whose probe request has host paths moved into the test's directory."""
    request = {**want.request(), **overrides}
    clone = copy.copy(want)
    clone.request = lambda: request  # type: ignore[method-assign]
    return clone


def test_probe_reports_digests_modes_dirs_sysctls_and_identity(tmp_path: Path) -> None:
    same = tmp_path / "same.conf"
    same.write_text("a\n")
    os.chmod(same, 0o640)
    missing = tmp_path / "missing.conf"
    live = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    sysctl = tmp_path / "90.conf"
    sysctl.write_text(f"# comment\nnet.ipv4.ip_forward = {live}\nnet.not.a.key = 1\n")
    pending = tmp_path / "pending"
    pending.mkdir()
    (pending / "kubelet").touch()
    ident = tmp_path / "identity"
    ident.write_text("cluster: x\n")
    want = HostWant("h", files=[WantFile(str(same), "x", 0o640, ("os",), "file"),
                                WantFile(str(missing), "x", 0o644, ("os",), "file")],
                    dirs=[(str(tmp_path), 0o755, "os"), (str(tmp_path / "nodir"), 0o700, "os")],
                    sysctl_file=str(sysctl))
    report = _probe(_with(want, pending_dir=str(pending), identity=str(ident), cache=""))
    assert report["files"][str(same)] == [hashlib.sha256(b"a\n").hexdigest(), 0o640,
                                          os.getuid(), os.getgid()]
    assert report["files"][str(missing)] is None
    assert report["dirs"][str(tmp_path / "nodir")] is None
    assert report["dirs"][str(tmp_path)][0] == tmp_path.stat().st_mode & 0o7777
    assert report["sysctl"] == ["net.not.a.key"]
    assert report["pending"] == ["kubelet"]
    assert report["identity"] == "cluster: x\n"


def test_probe_cache_never_hides_a_changed_binary(tmp_path: Path) -> None:
    """A big file's digest is reused only while size, mtime, ctime and inode are unchanged:
    rewriting it with the same size and its old mtime still moves its ctime."""
    big = tmp_path / "kubelet"
    first = b"A" * (2 << 20)
    big.write_bytes(first)
    cache = tmp_path / "probe-cache.json"
    want = _with(HostWant("h", files=[WantFile(str(big), "x", 0o755, ("node",), "binary")]),
                 pending_dir="", identity="", cache=str(cache))
    time.sleep(2.2)  # entries younger than two seconds are not cached
    assert _probe(want)["files"][str(big)][0] == hashlib.sha256(first).hexdigest()
    entry = json.loads(cache.read_text())[str(big)]
    assert entry[4] == hashlib.sha256(first).hexdigest()
    assert (cache.stat().st_mode & 0o777) == 0o600
    st = big.stat()
    second = b"B" * (2 << 20)
    with big.open("r+b") as handle:  # same inode, same size
        handle.write(second)
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime back
    assert _probe(want)["files"][str(big)][0] == hashlib.sha256(second).hexdigest()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    tmp = tmp_path_factory.mktemp("cv")
    plan = build_plan(parse(SPEC))
    material, _ = prepare(plan, tmp / "state", tmp)
    return plan, render(plan, material, None)


def _converged(want: HostWant) -> dict[str, Any]:
    """The report of a host that holds exactly ``want``."""
    return {
        "files": {f.path: [f.sha256, f.mode, 0, 0] for f in want.files},
        "dirs": {p: [m, 0, 0] for p, m, _ in want.dirs},
        "units": {u: {"load": "loaded", "active": "active", "enabled": "enabled"}
                  for u in want.units},
        "pending": [], "sysctl": [], "modules": [], "debs": [], "addons": [],
        "cni_loaded": True, "identity": "",
    }


def test_a_converged_cluster_runs_no_phase(rendered: tuple[Any, Any]) -> None:
    plan, tree = rendered
    wants = desired(plan, tree, EVERY_PHASE, {}, Path("/nonexistent"), PLAYBOOKS)
    assert set(wants) == {h.name for h in plan.hosts}
    cp1 = wants["cv-cp1"]
    assert {"kube-apiserver", "etcd", "kubelet", "containerd", "haproxy"} <= set(cp1.units)
    assert cp1.addons is not None and cp1.addons["files"]
    assert wants["cv-cp2"].addons is None
    surveys = {h: HostSurvey(h, _converged(w), compare(w, _converged(w)))
               for h, w in wants.items()}
    assert all(not s.differences for s in surveys.values())
    assert targets(plan, surveys) == {}


def test_differences_name_their_phase_and_hosts(rendered: tuple[Any, Any]) -> None:
    plan, tree = rendered
    wants = desired(plan, tree, EVERY_PHASE, {}, Path("/nonexistent"), PLAYBOOKS)
    reports = {h: _converged(w) for h, w in wants.items()}
    # A hand-edited kubelet config on one worker, a stopped kube-proxy on the other.
    reports["cv-w1"]["files"]["/var/lib/kubelet/config.yaml"][0] = "0" * 64
    reports["cv-w2"]["units"]["kube-proxy"]["active"] = "inactive"
    surveys = {h: HostSurvey(h, r, compare(wants[h], r)) for h, r in reports.items()}
    assert [str(d) for d in surveys["cv-w1"].differences] == [
        "file /var/lib/kubelet/config.yaml: content differs"]
    assert [str(d) for d in surveys["cv-w2"].differences] == [
        "unit kube-proxy: inactive, want active"]
    assert targets(plan, surveys) == {"node": ["cv-w1", "cv-w2"],
                                      "preflight": ["cv-w1", "cv-w2"]}
    # An etcd file on one member: etcd is cluster-wide, so every member runs it.
    reports = {h: _converged(w) for h, w in wants.items()}
    etcd_conf = next(f.path for f in wants["cv-cp2"].files if f.path.endswith("etcd.service"))
    reports["cv-cp2"]["files"][etcd_conf][1] = 0o666
    surveys = {h: HostSurvey(h, r, compare(wants[h], r)) for h, r in reports.items()}
    assert [str(d) for d in surveys["cv-cp2"].differences] == [
        f"file {etcd_conf}: mode 0666, want 0600"]
    assert targets(plan, surveys)["etcd"] == ["cv-cp1", "cv-cp2", "cv-cp3"]


def test_a_routes_table_change_alone_is_network_only(rendered: tuple[Any, Any]) -> None:
    """A node joining changes every other node's pod routes table and nothing else of the
    node phase: those hosts are network-only (their kubelet and kube-proxy are left alone);
    a host that also differs elsewhere in the node phase, or was not surveyed, is not."""
    plan, tree = rendered
    wants = desired(plan, tree, EVERY_PHASE, {}, Path("/nonexistent"), PLAYBOOKS)
    reports = {h: _converged(w) for h, w in wants.items()}
    for h in ("cv-cp1", "cv-w1", "cv-w2"):
        reports[h]["files"][ROUTES][0] = "0" * 64
    reports["cv-w2"]["units"]["kube-proxy"]["active"] = "inactive"
    reports["cv-cp3"]["files"][ROUTES][0] = "0" * 64
    runtime_conf = next(f.path for f in wants["cv-cp3"].files
                        if f.path.endswith("containerd/config.toml"))
    reports["cv-cp3"]["files"][runtime_conf][1] = 0o666
    surveys = {h: HostSurvey(h, r, compare(wants[h], r)) for h, r in reports.items()}
    surveys["cv-cp2"] = HostSurvey("cv-cp2", None, error="unreachable")
    assert network_only(surveys) == ["cv-cp1", "cv-cp3", "cv-w1"]
    assert "runtime" in {p for d in surveys["cv-cp3"].differences for p in d.phases}
    chosen = targets(plan, surveys)
    assert set(chosen["node"]) >= {"cv-cp1", "cv-w1", "cv-w2", "cv-cp3"}
    # Hosts whose only difference is the routes table are cluster members already: no
    # preflight round there; the hosts that differ in more are checked.
    assert chosen["preflight"] == ["cv-cp3", "cv-w2"]


def test_a_run_that_only_adds_nodes_is_told_apart(rendered: tuple[Any, Any]) -> None:
    """``added_only``: the nodes without a cluster identity, when every other host differs
    in nothing or in its routes table alone (verify then probes from them only)."""
    plan, tree = rendered
    wants = desired(plan, tree, EVERY_PHASE, {}, Path("/nonexistent"), PLAYBOOKS)

    def surveys_of(reports: dict[str, Any]) -> dict[str, HostSurvey]:
        return {h: HostSurvey(h, r, compare(wants[h], r)) for h, r in reports.items()}

    reports = {h: {**_converged(w), "identity": "ca: sha256:1\n"} for h, w in wants.items()}
    assert added_only(plan, surveys_of(reports)) is None  # nothing added
    reports["cv-w2"] = {**_converged(wants["cv-w2"]), "identity": "", "units": {}}
    for h in ("cv-cp1", "cv-w1"):
        reports[h]["files"][ROUTES][0] = "0" * 64
    surveys = surveys_of(reports)
    assert surveys["cv-w2"].differences
    assert added_only(plan, surveys) == ["cv-w2"]
    # Anything else differing on a member, or a member not surveyed: the whole probe.
    reports["cv-w1"]["units"]["kube-proxy"]["active"] = "inactive"
    assert added_only(plan, surveys_of(reports)) is None
    reports["cv-w1"]["units"]["kube-proxy"]["active"] = "active"
    surveys = surveys_of(reports)
    surveys["cv-cp2"] = HostSurvey("cv-cp2", None, error="unreachable")
    assert added_only(plan, surveys) is None
    # A new cluster (no node holds an identity yet): the whole probe, not one per node.
    fresh = {h: {**r, "identity": ""} for h, r in reports.items()}
    assert added_only(plan, surveys_of(fresh)) is None


def _node_plays(tmp_path: Path, network_only_hosts: list[str] | None,
                limit: str | None = None) -> list[list[str]]:
    """The hosts of each play of node.yml, as ansible-playbook --list-hosts selects them
    (within ``--limit``, as provision passes it)."""
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[kube_node]\nn1\nn2\nn3\n")
    extra = [] if network_only_hosts is None else [
        "-e", json.dumps({"node_network_only": network_only_hosts})]
    if limit is not None:
        extra += ["--limit", limit]
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), str(PLAYBOOKS / "node.yml"),
         "-i", str(inventory), "--list-hosts", *extra],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plays: list[list[str]] = []
    for line in proc.stdout.splitlines():
        if line.strip().startswith("play #"):
            plays.append([])
        elif plays and line.startswith("      ") and line.strip():
            plays[-1].append(line.strip())
    return [sorted(p) for p in plays]


def test_network_only_nodes_get_a_play_of_their_own(tmp_path: Path) -> None:
    """The kubelet and kube-proxy play leaves the network-only nodes out (a joining node is
    not paced by every other node); the routes play has them, and no host when none."""
    assert _node_plays(tmp_path, ["n2", "n3"]) == [["n1"], ["n2", "n3"]]
    assert _node_plays(tmp_path, None) == [["n1", "n2", "n3"], []]
    assert _node_plays(tmp_path, []) == [["n1", "n2", "n3"], []]
    # provision runs the two halves as phases of their own (node, node/pod-routes), each
    # limited to its hosts: each run then has one play with hosts.
    assert _node_plays(tmp_path, ["n2", "n3"], "n1") == [["n1"], []]
    assert _node_plays(tmp_path, ["n2", "n3"], "n2,n3") == [[], ["n2", "n3"]]


def test_every_kind_of_drift_is_a_difference(rendered: tuple[Any, Any]) -> None:
    plan, tree = rendered
    want = desired(plan, tree, EVERY_PHASE, {}, Path("/nonexistent"), PLAYBOOKS)["cv-cp1"]
    base = _converged(want)
    cases: list[tuple[str, Any]] = [
        ("files", lambda r: r["files"].pop("/etc/kubernetes/pki/ca.crt")),
        ("dirs", lambda r: r["dirs"].__setitem__("/var/lib/etcd", [0o755, 0, 0])),
        ("units", lambda r: r["units"]["etcd"].__setitem__("enabled", "disabled")),
        ("units", lambda r: r["units"]["kubelet"].__setitem__("load", "not-found")),
        ("pending", lambda r: r.__setitem__("pending", ["kube-apiserver"])),
        ("sysctl", lambda r: r.__setitem__("sysctl", ["net.ipv4.ip_forward"])),
        ("modules", lambda r: r.__setitem__("modules", ["br_netfilter"])),
        ("addons", lambda r: r.__setitem__("addons", ["20-coredns.yaml"])),
        ("cni", lambda r: r.__setitem__("cni_loaded", False)),
        ("owner", lambda r: r["files"]["/etc/kubernetes/admin.conf"].__setitem__(2, 1000)),
    ]
    for label, change in cases:
        report = copy.deepcopy(base)
        change(report)
        assert len(compare(want, report)) == 1, label


def test_a_turned_off_backup_is_a_difference_until_its_files_are_gone(
        tmp_path: Path) -> None:
    """spec.etcd.backup on: its timer is a unit the survey wants enabled and active. Off:
    its timer, unit and script must be absent, so a cluster that had it runs the etcd phase
    (whose role removes them) instead of reporting itself converged."""
    on = build_plan(parse(SPEC.replace("  workers: {count: 2}\n",
                                       "  workers: {count: 2}\n  etcd: {backup: {}}\n")))
    material, _ = prepare(on, tmp_path / "state", tmp_path)
    want_on = desired(on, render(on, material, None), ["etcd"], {}, Path("/nonexistent"),
                      PLAYBOOKS)["cv-cp1"]
    assert want_on.units["etcd-backup.timer"] == "etcd"
    assert want_on.absent == []
    stopped = _converged(want_on)
    stopped["units"]["etcd-backup.timer"]["active"] = "inactive"
    assert [str(d) for d in compare(want_on, stopped)] == [
        "unit etcd-backup.timer: inactive, want active"]

    off = build_plan(parse(SPEC))
    material, _ = prepare(off, tmp_path / "state", tmp_path)
    wants = desired(off, render(off, material, None), ["etcd"], {}, Path("/nonexistent"),
                    PLAYBOOKS)
    want = wants["cv-cp2"]
    assert "etcd-backup.timer" not in want.units
    gone = ["/etc/systemd/system/etcd-backup.timer", "/etc/systemd/system/etcd-backup.service",
            "/usr/local/sbin/provisioner-etcd-backup"]
    assert sorted(p for p, _ in want.absent) == sorted(gone)
    assert want.request()["absent"] == [p for p, _ in want.absent]
    left = {**_converged(want), "present": ["/etc/systemd/system/etcd-backup.timer"]}
    assert [str(d) for d in compare(want, left)] == [
        "file /etc/systemd/system/etcd-backup.timer: present, want absent"]
    reports = {h: _converged(w) for h, w in wants.items()}
    reports["cv-cp2"] = left
    surveys = {h: HostSurvey(h, r, compare(wants[h], r)) for h, r in reports.items()}
    assert targets(off, surveys) == {"etcd": ["cv-cp1", "cv-cp2", "cv-cp3"],
                                     "preflight": ["cv-cp1", "cv-cp2", "cv-cp3"]}


def test_probe_reports_which_paths_that_must_be_absent_exist(tmp_path: Path) -> None:
    there = tmp_path / "etcd-backup.timer"
    there.write_text("[Timer]\n")
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "nowhere")
    want = HostWant("h", absent=[(str(there), "etcd"), (str(tmp_path / "gone"), "etcd"),
                                 (str(dangling), "etcd")])
    report = _probe(_with(want, pending_dir="", identity="", cache=""))
    assert report["present"] == [str(there), str(dangling)]


def test_an_unknown_desired_state_runs_its_phases(
        rendered: tuple[Any, Any]) -> None:
    plan, tree = rendered
    # A tar artifact the controller has not unpacked yet: its phases must run.
    artifacts = {"containerd": {"kind": "tar", "sha256": "ab" * 32, "path": "/x",
                                "install": [{"member": "bin/containerd",
                                             "dest": "/usr/local/bin/containerd"}]}}
    wants = desired(plan, tree, EVERY_PHASE, artifacts, Path("/nonexistent"), PLAYBOOKS)
    diffs = compare(wants["cv-w1"], _converged(wants["cv-w1"]))
    assert [(d.phases, d.kind) for d in diffs] == [(("runtime",), "unknown")]
    surveys = {h: HostSurvey(h, None, compare(w, _converged(w))) for h, w in wants.items()}
    assert targets(plan, surveys)["runtime"] == [h.name for h in plan.hosts]


class UnreachableRunnerDouble:
    """Test double of the SSH runner: every host refuses the connection."""

    def run(self, host: Any, command: str, timeout: float, root: bool,
            stdin: bytes | None = None) -> Any:
        from provisioner.verify.ssh import SshUnavailable
        raise SshUnavailable(host.name, "refused", "connection refused", "start sshd")

    def close(self) -> None:
        pass


def test_a_host_that_cannot_be_surveyed_differs_in_all_its_phases(
        rendered: tuple[Any, Any]) -> None:
    from provisioner.converge import survey

    plan, tree = rendered
    wants = desired(plan, tree, EVERY_PHASE, {}, Path("/nonexistent"), PLAYBOOKS)
    found = survey({"cv-w2": wants["cv-w2"]}, plan, UnreachableRunnerDouble())
    assert found["cv-w2"].error is not None
    assert {p for d in found["cv-w2"].differences for p in d.phases} == set(
        wants["cv-w2"].phases)
    assert set(targets(plan, found)) >= {"os", "runtime", "node", "preflight"}


def test_plan_diff_shows_a_unified_diff_hides_secrets_and_names_restarts(
        rendered: tuple[Any, Any]) -> None:
    from provisioner.converge.diff import diff_json, diff_text

    plan, tree = rendered
    wants = desired(plan, tree, EVERY_PHASE, {}, Path("/nonexistent"), PLAYBOOKS)
    reports = {h: _converged(w) for h, w in wants.items()}
    conf = "/var/lib/kube-proxy/config.yaml"
    key = "/var/lib/kubelet/pki/kubelet-client.key"
    reports["cv-w1"]["files"][conf][0] = "0" * 64
    reports["cv-w1"]["files"][key][0] = "1" * 64
    reports["cv-w2"]["units"]["kubelet"]["active"] = "failed"
    surveys = {h: HostSurvey(h, r, compare(wants[h], r)) for h, r in reports.items()}
    want_conf = next(f for f in wants["cv-w1"].files if f.path == conf)
    assert want_conf.content is not None
    host_text = want_conf.content.decode() + "# edited by hand\n"
    asked: list[tuple[str, str]] = []

    def fetch(host: str, path: str) -> str | None:
        asked.append((host, path))
        return host_text

    text = diff_text(wants, surveys, fetch)
    assert asked == [("cv-w1", conf)]  # never the key
    assert f"~ file {conf}: content differs [node]" in text
    assert "-# edited by hand" in text
    assert f"~ file {key}: content differs [node]" in text
    assert "(secret: changed, not shown)" in text
    key_text = next(f for f in tree.hosts["cv-w1"] if f.path == key).content.decode()
    assert key_text.splitlines()[1] not in text
    assert "restarts: kube-proxy, kubelet" in text
    assert "~ unit kubelet: failed, want active [node]" in text
    assert "cv-cp1: no changes" in text and text.endswith("2 of 5 host(s) would change\n")
    data = json.loads(diff_json(wants, surveys))
    assert data["changed_hosts"] == 2 and data["hosts"]["cv-w2"]["restarts"] == ["kubelet"]


def test_a_package_at_a_later_version_than_the_bundle_counts_as_converged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The role never downgrades (dpkg --refuse-downgrade, and it skips packages at the
    # bundled version or later), so the survey must not flag a Debian security update.
    from provisioner.converge import probe

    real = probe._run

    def run(argv: list[str], timeout: float = 30) -> tuple[int, str, str]:
        if argv[0] == "dpkg-query":
            return 0, ("haproxy install ok installed 2.6.12-1+deb12u5\n"
                       "liblua5.3-0 install ok installed 5.3.6-1\n"
                       "libold deinstall ok config-files 1.0\n"), ""
        return real(argv, timeout)

    monkeypatch.setattr(probe, "_run", run)
    wanted = [("haproxy", "2.6.12-1+deb12u4"), ("liblua5.3-0", "5.3.6-2"), ("libold", "1.0"),
              ("libnew", "1.0")]
    assert probe._debs(wanted) == ["liblua5.3-0", "libold", "libnew"]


def test_plan_diff_says_haproxy_reloads_for_its_configuration() -> None:
    from provisioner.converge.desired import HostWant, WantFile
    from provisioner.converge.diff import restarts_of
    from provisioner.converge.survey import Difference

    want = HostWant("lab-w1", files=[
        WantFile("/etc/haproxy/haproxy.cfg", "0" * 64, 0o640, ("lb",), "file",
                 restarts=("haproxy",)),
        WantFile("/etc/systemd/system/haproxy.service.d/10-provisioner.conf", "0" * 64, 0o644,
                 ("lb",), "file", restarts=("haproxy",)),
        WantFile("/etc/kubernetes/kubelet.conf", "0" * 64, 0o600, ("node",), "file",
                 restarts=("kubelet",))])

    def diff(path: str) -> Difference:
        return Difference("lab-w1", ("lb",), "file", path, "content differs")

    cfg, unit, kubelet = (f.path for f in want.files)
    assert restarts_of(want, [diff(cfg)]) == ["haproxy (reload)"]
    assert restarts_of(want, [diff(cfg), diff(unit)]) == ["haproxy"]
    assert restarts_of(want, [diff(kubelet), diff(cfg)]) == ["kubelet", "haproxy (reload)"]
