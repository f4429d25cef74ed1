"""``provisioner upgrade FILE --to V``: the spec is checked, rewritten in place and provisioned.

Scope: ``provisioner.upgrade.retarget`` and ``path_to`` (pure), and the command's checks on
the lab spec's text: a skipped minor, a downgrade, an unsupported or unchanged release and
an unconfirmed run are refused with exit 2 (1 unconfirmed) before anything runs, the file
untouched; an accepted one rewrites only the version line and hands the file to
``provision`` with the rollout options. ``provision`` itself is replaced by
``provision_double`` here (it needs hosts; the lab proves the real rollout): it records
what it was given and either refuses (the file must come back as it was) or fails a phase
(the file keeps the new version, so a re-run resumes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from provisioner import cli_upgrade
from provisioner.cli import app
from provisioner.provision import ProvisionError
from provisioner.upgrade import path_to, retarget

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "inventories" / "nspawn-3cp-2w.yaml"


def _spec(tmp_path: Path, version: str) -> Path:
    text = LAB.read_text().replace('kubernetesVersion: "1.37.2"',
                                   f'kubernetesVersion: "{version}"  # pinned')
    spec = tmp_path / "cluster.yaml"
    spec.write_text(text)
    spec.chmod(0o640)
    return spec


def test_retarget_changes_only_the_version_line() -> None:
    text = ("apiVersion: x\nspec:\n  # the release\n  kubernetesVersion: '1.36.3'  # keep\n"
            "  workers: {count: 2}\n")
    assert retarget(text, "1.37.2") == text.replace("'1.36.3'", "'1.37.2'")
    bare = "spec:\n  kubernetesVersion: 1.36.3\n"
    assert retarget(bare, "1.37.2") == 'spec:\n  kubernetesVersion: "1.37.2"\n'


def test_retarget_adds_a_missing_version_under_spec() -> None:
    text = "kind: Cluster\nspec:\n    provider: {type: nspawn}\n"
    out = retarget(text, "1.36.3")
    assert out == 'kind: Cluster\nspec:\n    kubernetesVersion: "1.36.3"\n    provider: ' \
                  "{type: nspawn}\n"
    assert yaml.safe_load(out)["spec"]["kubernetesVersion"] == "1.36.3"


def test_retarget_refuses_what_it_cannot_edit_safely() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        retarget("spec: {kubernetesVersion: 1.36.3}\n", "1.37.2")
    with pytest.raises(ValueError, match=r"found 2"):
        retarget("a:\n  kubernetesVersion: 1.36.3\nb:\n  kubernetesVersion: 1.36.3\n",
                 "1.37.2")


def test_path_to() -> None:
    assert path_to("1.36.3", "1.37.2") == ["1.37.2"]
    assert path_to("1.35.4", "1.37.2") == ["1.36.3", "1.37.2"]
    with pytest.raises(ValueError, match=r"older than 1\.37\.2"):
        path_to("1.37.2", "1.36.3")


class ProvisionDouble:
    """Stands for ``provision`` (which needs hosts): records its call and the spec's text
    at that moment, then refuses or returns the given result."""

    def __init__(self, refuse: str | None = None, result: Any = None) -> None:
        self.refuse, self.result = refuse, result
        self.calls: list[dict[str, Any]] = []

    def __call__(self, file: Path, *args: Any, **kwargs: Any) -> Any:
        self.calls.append({"text": file.read_text(), "args": args, **kwargs})
        if self.refuse:
            raise ProvisionError(self.refuse)
        return self.result


@pytest.fixture
def provision_double(monkeypatch: pytest.MonkeyPatch) -> ProvisionDouble:
    double = ProvisionDouble(refuse="the hosts run 1.35.4")
    monkeypatch.setattr(cli_upgrade, "provision", double)
    return double


@pytest.mark.parametrize(("start", "to", "says"), [
    ("1.35.4", "1.37.2", "Fix: upgrade through 1.36.3 -> 1.37.2: `provisioner upgrade"),
    ("1.37.2", "1.36.3", "going down a version is not supported"),
    ("1.36.3", "1.38.0", "not a supported Kubernetes release; supported: 1.35.4, 1.36.3, "
                         "1.37.2"),
    ("1.36.3", "1.36.3", "already names 1.36.3"),
])
def test_a_step_the_spec_cannot_take_is_refused_and_the_file_kept(
        tmp_path: Path, provision_double: ProvisionDouble, start: str, to: str,
        says: str) -> None:
    spec = _spec(tmp_path, start)
    before = spec.read_bytes()
    res = CliRunner().invoke(app, ["upgrade", str(spec), "--to", to, "--yes"])
    assert res.exit_code == 2, res.output
    assert says in res.output and "nothing was changed" in res.output, res.output
    assert spec.read_bytes() == before and not provision_double.calls


def test_unconfirmed_changes_nothing(tmp_path: Path, provision_double: ProvisionDouble
                                     ) -> None:
    spec = _spec(tmp_path, "1.36.3")
    before = spec.read_bytes()
    res = CliRunner().invoke(app, ["upgrade", str(spec), "--to", "1.37.2"], input="n\n")
    assert res.exit_code == 1, res.output
    assert "etcd 3.6.8 -> 3.7.0" in res.output and "containerd 2.3.7 -> 2.4.2" in res.output
    assert "not confirmed; nothing was changed" in res.output
    assert spec.read_bytes() == before and not provision_double.calls


def test_a_refusal_by_the_hosts_puts_the_spec_back(
        tmp_path: Path, provision_double: ProvisionDouble) -> None:
    spec = _spec(tmp_path, "1.36.3")
    before = spec.read_bytes()
    res = CliRunner().invoke(app, ["upgrade", str(spec), "--to", "1.37.2", "--yes",
                                   "--max-unavailable", "2", "--drain-timeout", "60"])
    assert res.exit_code == 1, res.output
    assert "the hosts run 1.35.4" in res.output and "names 1.36.3 again" in res.output
    [call] = provision_double.calls
    assert call["text"] == before.decode().replace('"1.36.3"  # pinned', '"1.37.2"  # pinned')
    assert call["max_unavailable"] == 2 and call["drain_timeout"] == 60
    assert spec.read_bytes() == before
    assert spec.stat().st_mode & 0o777 == 0o640
    assert not list(tmp_path.glob(".*upgrade*"))


def test_a_stopped_rollout_keeps_the_new_version(
        tmp_path: Path, provision_double: ProvisionDouble) -> None:
    from provisioner.provision import Failure, ProvisionResult

    spec = _spec(tmp_path, "1.36.3")
    provision_double.refuse = None
    provision_double.result = ProvisionResult(
        cluster="lab", run_id="r", run_dir=tmp_path, selected=("node",), phases=(),
        skipped=(), seconds=1.0, failure=Failure("node", "lab-w1", "drain", "timed out"))
    res = CliRunner().invoke(app, ["upgrade", str(spec), "--to", "1.37.2", "--yes"])
    assert res.exit_code == 1, res.output
    assert "now names 1.37.2" in res.output and "resumes the upgrade" in res.output
    assert 'kubernetesVersion: "1.37.2"  # pinned' in spec.read_text()
    assert spec.stat().st_mode & 0o777 == 0o640
