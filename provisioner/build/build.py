"""``artifacts build``: every binary artifact a plan needs, built from upstream source.

Scope: for each artifact the plan's hosts need, build its recipe at the pinned version (once
per version and recipe key: finished programs are cached under
``<cache>/builds/<recipe>/<version>/<key>/``), package it exactly as the official release
file is laid out (a bare binary, or a tar whose members the packaged manifest lists), and
write a ``local`` artifact source: ``<name>/<version>/<file>`` plus ``manifest.json`` with each
file's sha256 and version. Artifacts that are Debian packages (haproxy, keepalived) have no
Go source; they are fetched from Debian and verified against their pinned sha256s.

The cache root is ``$PROVISIONER_CACHE_DIR`` or ``~/.cache/provisioner``: outside any checkout,
shared by every clone on the machine.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.artifacts.fetch import MANIFEST_JSON, fetch_online
from provisioner.artifacts.files import (
    new_parent_dirs,
    record_path,
    record_text,
    sha256_file,
    tar_info,
    write_atomic,
)
from provisioner.artifacts.manifest import Entry, Manifest, default_manifest, needed
from provisioner.artifacts.model import ArtifactError, FetchedArtifact, Release
from provisioner.build.gotool import go_binary, go_env, go_version, run_go
from provisioner.build.images import (
    IMAGES,
    compile_pause,
    image_files,
    image_version,
    kube_module_dir,
    make_image,
    read_layout,
    write_layout,
)
from provisioner.build.recipes import Recipe, RecipeError, pinned_files, recipe, recipe_key
from provisioner.plan.model import Plan
from provisioner.versions.manifest import minors

ENV_CACHE = "PROVISIONER_CACHE_DIR"
# Bump when image assembly changes (files, config): cached images are then rebuilt.
IMAGE_RECIPE_VERSION = "1"

Report = Callable[[str, str, str], None]
"""(recipe label, state, detail): states are queued, cached, building, done, failed."""


def cache_root() -> Path:
    """Where Go's caches and finished builds live: ``$PROVISIONER_CACHE_DIR`` or
    ``~/.cache/provisioner``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path.home() / ".cache" / "provisioner"


def pinned_recipe_versions(manifest: Manifest | None = None) -> set[tuple[str, str]]:
    """Every (recipe, version) some supported Kubernetes release needs (artifacts and the
    programs of images)."""
    man = manifest if manifest is not None else default_manifest()
    out: set[tuple[str, str]] = set()
    for rel in minors().values():
        for entry in man.entries.values():
            if entry.build is None:
                continue
            if entry.version_from == "kubernetes":
                out.update((entry.build.recipe, p) for p in rel.patches)
            elif entry.version_from is not None and entry.version_from in rel.components:
                out.add((entry.build.recipe, rel.component(entry.version_from)))
        for image in IMAGES.values():
            if image.go_recipe is not None:
                out.add((image.go_recipe, rel.component(image.version_from)))
    return out


@dataclass(frozen=True)
class Built:
    """A recipe's finished programs on the controller."""

    recipe: str
    version: str
    key: str
    directory: Path
    seconds: float
    cached: bool

    def program(self, name: str) -> Path:
        """The built program ``name``."""
        return self.directory / name


def default_exec_name(package: str) -> str:
    """The file name ``go build -o DIR`` gives a main package: its last path element, or the
    one before a major-version suffix (``go.etcd.io/etcd/server/v3`` -> ``server``)."""
    parts = package.split("/")
    if len(parts) > 1 and re.fullmatch(r"v[0-9]+", parts[-1]):
        return parts[-2]
    return parts[-1]


def _label(r: Recipe, version: str) -> str:
    return f"{r.name} {version}"


def build_recipe(r: Recipe, version: str, cache: Path, report: Report) -> Built:
    """Build (or reuse) every program of ``r`` at ``version``."""
    files = pinned_files(r.name, version)
    go = go_binary()
    key = recipe_key(r, version, files, go_version(go))
    done = cache / "builds" / r.name / version / key[:20]
    done.parent.mkdir(parents=True, exist_ok=True)
    # One build of a recipe version at a time across processes sharing the cache (a second
    # `artifacts build` waits, then finds the first one's result): two builds would remove
    # each other's temporary output directory.
    with (done.parent / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(r, version, key, files, done, cache, report)


def _build_locked(r: Recipe, version: str, key: str, files: dict[str, bytes], done: Path,
                  cache: Path, report: Report) -> Built:
    label = _label(r, version)
    if (done / ".complete").is_file() and all((done / p.name).is_file() for p in r.programs):
        report(label, "cached", str(done))
        return Built(r.name, version, key, done, 0.0, True)
    started = time.monotonic()
    report(label, "building", "go build")
    work = cache / "work" / r.name / version
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name, data in files.items():
        (work / name).write_bytes(data)
    out = done.with_name(done.name + ".tmp")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = go_env(cache, r.env())
    date = files["source-date"].decode().strip()
    count = 0

    def line(text: str) -> None:
        nonlocal count
        if text.startswith("go: downloading "):
            report(label, "building", "downloading " + text.removeprefix("go: downloading "))
        elif text and not text.startswith(("#", " ", "\t")) and "/" in text:
            count += 1
            report(label, "building", f"{count} packages compiled, now {text}")

    by_package = {p.package: p for p in r.programs}
    args = ["build", "-v", "-trimpath", *r.build_args(), "-ldflags", r.ldflags(version, date)]
    if r.tags:
        args += ["-tags", ",".join(r.tags)]
    try:
        # One `go build` for all programs, so shared packages compile once; rename where
        # upstream's name differs from Go's default (etcd's server is `.../server/v3`).
        run_go([*args, "-o", str(out) + "/", *by_package], work, env, label, line)
        for p in r.programs:
            produced = out / default_exec_name(p.package)
            if produced.name != p.name and produced.is_file():
                produced.rename(out / p.name)
        missing = [p.name for p in r.programs if not (out / p.name).is_file()]
        if missing:
            raise RecipeError(f"{label}: go build produced no {', '.join(missing)}")
        (out / ".complete").write_text(key + "\n")
        shutil.rmtree(done, ignore_errors=True)
        out.rename(done)
    except RecipeError as exc:
        report(label, "failed", str(exc).splitlines()[0])
        raise
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    report(label, "done", f"{seconds:.0f}s")
    return Built(r.name, version, key, done, seconds, False)


def _tar_members(entries: Collection[Entry], rel: Release) -> list[str]:
    """Every member the release file must hold: the install members of each artifact that
    shares the file (etcd's tarball carries etcd, etcdctl and etcdutl)."""
    members: list[str] = []
    for e in entries:
        members += [i.member for i in e.release(rel.version).install]
    return sorted(dict.fromkeys(members))


def write_release_tar(members: list[tuple[str, Path]], out: Path) -> None:
    """A reproducible tar (gzip when the name says so): sorted, mtime 0, root-owned."""
    tmp = out.with_name(f".{out.name}.part.{os.getpid()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tmp.open("wb") as raw:
            gz = out.name.endswith((".gz", ".tgz"))
            stream = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if gz else raw
            with tarfile.open(fileobj=stream, mode="w", format=tarfile.GNU_FORMAT) as tar:
                dirs: set[str] = set()
                for arcname, src in sorted(members):
                    for d in new_parent_dirs(arcname, dirs):
                        tar.addfile(tar_info(d + "/", 0o755, kind=tarfile.DIRTYPE))
                    with src.open("rb") as f:
                        tar.addfile(tar_info(arcname, 0o755, src.stat().st_size), f)
            if gz:
                stream.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _package(rel: Release, entries: Collection[Entry], built: Built, dest: Path) -> None:
    """Lay ``built`` out as ``rel``'s official file at ``dest``."""
    first = next(iter(entries))
    assert first.build is not None
    if rel.kind == "binary":
        assert first.build.program is not None
        tmp = dest.with_name(f".{dest.name}.part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built.program(first.build.program), tmp)
        tmp.chmod(0o755)
        os.replace(tmp, dest)
        return
    members = []
    for member in _tar_members(entries, rel):
        program = member.rsplit("/", 1)[-1]
        if not built.program(program).is_file():
            raise ArtifactError(f"artifact {rel.name} {rel.version}: member {member} has no "
                                f"program {program!r} in the {built.recipe} recipe")
        members.append((member, built.program(program)))
    write_release_tar(members, dest)


def build(
    plan: Plan,
    out: Path,
    report: Report,
    *,
    names: Collection[str] | None = None,
    manifest: Manifest | None = None,
    cache: Path | None = None,
) -> dict[str, FetchedArtifact]:
    """Build every artifact ``plan`` needs into the local source ``out``; return them."""
    man = manifest if manifest is not None else default_manifest()
    cache = cache if cache is not None else cache_root()
    wanted = needed(plan) if names is None else tuple(dict.fromkeys(names))
    releases = {n: man.release_for(n, plan) for n in wanted}
    for n, rel in releases.items():
        e = man.entry(n)
        if e.build is None and rel.kind != "deb":
            raise ArtifactError(f"artifact {n} {rel.version}: the manifest has no build recipe "
                                "for it and it is not a Debian package")
    # Group artifacts by the file they share, then by recipe version (built once).
    files: dict[str, tuple[Release, list[Entry]]] = {}
    for n, rel in releases.items():
        files.setdefault(rel.layout_path, (rel, []))[1].append(man.entry(n))
    to_build = list(dict.fromkeys((e[0].build.recipe, r.version) for r, e in files.values()
                                  if e[0].build is not None))
    for name, version in to_build:
        report(_label(recipe(name), version), "queued", "")
    builds = {(name, version): build_recipe(recipe(name), version, cache, report)
              for name, version in to_build}
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, FetchedArtifact] = {}
    for layout, (rel, entries) in sorted(files.items()):
        dest = out / layout
        ref = entries[0].build
        if ref is None:
            # A Debian package set: the online fetch verifies every .deb against its pin.
            report(f"{rel.name} {rel.version}", "building", "fetching Debian packages")
            src = fetch_online([rel], cache / "debs")[rel.name].path
            if not dest.is_file() or sha256_file(dest) != sha256_file(src):
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
            report(f"{rel.name} {rel.version}", "done", "verified")
        else:
            b = builds[(ref.recipe, rel.version)]
            stamp = dest.with_name(dest.name + ".built-from")
            if not (dest.is_file() and stamp.is_file() and stamp.read_text().strip() == b.key):
                _package(rel, entries, b, dest)
                stamp.write_text(b.key + "\n")
        sha = sha256_file(dest)
        write_atomic(record_path(dest), record_text(sha, dest.name).encode())
        for e in entries:
            r = e.release(rel.version)
            result[e.name] = FetchedArtifact(name=e.name, version=rel.version, path=dest,
                                             sha256=sha, kind=rel.kind, install=r.install)
    write_local_manifest(out, result, builds, man)
    return result


def write_local_manifest(out: Path, result: dict[str, FetchedArtifact],
                         builds: dict[tuple[str, str], Built], man: Manifest) -> None:
    """``manifest.json`` of the local source, merged with entries already there."""
    path = out / MANIFEST_JSON
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    go = go_version(go_binary())
    for name, fa in sorted(result.items()):
        e = man.entry(name)
        entry: dict[str, Any] = {
            "version": fa.version,
            "file": os.path.relpath(fa.path, out),
            "sha256": fa.sha256,
            "kind": fa.kind,
            "install": [{"member": i.member, "dest": i.dest, "mode": i.mode} for i in fa.install],
        }
        if e.build is not None:
            b = builds[(e.build.recipe, fa.version)]
            entry["built"] = {"recipe": b.recipe, "key": b.key, "go": go}
        data[name] = entry
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    path.chmod(0o644)


# --- images ------------------------------------------------------------------------------------

IMAGES_JSON = "images.json"


def needed_images(plan: Plan) -> list[str]:
    """The images a cluster of ``plan`` runs that the lab builds: the sandbox image, the
    addons it enables, and the web server and client images verify's checks use."""
    names = ["pause", "coredns"]
    if plan.cluster.spec.addons.metrics_server.enabled:
        names.append("metrics-server")
    if plan.cluster.spec.network.cni == "flannel":
        names.append("flannel")
    return [*names, "nginx", "busybox"]


def _run_quiet(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900,
                          check=False)
    if proc.returncode != 0:
        raise RecipeError(f"{' '.join(cmd[:3])} failed: {proc.stderr.strip()[-800:]}")


def build_images(plan: Plan, out: Path, report: Report, cache: Path | None = None
                 ) -> dict[str, Path]:
    """Every image of :func:`needed_images` as an OCI layout tar under ``out/images``;
    ``out/images.json`` maps each upstream reference to its file and manifest digest."""
    cache = cache if cache is not None else cache_root()
    built: dict[str, Path] = {}
    index: dict[str, dict[str, str]] = {}
    for name in needed_images(plan):
        r = IMAGES[name]
        version = image_version(r, plan.release.components)
        ref = r.reference(version)
        label = f"image {ref}"
        program: Path | None = None
        key_parts = [r.name, ref, repr(r), IMAGE_RECIPE_VERSION]
        if r.go_recipe is not None:
            b = build_recipe(recipe(r.go_recipe), version, cache, report)
            program = b.program(recipe(r.go_recipe).programs[0].name)
            key_parts.append(b.key)
        elif r.name == "pause":
            key_parts.append(plan.version)
        key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()[:20]
        cached = cache / "images" / r.name / r.tag(version) / f"{key}.oci.tar"
        if not cached.is_file():
            report(label, "building", "assembling the image")
            with tempfile.TemporaryDirectory(prefix="provisioner-image-") as tmp:
                work = Path(tmp)
                if r.name == "pause":
                    program = compile_pause(kube_module_dir(cache, plan.version), version,
                                            work / "pause")
                files = image_files(r, program, work, _run_quiet)
                date = pinned_files("kubernetes", plan.version)["source-date"].decode().strip()
                write_layout(make_image(r, ref, files, date), cached)
            report(label, "done", "")
        else:
            report(label, "cached", str(cached))
        dest = out / "images" / f"{r.name}-{r.tag(version)}.oci.tar"
        if not dest.is_file() or sha256_file(dest) != sha256_file(cached):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached, dest)
        index[ref] = {"file": os.path.relpath(dest, out), "sha256": sha256_file(dest),
                      "manifest": read_layout(dest).manifest_digest}
        built[ref] = dest
    path = out / IMAGES_JSON
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data.update(index)
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    path.chmod(0o644)
    return built
