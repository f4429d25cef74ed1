"""The installable package: a wheel built from the checkout carries templates/, playbooks/ and
the Vagrantfile as package data and runs from any directory.

The end-to-end test builds the wheel from a copy of the checkout (so build/ and *.egg-info
stay out of the working tree), installs it without dependencies into a fresh venv whose
dependencies come from this venv (a .pth file), and runs `provisioner init` and `render` from
a directory outside the checkout with PYTHONPATH unset. About 15 s; no network when this
venv's setuptools can build the project (`make install` brings it), else pip fetches the
build dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from provisioner import resources

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DATA = "provisioner/_data"
# Top-level entries the build never needs (caches, state, outputs of earlier builds).
SKIP_TOP = {"build", "dist", "out"}
PHASE_PLAYBOOKS = ["preflight", "os", "runtime", "etcd", "lb", "control-plane", "node",
                   "addons", "reset"]  # fmt: skip


def _checkout_files(top: str) -> set[str]:
    """Files under the checkout's ``top`` (relative to ROOT), without Python caches."""
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, (f"{' '.join(cmd)} (rc {proc.returncode}):\n"
                                  f"{proc.stdout}\n{proc.stderr}")
    return proc


def _copy_checkout(dest: Path) -> Path:
    def ignore(directory: str, names: list[str]) -> list[str]:
        top = Path(directory) == ROOT
        return [n for n in names
                if n == "__pycache__" or n.endswith(".egg-info")
                or (top and (n.startswith(".") or n in SKIP_TOP))]

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


def _setuptools_builds_here() -> bool:
    """Whether this venv's setuptools meets the build-system requirement (then the build
    needs no isolated environment, hence no network)."""
    try:
        major = int(metadata.version("setuptools").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return major >= 77


def _build_wheel(src: Path, out: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)]
    if _setuptools_builds_here():
        cmd[4:4] = ["--no-build-isolation", "--no-index"]
    _run(cmd, cwd=src, timeout=300)
    wheels = sorted(out.glob("provisioner-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _venv_with_wheel(wheel: Path, venv: Path) -> Path:
    """A fresh venv holding only the wheel; its dependencies come from this venv."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          "--no-index", str(wheel)], cwd=venv.parent)
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=venv.parent).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    # Appended after the venv's own site-packages: the installed provisioner comes first (and
    # .pth files in these directories, such as the editable install's finder, are not run).
    (Path(purelib) / "_provisioner_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    return venv


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
           and not k.startswith("PROVISIONER_")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_pyproject_lists_every_package() -> None:
    """Packages are listed in pyproject (package-dir needs it): a new one must be added."""
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "provisioner").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    data = {"provisioner._data", "provisioner._data.templates", "provisioner._data.playbooks"}
    assert sorted(on_disk - listed) == [], "add these to [tool.setuptools] packages"
    assert sorted(listed - on_disk - data) == [], "listed packages that do not exist"
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"provisioner._data": "."}


def test_checkout_uses_the_top_level_directories() -> None:
    """Run from the checkout (editable install), the data is the repository's own."""
    if not (resources.PACKAGE_DIR.parent / "pyproject.toml").is_file():
        pytest.skip("provisioner is installed, not run from the checkout")
    assert resources.templates_dir() == ROOT / "templates"
    assert resources.playbooks_dir() == ROOT / "playbooks"
    assert resources.vagrantfile_dir() == ROOT


def test_wheel_carries_the_data_and_renders_outside_the_checkout(tmp_path: Path) -> None:
    wheel = _build_wheel(_copy_checkout(tmp_path / "src"), tmp_path / "wheels")

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    code = {f for f in _checkout_files("provisioner") if f.endswith(".py")}
    assert sorted(code - names) == [], "modules missing from the wheel (pyproject packages)"
    data = {f"{DATA}/{f}" for f in _checkout_files("templates") | _checkout_files("playbooks")}
    assert sorted(data - names) == [], "templates/playbooks files missing from the wheel"
    assert f"{DATA}/Vagrantfile" in names
    assert f"{DATA}/playbooks/filter_plugins/provisioner.py" in names
    assert f"{DATA}/playbooks/action_plugins/provisioner_pack_install.py" in names
    for f in _checkout_files("provisioner"):  # versions, flags, build recipes, py.typed
        if not f.endswith(".py"):
            assert f in names, f"{f} missing from the wheel (pyproject package-data)"
    # The repository's top level is mapped to provisioner._data: nothing else of it ships.
    top = {n.removeprefix(f"{DATA}/").split("/")[0] for n in names if n.startswith(f"{DATA}/")}
    assert top == {"Vagrantfile", "templates", "playbooks"}

    venv = _venv_with_wheel(wheel, tmp_path / "venv")
    work = tmp_path / "work"
    work.mkdir()
    env = _clean_env(venv)
    exe = str(venv / "bin" / "provisioner")
    _run([exe, "init", "spec.yaml"], cwd=work, env=env)
    done = _run([exe, "render", "spec.yaml", "--out", "out", "--state-dir", "state"],
                cwd=work, env=env)
    assert "rendered" in done.stdout
    hosts = sorted(p for p in (work / "out" / "hosts").iterdir() if p.is_dir())
    assert hosts, "no host trees rendered"
    assert (work / "out" / "runner" / "inventory" / "hosts.json").is_file()
    assert (work / "out" / "runner" / "env" / "envvars").is_file()
    for host in hosts:
        assert (work / "out" / "hosts" / f"{host.name}.json").is_file()
        assert any(host.rglob("*.service")), f"{host.name}: no systemd units rendered"

    probe = _run([str(venv / "bin" / "python"), "-c", (
        "import json, sys, provisioner, provisioner.resources as r, provisioner.execute as x, "
        "provisioner.render.engine as e\n"
        "print(json.dumps({'package': provisioner.__file__, 'templates': str(e.TEMPLATES_DIR),"
        " 'playbooks': str(x.PLAYBOOKS), 'vagrantfile': str(r.vagrantfile_dir()),"
        " 'path': sys.path}))")], cwd=work, env=env)
    where = json.loads(probe.stdout)
    installed = Path(where["package"]).parent
    assert installed.is_relative_to(venv), where["package"]
    assert Path(where["templates"]) == installed / "_data" / "templates"
    assert Path(where["playbooks"]) == installed / "_data" / "playbooks"
    assert Path(where["vagrantfile"]) == installed / "_data"
    # Neither the checkout nor the build copy is importable (this venv's site-packages, which
    # lies in the checkout, is there for the dependencies only).
    tops = {Path(e or work).resolve() for e in where["path"]}
    assert not tops & {ROOT, tmp_path / "src"}, where["path"]

    # The installed playbooks are a complete Ansible project (roles, imports).
    ansible = Path(sys.executable).parent / "ansible-playbook"
    if ansible.exists():
        inventory = tmp_path / "hosts.json"
        inventory.write_text(json.dumps({"all": {"hosts": {"n1": {"ansible_connection": "local"}},
                                                 "children": {g: {"hosts": {"n1": None}} for g in
                                                              ("kube_control_plane", "etcd",
                                                               "kube_node", "lb")}}}))
        playbooks = installed / "_data" / "playbooks"
        _run([str(ansible), "--syntax-check", "-i", str(inventory),
              *(str(playbooks / f"{p}.yml") for p in PHASE_PLAYBOOKS)], cwd=work)
