"""The top-level Vagrantfile: ``vagrant validate`` passes for every example spec and stops
with the validator's report on an invalid one; a plain ``vagrant`` command keeps Vagrant's
state in the cluster's state directory; the triggers converge the cluster once, after the
last VM, with ``provisioner provision SPEC --machines-running``, and forget destroyed VMs.

The real ``vagrant`` command and Vagrant's own trigger code run; no VM is made: the trigger
checks load the Vagrantfile into a Vagrant environment and fire its triggers on machines
that were never created, with a stand-in for the provisioner command.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted([*(ROOT / "inventories").glob("*.yaml"),
                   *(ROOT / "tests" / "specs" / "valid").glob("*.yaml")])
INVALID = ROOT / "tests" / "specs" / "invalid"
PROVISIONER = Path(sys.executable).with_name("provisioner")
SPEC = ROOT / "inventories" / "vagrant.yaml"  # cluster vg: vg-cp1, vg-w1

pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None,
                                reason="vagrant is not installed (make deps)")


def _env(spec: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGRANT_", "PROVISIONER_"))}
    env.update({
        "PROVISIONER_SPEC": str(spec),
        "PROVISIONER_BIN": str(PROVISIONER),
        "PROVISIONER_STATE_DIR": str(tmp_path / "state"),
        "VAGRANT_CWD": str(ROOT),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_NO_COLOR": "1",
        **extra,
    })
    return env


def _validate(spec: Path, tmp_path: Path, *args: str, **extra: str
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["vagrant", "validate", *args], capture_output=True, text=True,
                          env=_env(spec, tmp_path, **extra), timeout=180, check=False)


def _dotfile(tmp_path: Path, cluster: str = "vg") -> Path:
    return tmp_path / "state" / "clusters" / cluster / "vagrant" / "dot"


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.name)
def test_validate_passes_for_every_example(spec: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(spec.read_text())
    # A virtualbox spec makes VirtualBox Vagrant's default provider, and VirtualBox itself
    # is not installed here: check its configuration, not the provider.
    vbox = data["spec"]["provider"].get("vagrantProvider") == "virtualbox"
    proc = _validate(spec, tmp_path, *(["--ignore-provider"] if vbox else []))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout
    # Private directories (console logs, Vagrant's state), and inside Vagrant's state
    # directory (``dot``) only what Vagrant itself keeps there.
    name = data["metadata"]["name"]
    dot = _dotfile(tmp_path, name)
    assert dot.is_dir() and dot.stat().st_mode & 0o077 == 0
    made = [p for p in (tmp_path / "state").rglob("*") if not p.is_relative_to(dot)]
    assert all(p.is_dir() and p.stat().st_mode & 0o077 == 0 for p in made), made


def test_plain_vagrant_keeps_its_state_where_the_provider_does(tmp_path: Path) -> None:
    """Vagrant picks its state directory before it reads the Vagrantfile: a plain command
    runs again with VAGRANT_DOTFILE_PATH set to the cluster's, which the provider also uses;
    a VAGRANT_DOTFILE_PATH elsewhere is refused, one already right is kept."""
    from provisioner.providers.vagrant.provider import _Paths

    proc = _validate(SPEC, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (_dotfile(tmp_path) / "machines" / "vg-cp1").is_dir()  # Vagrant's own layout
    assert _Paths(tmp_path / "state" / "clusters" / "vg").dotfile == _dotfile(tmp_path)
    # The notes (software emulation here) are printed once, by the run that goes on.
    assert proc.stderr.count("provisioner: ") <= 1, proc.stderr

    proc = _validate(SPEC, tmp_path, VAGRANT_DOTFILE_PATH=str(tmp_path / "elsewhere"))
    assert proc.returncode != 0
    assert f"keep their Vagrant state in {_dotfile(tmp_path)}" in proc.stderr
    assert not (tmp_path / "elsewhere" / "machines").exists()  # Vagrant made only the dir

    proc = _validate(SPEC, tmp_path, VAGRANT_DOTFILE_PATH=str(_dotfile(tmp_path)))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_validate_with_virtualbox_settings(tmp_path: Path) -> None:
    spec = tmp_path / "vb.yaml"
    spec.write_text((ROOT / "inventories" / "vagrant.yaml").read_text().replace(
        "vagrantProvider: libvirt", "vagrantProvider: virtualbox"))
    # VirtualBox itself is not installed here: check the configuration, not the provider.
    proc = _validate(spec, tmp_path, "--ignore-provider")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name, field", [
    ("134-vagrant-management-overlaps-subnet.yaml", "spec.provider.managementSubnet"),
    ("119-vagrant-memory-low.yaml", "spec.provider.memoryMib"),
])
def test_invalid_spec_stops_vagrant_with_the_field(name: str, field: str,
                                                   tmp_path: Path) -> None:
    proc = _validate(INVALID / name, tmp_path)
    assert proc.returncode != 0
    assert "is invalid; nothing was created" in proc.stderr
    assert field in proc.stderr
    assert not (tmp_path / "state").exists()  # stopped before anything, Vagrant's state too


def test_missing_spec_is_named(tmp_path: Path) -> None:
    proc = _validate(tmp_path / "nope.yaml", tmp_path)
    assert proc.returncode != 0
    assert f"cluster spec {tmp_path / 'nope.yaml'} not found" in proc.stderr


# --- the triggers, fired by Vagrant's own trigger code on machines never created ---------

HARNESS = r"""
require "vagrant"
require "json"

env = Vagrant::Environment.new(cwd: ENV.fetch("VAGRANT_CWD"), ui_class: Vagrant::UI::Silent)
machines = env.machine_names.map { |n| env.machine(n, :libvirt) }
describe = lambda do |t|
  { "command" => t.command.to_s, "name" => t.name, "run" => t.run && t.run.inline,
    "ruby" => !t.ruby_block.nil?, "only_on" => t.only_on }
end
report = { "machines" => machines.map { |m| m.name.to_s }, "triggers" => {}, "steps" => {} }
machines.each do |m|
  report["triggers"][m.name.to_s] = { "before" => m.config.trigger.before_triggers.map(&describe),
                                      "after" => m.config.trigger.after_triggers.map(&describe) }
end

def fire(step, machine, action, stage)
  ENV["FAKE_STEP"] = step
  started = Time.now
  Vagrant::Plugin::V2::Trigger.new(machine.env, machine.config.trigger, machine, machine.ui)
    .fire(action, stage, machine.name.to_s, :action, all: true)
  { "error" => nil, "seconds" => Time.now - started }
rescue StandardError => e
  { "error" => "#{e.class}: #{e.message}", "seconds" => Time.now - started }
end

if ENV["HARNESS_FIRE"] == "1"
  first, last = machines.first, machines.last
  steps = report["steps"]
  # Vagrant fires a machine's triggers around its own action: up, provision in order,
  # destroy in reverse order.
  steps["before up"] = machines.map { |m| fire("before up", m, :up, :before) }
  steps["after up"] = machines.map { |m| fire("after up", m, :up, :after) }
  steps["after provision"] = machines.map { |m| fire("after provision", m, :provision, :after) }
  steps["after destroy"] = machines.reverse.map { |m| fire("after destroy", m, :destroy, :after) }
  ENV["FAKE_EXIT"] = "3"
  steps["provision fails"] = fire("provision fails", last, :up, :after)
  ENV.delete("FAKE_EXIT")
  # A parallel `vagrant up`: the first VM still comes up in another thread of this process
  # (BatchAction's, marked with :machine) when the last one's triggers fire.
  other = Thread.new { sleep 2; Thread.current[:error] = RuntimeError.new("boot failed") }
  other[:machine] = first
  steps["other VM fails"] = fire("other VM fails", last, :up, :after)
  other = Thread.new { sleep 2 }
  other[:machine] = first
  steps["other VM comes up"] = fire("other VM comes up", last, :up, :after)
end
File.write(ENV.fetch("HARNESS_OUT"), JSON.generate(report))
"""

FAKE = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[:2] == ["vagrant", "config"]:  # the Vagrantfile's settings: the real command
    os.execv({real!r}, [{real!r}, *args])
keys = ("PROVISIONER_VAGRANTFILE_DIR", "VAGRANT_DOTFILE_PATH", "VAGRANT_DEFAULT_PROVIDER",
        "PROVISIONER_VAGRANT_CONFIG", "PROVISIONER_VAGRANT_SETTINGS", "PROVISIONER_STATE_DIR")
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({{"step": os.environ.get("FAKE_STEP"), "argv": args,
                         "env": {{k: os.environ.get(k) for k in keys}}}}) + "\\n")
print("stand-in provisioner:", *args)
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


@pytest.fixture(scope="module")
def vagrant_library() -> None:
    """Skip unless the system ``ruby`` loads Vagrant's library (Debian's vagrant package;
    HashiCorp's installer embeds its own Ruby)."""
    ruby = shutil.which("ruby")
    probe = None if ruby is None else subprocess.run(
        [ruby, "-e", 'require "vagrant"'], capture_output=True, timeout=60, check=False)
    if probe is None or probe.returncode != 0:
        pytest.skip("Vagrant's Ruby library is not loadable by the system ruby")


def _harness(tmp_path: Path, spec: Path = SPEC, *args: str, fire: bool = False,
             **extra: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Load the Vagrantfile into a Vagrant environment (``args`` as the command line) and,
    with ``fire``, fire its triggers; returns the report and the stand-in's calls."""
    script = tmp_path / "harness.rb"
    script.write_text(HARNESS)
    fake = tmp_path / "bin" / "provisioner"
    fake.parent.mkdir()
    fake.write_text(FAKE.format(python=sys.executable, real=str(PROVISIONER)))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    log, out = tmp_path / "calls.jsonl", tmp_path / "report.json"
    name = yaml.safe_load(spec.read_text())["metadata"]["name"]
    env = _env(spec, tmp_path, PROVISIONER_BIN=str(fake), FAKE_LOG=str(log),
               HARNESS_OUT=str(out), HARNESS_FIRE="1" if fire else "0",
               # Already the cluster's: a plain command goes on without running again.
               VAGRANT_DOTFILE_PATH=str(_dotfile(tmp_path, name)), **extra)
    proc = subprocess.run(["ruby", str(script), *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    report: dict[str, Any] = json.loads(out.read_text())
    return report, calls


def _converge(triggers: dict[str, Any]) -> list[tuple[str, str]]:
    """(machine, command) of every trigger that converges the cluster."""
    return [(m, t["command"]) for m, ts in triggers.items() for t in [*ts["before"], *ts["after"]]
            if t["name"].startswith("provisioner: converge")]


def test_triggers_converge_once_after_the_last_vm_and_forget_destroyed_ones(
        tmp_path: Path, vagrant_library: None) -> None:
    console = tmp_path / "state" / "clusters" / "vg" / "vagrant" / "console"
    console.mkdir(parents=True)
    for name in ("vg-cp1", "vg-w1"):  # left by VMs of these names destroyed elsewhere
        (console / f"{name}.log").write_text("provisioner-ssh-host-key: ssh-ed25519 OLD\n")
    report, calls = _harness(tmp_path, fire=True)

    assert report["machines"] == ["vg-cp1", "vg-w1"]
    # One converge trigger per command, all on the last VM, run on the host (Ruby, in
    # Vagrant's process); no trigger runs anything inside a VM.
    assert _converge(report["triggers"]) == [
        ("vg-w1", "up"), ("vg-w1", "provision"), ("vg-w1", "reload")]
    triggers = [t for ts in report["triggers"].values() for t in [*ts["before"], *ts["after"]]]
    assert all(t["ruby"] and t["run"] is None for t in triggers), triggers

    steps = report["steps"]
    assert [s["error"] for s in steps["before up"]] == [None, None]
    assert not list(console.iterdir())  # new VMs: the old host keys are gone
    by_step: dict[str, list[dict[str, Any]]] = {}
    for c in calls:
        by_step.setdefault(c["step"], []).append(c)

    # After `up` of each VM: the cluster is converged once, after the last one.
    assert [s["error"] for s in steps["after up"]] == [None, None]
    [up] = by_step["after up"]
    assert up["argv"] == ["provision", str(SPEC), "--machines-running"]
    assert up["env"] == {
        "PROVISIONER_VAGRANTFILE_DIR": str(ROOT),  # the provider's vagrant calls: this file
        "VAGRANT_DOTFILE_PATH": str(_dotfile(tmp_path)),  # ... and these machines
        "VAGRANT_DEFAULT_PROVIDER": "libvirt",
        "PROVISIONER_VAGRANT_CONFIG": None,  # so the provider's calls do not fire triggers
        "PROVISIONER_VAGRANT_SETTINGS": None,
        "PROVISIONER_STATE_DIR": str(tmp_path / "state"),
    }
    assert [c["argv"] for c in by_step["after provision"]] == [up["argv"]]

    # `vagrant destroy` (last VM first): each VM is forgotten as it goes.
    assert [s["error"] for s in steps["after destroy"]] == [None, None]
    assert [c["argv"] for c in by_step["after destroy"]] == [
        ["vagrant", "forget", str(SPEC), "vg-w1"], ["vagrant", "forget", str(SPEC), "vg-cp1"]]

    # A failed provision fails the Vagrant command (the provision named phase and host).
    failed = steps["provision fails"]["error"]
    assert failed is not None and "Stop" in failed
    assert f"{tmp_path / 'bin' / 'provisioner'} provision {SPEC} --machines-running` " \
        "exited with status 3" in failed

    # Parallel up: the last VM waits for the others; a VM that failed stops the converge.
    fails = steps["other VM fails"]
    assert fails["seconds"] >= 1.5
    assert fails["error"] is not None and "Stop" in fails["error"]
    assert "cluster vg not converged: vg-cp1 did not come up" in fails["error"]
    assert "other VM fails" not in by_step
    comes_up = steps["other VM comes up"]
    assert comes_up["error"] is None and comes_up["seconds"] >= 1.5
    assert [c["argv"] for c in by_step["other VM comes up"]] == [up["argv"]]


@pytest.mark.parametrize("case", ["no-provision", "rehearsal", "provider"])
def test_no_converge_trigger_when_not_asked_for(case: str, tmp_path: Path,
                                                vagrant_library: None) -> None:
    """``vagrant up --no-provision``; a spec of another provider rehearsed on VMs; and the
    provider's own vagrant calls (PROVISIONER_VAGRANT_CONFIG), which must never start a
    provision from inside a provision."""
    spec, args, extra = SPEC, [], {}
    if case == "no-provision":
        args = ["up", "--no-provision"]
    elif case == "rehearsal":
        spec = ROOT / "inventories" / "nspawn-3cp-2w.yaml"
    else:
        settings = tmp_path / "config.json"
        proc = subprocess.run([str(PROVISIONER), "vagrant", "config", str(SPEC)],
                              capture_output=True, text=True, check=True,
                              env=_env(SPEC, tmp_path))
        settings.write_text(proc.stdout)
        extra = {"PROVISIONER_VAGRANT_CONFIG": str(settings)}
    report, calls = _harness(tmp_path, spec, *args, **extra)
    assert _converge(report["triggers"]) == [] and calls == []
    after = {t["command"] for ts in report["triggers"].values() for t in ts["after"]}
    assert after == (set() if case == "provider" else {"destroy"})
