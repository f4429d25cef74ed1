"""Fetching artifacts to the controller: online, from a mirror, or from a local directory/bundle.

Scope: one verified file per artifact on the controller, from the source the spec names.
Downloads (online and mirror) are checked against the sha256 the packaged manifest pins and
nothing else: a source's own checksum files are never trusted, so an artifact without a pin
is refused before the cache or the network is consulted (only a built ``local`` source can
provide it). Downloads go to ``<cache_root>/<name>/<version>/<file>`` through a temp file
that is renamed only after its sha256 matched, with a ``.sha256`` record beside it; a cached
file is used without any network access only while it still hashes to the pin. The cache
(bundles unpacked included) is a 0700 directory. A local source is verified on every fetch
against its ``manifest.json`` and the packaged manifest (pinned sha256, version, kind,
install list; a built file against its build's manifest.json), and never replaced by a
download.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, cast

from provisioner.artifacts.files import (
    CHUNK,
    UnsafeArchiveError,
    parse_checksum_file,
    record_path,
    record_text,
    resolve_members,
    safe_extract,
    sha256_file,
    sha256_file_cached,
    sha256_stream,
    tar_files,
    temp_beside,
    write_atomic,
    write_tar,
)
from provisioner.artifacts.manifest import Manifest, default_manifest, needed, unpinned_problem
from provisioner.artifacts.model import (
    KINDS,
    ArtifactError,
    FetchedArtifact,
    InstallItem,
    Kind,
    Release,
)
from provisioner.plan.model import Plan
from provisioner.state import private_dir, state_root


def hash_cache() -> Path:
    """The controller's stat-keyed sha256 cache (``sha256_file_cached``), in the private
    state root: every run verifies the artifacts it ships without re-reading unchanged
    files."""
    return state_root() / "cache" / "sha256-stat.json"

def _tar_files_of(path: Path, sha: str) -> dict[str, str]:
    """``tar_files`` of an archive whose sha256 was just checked, cached by that sha256 in
    the private state root: the listing of given content never changes, and reading it
    means decompressing the whole archive (2.5 s a run for the lab's bundles)."""
    cache = state_root() / "cache" / "tar-members" / f"{sha}.json"
    try:
        data = json.loads(cache.read_text())
        if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
            return {str(k): v for k, v in data.items()}
    except (OSError, ValueError):
        pass
    files = tar_files(path)
    private_dir(cache.parent)
    write_atomic(cache, json.dumps(files, sort_keys=True).encode())
    return files


UrlRewrite = Callable[[str], str]
DEFAULT_TIMEOUT = 60.0
MANIFEST_JSON = "manifest.json"

OFFLINE_FIX = (
    "use artifacts.source: local with a bundle made on a machine with internet access "
    "(`provisioner artifacts bundle FILE --out bundle.tar`), or artifacts.source: mirror"
)


@dataclass(frozen=True)
class _Http:
    """How to reach the network for one fetch: URL rewriting (tests), timeout, source label."""

    rewrite: UrlRewrite
    timeout: float
    source: str  # "online" or "mirror", for messages
    fix: str


def fetch(
    plan: Plan,
    cache_root: Path,
    spec_dir: Path,
    *,
    names: Collection[str] | None = None,
    manifest: Manifest | None = None,
    url_rewrite: UrlRewrite | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, FetchedArtifact]:
    """A verified controller file for every artifact ``plan`` needs (or just ``names``).

    ``spec_dir`` anchors a relative ``artifacts.path``. ``manifest`` and ``url_rewrite``
    replace the packaged manifest and rewrite every URL before use (tests point them at a
    local server). Raises ``ArtifactError`` naming the artifact, the source and the fix.
    """
    wanted = needed(plan) if names is None else tuple(dict.fromkeys(names))
    spec = plan.cluster.spec.artifacts
    man = manifest if manifest is not None else default_manifest()
    releases = [man.release_for(n, plan) for n in wanted]
    if spec.source != "local":
        # Every unpinned artifact at once, before the cache or the network is touched (and,
        # in `provision`, before the survey or any playbook reaches a host).
        problem = unpinned_problem(man, spec.source, wanted, plan.version, plan.release)
        if problem is not None:
            raise ArtifactError(f"artifacts.source: {problem[0]}. Fix: {problem[1]}")
    # Only this user may write what is verified here and shipped to hosts later.
    cache_root = private_dir(Path(cache_root))
    if spec.source == "local":
        if spec.path is None:
            raise ArtifactError("artifacts.source local needs artifacts.path")
        path = spec.path if spec.path.is_absolute() else spec_dir / spec.path
        root = local_root(path, cache_root)
        try:
            return fetch_local(root, wanted, {r.name: r for r in releases})
        except ArtifactError as exc:
            if root == path:
                raise
            # An unpacked bundle is verified on every fetch like a directory; one that no
            # longer verifies is dropped, so the next run unpacks the bundle itself again.
            shutil.rmtree(root, ignore_errors=True)
            raise ArtifactError(f"{exc} (in {root}, the controller's unpacked copy of {path}: "
                                "removed, the next run unpacks the bundle again)") from None
    if spec.source == "mirror":
        if spec.mirror_url is None:
            raise ArtifactError("artifacts.source mirror needs artifacts.mirrorURL")
        http = _Http(url_rewrite or _same, timeout, "mirror",
                     f"check that {spec.mirror_url} serves <name>/<version>/<file> (a bundle "
                     "extracted into the web root has that layout), or " + OFFLINE_FIX)
        base = spec.mirror_url.rstrip("/")
        return _fetch_all(releases, cache_root, http, base)
    http = _Http(url_rewrite or _same, timeout, "online",
                 "check this machine's network access to it, or " + OFFLINE_FIX)
    return _fetch_all(releases, cache_root, http, None)


def fetch_online(releases: list[Release], cache_root: Path,
                 timeout: float = DEFAULT_TIMEOUT) -> dict[str, FetchedArtifact]:
    """``releases`` from their official URLs (Debian packages for ``deb`` kinds), verified."""
    http = _Http(_same, timeout, "online", "check this machine's network access to it, or "
                 + OFFLINE_FIX)
    return _fetch_all(releases, Path(cache_root), http, None)


def _same(url: str) -> str:
    return url


def _fetch_all(
    releases: list[Release], cache_root: Path, http: _Http, mirror: str | None
) -> dict[str, FetchedArtifact]:
    out: dict[str, FetchedArtifact] = {}
    done: dict[Path, str] = {}  # shared files (etcd/etcdctl) are fetched once
    for rel in releases:
        path = cache_root / rel.layout_path
        if path not in done:
            done[path] = _ensure(rel, path, http, mirror)
        sha = done[path]
        out[rel.name] = FetchedArtifact(
            name=rel.name, version=rel.version, path=path, sha256=sha, kind=rel.kind,
            install=_install_for(rel.name, rel.version, rel.kind, path, sha, rel.install,
                                 cache=True),
        )
    return out


def _what(rel: Release) -> str:
    return f"artifact {rel.name} {rel.version}"


def _ensure(rel: Release, path: Path, http: _Http, mirror: str | None) -> str:
    """The sha256 of a verified ``path``, downloading it first unless the cache holds it."""
    if rel.sha256 is None and rel.kind != "deb":
        # Refused before the cache is consulted: the cache is shared, and a copy fetched
        # once on a source's own checksum (as older releases did) must not count as verified.
        raise ArtifactError(_unpinned(rel, http.source))
    hit = _cache_hit(path, rel.sha256)
    # A deb tar has no pinned hash of its own: it is current only if it holds exactly the
    # packages the manifest lists now (the dependency list can change within one version).
    if hit is not None and (
        rel.kind != "deb" or set(tar_files(path)) == {d.filename for d in rel.debs}
    ):
        return hit
    if mirror is not None:
        url = f"{mirror}/{rel.layout_path}"
        sha = _fetch_from_mirror(rel, url, path, http)
    elif rel.kind == "deb":
        sha = _build_debs(rel, path, http)
    else:
        assert rel.url is not None  # the manifest requires a url for non-deb kinds
        assert rel.sha256 is not None  # refused above
        sha = _download(http.rewrite(rel.url), path, rel.sha256, _what(rel), http)
    write_atomic(record_path(path), record_text(sha, path.name).encode())
    return sha


def _cache_hit(path: Path, want: str | None) -> str | None:
    """The recorded sha256 if ``path`` is cached, matches its record and ``want``."""
    rec = record_path(path)
    if not path.is_file() or not rec.is_file():
        return None
    parts = rec.read_text().split()
    recorded = parts[0] if parts else ""
    if want is not None and recorded != want:
        return None  # the manifest moved on (or the record is stale): fetch again
    # Re-hash: a cache damaged on disk must not be copied to hosts.
    return recorded if sha256_file_cached(path, hash_cache()) == recorded else None


def _unpinned(rel: Release, source: str) -> str:
    # A source cannot vouch for its own files: a `.sha256` beside a tampered binary (on a
    # mirror, or upstream's release page) would match it. Only the packaged manifest's pins
    # count. `validate` refuses such a spec already (spec rule artifacts_pinned); this is
    # the same refusal for callers that fetch without one.
    return (f"{_what(rel)}: no sha256 is pinned for this version in the packaged manifest "
            f"(provisioner/versions/artifacts.yaml), and the {source} source's own checksums "
            "are never trusted. Fix: use `artifacts.source: local` with a source made by "
            "`provisioner artifacts build` (built from pinned source), or pin the official "
            "sha256 there")


def _fetch_from_mirror(rel: Release, url: str, path: Path, http: _Http) -> str:
    published: str | None = None
    if rel.kind == "deb":
        # The tar's own hash is only a transfer check: every .deb inside is verified
        # against the packaged manifest's pins.
        beside = _get_text(http.rewrite(url + ".sha256"), _what(rel), http, missing_ok=True)
        published = parse_checksum_file(beside, rel.file) if beside is not None else None
    expected = rel.sha256
    if rel.kind == "deb":
        # Debian publishes hashes of the .debs, not of our tar: verify each package inside.
        sha = _download(http.rewrite(url), path, published, _what(rel), http,
                        check=lambda tmp: _check_debs(rel, tmp, url))
        return sha
    assert expected is not None  # refused by _ensure
    return _download(http.rewrite(url), path, expected, _what(rel), http)


def _check_debs(rel: Release, tar_path: Path, where: str,
                fix: str = "rebuild the mirror's copy with `provisioner artifacts bundle`"
                ) -> None:
    """Every .deb in the tar is one the packaged manifest pins, with its Debian sha256."""
    want = {d.filename: d.sha256 for d in rel.debs}
    got: dict[str, str] = {}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m) if m.isfile() else None
                if f is not None:
                    got[PurePosixPath(m.name).name] = sha256_stream(f)
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"{_what(rel)}: {where} is not a readable tar of .deb files: "
                            f"{exc}. Fix: {fix}") from None
    if got != want:
        bad = sorted(n for n in set(want) | set(got) if want.get(n) != got.get(n))
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise ArtifactError(
            f"{_what(rel)}: {where}: the packages inside do not match the manifest's Debian "
            f"sha256s ({shown}); refusing it. Fix: {fix}"
        )


def _build_debs(rel: Release, path: Path, http: _Http) -> str:
    """Download each .deb (verified against Debian's hash) and tar them reproducibly."""
    debs_dir = path.parent / "debs"
    members: list[tuple[str, Path]] = []
    for d in rel.debs:
        deb = debs_dir / d.filename
        if _cache_hit(deb, d.sha256) is None:
            _download(http.rewrite(d.url), deb, d.sha256, f"{_what(rel)} ({d.filename})", http)
            write_atomic(record_path(deb), record_text(d.sha256, deb.name).encode())
        members.append((d.filename, deb))
    write_tar(members, path)
    return sha256_file(path)


def _open(url: str, what: str, http: _Http) -> Any:
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "provisioner"})
        return urllib.request.urlopen(req, timeout=http.timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise ArtifactError(
            f"{what}: {url} answered HTTP {exc.code} ({http.source} source). Fix: {http.fix}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ArtifactError(
            f"{what}: cannot download {url} ({http.source} source): {reason}. Fix: {http.fix}"
        ) from None


def _get_text(url: str, what: str, http: _Http, missing_ok: bool = False) -> str | None:
    """A small text file (a checksum), or None if ``missing_ok`` and the server says 404."""
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "provisioner"})
        with urllib.request.urlopen(req, timeout=http.timeout) as resp:
            return cast(bytes, resp.read(1 << 20)).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        exc.close()
        if missing_ok and exc.code == 404:
            return None
        raise ArtifactError(
            f"{what}: checksum file {url} answered HTTP {exc.code} ({http.source} source). "
            f"Fix: {http.fix}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ArtifactError(
            f"{what}: cannot download checksum file {url} ({http.source} source): {reason}. "
            f"Fix: {http.fix}"
        ) from None


def _download(
    url: str,
    dest: Path,
    expected: str | None,
    what: str,
    http: _Http,
    check: Callable[[Path], None] | None = None,
) -> str:
    """Stream ``url`` into ``dest`` through a temp file; keep it only if it verifies."""
    tmp = temp_beside(dest)
    h = hashlib.sha256()
    try:
        with _open(url, what, http) as resp, tmp.open("wb") as out:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except OSError as exc:
                    raise ArtifactError(
                        f"{what}: download of {url} broke off: {exc}. Fix: {http.fix}"
                    ) from None
                if not chunk:
                    break
                h.update(chunk)
                out.write(chunk)
        got = h.hexdigest()
        if expected is not None and got != expected:
            raise ArtifactError(
                f"{what}: {url}: sha256 mismatch: expected {expected}, got {got}; the file was "
                "refused and not cached (corrupted download or tampered file). Fix: retry; if "
                f"it persists, the source serves a different file than the manifest pins"
            )
        if check is not None:
            check(tmp)
        tmp.chmod(0o644)
        os.replace(tmp, dest)
        return got
    finally:
        tmp.unlink(missing_ok=True)


def _install_for(
    name: str, version: str, kind: Kind, path: Path, sha: str,
    items: tuple[InstallItem, ...], cache: bool,
) -> tuple[InstallItem, ...]:
    """Check the file is what its kind says, and spell tar members as the archive does."""
    what = f"artifact {name} {version}"
    if kind == "binary":
        return items
    side = path.with_name(path.name + f".{name}.install.json")
    if cache and side.is_file():
        try:
            data = json.loads(side.read_text())
            if data.get("sha256") == sha and data.get("want") == [list(_row(i)) for i in items]:
                return tuple(InstallItem(*row) for row in data["install"])
        except (ValueError, TypeError, KeyError):
            pass  # unreadable side file: recompute below
    try:
        if kind == "deb":
            files = _tar_files_of(path, sha)
            if not files or any(not n.endswith(".deb") for n in files):
                raise ArtifactError(
                    f"{what}: {path} must be a tar holding only .deb files (has: "
                    f"{', '.join(sorted(files)[:8]) or 'nothing'})"
                )
            resolved: tuple[InstallItem, ...] = ()
        else:
            resolved, missing = resolve_members(path, items, _tar_files_of(path, sha))
            if missing:
                raise ArtifactError(
                    f"{what}: {path} lacks {', '.join(missing)} (has: "
                    f"{', '.join(sorted(tar_files(path))[:12])}). Fix: correct the install "
                    "members in the manifest"
                )
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"{what}: {path} is not a readable tar archive: {exc}") from None
    if cache:
        write_atomic(side, json.dumps({
            "sha256": sha, "want": [list(_row(i)) for i in items],
            "install": [list(_row(i)) for i in resolved],
        }).encode())
    return resolved


def _row(i: InstallItem) -> tuple[str, str, str]:
    return (i.member, i.dest, i.mode)


# --- local source -------------------------------------------------------------------------


def local_root(path: Path, cache_root: Path) -> Path:
    """The directory holding a local source: ``path`` itself, or a bundle extracted once."""
    if path.is_dir():
        return path
    if not path.is_file():
        raise ArtifactError(
            f"artifacts.path {path}: no such directory or bundle file. Fix: point it at a "
            "directory with manifest.json or a bundle made by `provisioner artifacts bundle`"
        )
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    dest = cache_root / "bundles" / key[:16]
    if (dest / ".complete").is_file():
        return dest
    tmp = temp_beside(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        with tarfile.open(path, "r:*") as tar:
            safe_extract(tar, tmp)
        if not (tmp / MANIFEST_JSON).is_file():
            raise ArtifactError(
                f"artifacts.path {path}: the bundle has no {MANIFEST_JSON} at its top. Fix: make "
                "it with `provisioner artifacts bundle FILE --out bundle.tar`"
            )
        (tmp / ".complete").write_text("")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    except UnsafeArchiveError as exc:
        raise ArtifactError(f"artifacts.path {path}: refusing the bundle: {exc}") from None
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"artifacts.path {path}: not a readable bundle tar: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def read_local_manifest(root: Path) -> dict[str, dict[str, Any]]:
    """The ``manifest.json`` of a local source, checked for shape."""
    mpath = root / MANIFEST_JSON
    try:
        data = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise ArtifactError(
            f"local artifact source {root}: no {MANIFEST_JSON}. Fix: use a directory made from "
            "a bundle (`provisioner artifacts bundle`), which lists every file and its sha256"
        ) from None
    except ValueError as exc:
        raise ArtifactError(f"local artifact source {mpath}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ArtifactError(f"local artifact source {mpath}: expected {{name: {{...}}}}")
    return cast(dict[str, dict[str, Any]], data)


def fetch_local(root: Path, names: Collection[str],
                releases: Mapping[str, Release] | None = None) -> dict[str, FetchedArtifact]:
    """Verify ``names`` in the local source at ``root``: each file against the sha256 its
    manifest.json records and, with ``releases`` (the packaged manifest's), its version,
    kind and install list against the packaged ones and its sha256 against a pinned one.
    A source never decides what is installed where."""
    manifest = read_local_manifest(root)
    missing = [n for n in names if n not in manifest]
    if missing:
        raise ArtifactError(
            f"artifact {', '.join(missing)}: not in the local source {root} (it has: "
            f"{', '.join(sorted(manifest)) or 'nothing'}). Fix: add "
            f"{'it' if len(missing) == 1 else 'them'} to the source, e.g. make the bundle with "
            "`provisioner artifacts bundle` on a machine with internet access"
        )
    out: dict[str, FetchedArtifact] = {}
    hashed: dict[Path, str] = {}
    for name in names:
        out[name] = _local_one(root, name, manifest[name], hashed,
                               None if releases is None else releases.get(name))
    return out


def _check_against_release(what: str, entry_version: str, kind: str,
                           items: tuple[InstallItem, ...], rel: Release) -> None:
    """Refuse a local entry that disagrees with the packaged manifest."""
    if entry_version != rel.version:
        raise ArtifactError(
            f"{what}: the local source holds version {entry_version}, but this cluster's "
            f"release pins {rel.version}. Fix: rebuild the source for the spec "
            "(`provisioner artifacts build FILE`)")
    def rows(xs: tuple[InstallItem, ...]) -> set[tuple[str, str, str]]:
        return {(i.member.removeprefix("./"), i.dest, i.mode) for i in xs}

    if kind != rel.kind or rows(items) != rows(rel.install):
        raise ArtifactError(
            f"{what}: the local source's kind or install list differs from the packaged "
            "manifest's (provisioner/versions/artifacts.yaml), which alone decides what is "
            "installed where; refusing it. Fix: rebuild the source with `provisioner "
            "artifacts build` or `provisioner artifacts bundle`")


def _check_pinned(what: str, path: Path, got: str, kind: Kind, built: object,
                  rel: Release) -> None:
    """Refuse a local file whose sha256 the packaged manifest does not vouch for.

    A downloaded file must be the official one (its pinned sha256; a ``deb`` tar holds
    exactly the pinned packages). A built one (the entry's ``built`` record, written by
    ``artifacts build``) is held to its build's manifest instead, as upstream's builds are
    not all byte-reproducible; only artifacts the packaged manifest builds from a recipe can
    be built ones, and the record must name that recipe.
    """
    if built is not None:
        recipe = built.get("recipe") if isinstance(built, dict) else None
        if rel.build_recipe is None or recipe != rel.build_recipe:
            expected = (f"recipe {rel.build_recipe!r}" if rel.build_recipe is not None
                        else "no recipe: it is never built here")
            raise ArtifactError(
                f"{what}: {path}: the local source says it was built "
                f"({_shown_record(built)}), but the packaged manifest names {expected}; "
                "refusing it. Fix: rebuild the source with `provisioner artifacts build`, or "
                "make a bundle of official files with `provisioner artifacts bundle`")
        return
    if kind == "deb":
        _check_debs(rel, path, str(path), "rebuild the local source with `provisioner "
                    "artifacts build` or `provisioner artifacts bundle`")
        return
    if rel.sha256 is None:
        # Without a pin the only sha256 is the one manifest.json gives: the source would be
        # vouching for itself.
        raise ArtifactError(
            f"{what}: {path}: no sha256 is pinned for this version in the packaged manifest "
            "(provisioner/versions/artifacts.yaml) and the local source does not say it was "
            "built, so nothing but the source itself vouches for the file; refusing it. Fix: "
            "pin the official sha256 there, or build the source with `provisioner artifacts "
            "build` (built from pinned source)")
    if got != rel.sha256:
        raise ArtifactError(
            f"{what}: {path}: sha256 {got} differs from the official sha256 pinned in "
            f"the packaged manifest ({rel.sha256}); refusing it")


def _shown_record(built: object) -> str:
    text = json.dumps(built, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:119] + "…"


def _local_one(
    root: Path, name: str, entry: Mapping[str, Any], hashed: dict[Path, str],
    release: Release | None = None,
) -> FetchedArtifact:
    version = str(entry.get("version", ""))
    what = f"artifact {name} {version}".rstrip()
    try:
        rel = str(entry["file"])
        want = str(entry["sha256"]).lower()
        kind = cast(Kind, str(entry["kind"]))
        items = tuple(
            InstallItem(str(i["member"]), str(i["dest"]), str(i["mode"]))
            for i in entry.get("install", [])
        )
    except (KeyError, TypeError) as exc:
        raise ArtifactError(
            f"{what}: {root / MANIFEST_JSON}: entry lacks {exc}; each needs version, file, "
            "sha256, kind, install"
        ) from None
    if kind not in KINDS or not version:
        raise ArtifactError(f"{what}: {root / MANIFEST_JSON}: kind must be one of "
                            f"{', '.join(KINDS)} and version set")
    if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
        raise ArtifactError(f"{what}: {root / MANIFEST_JSON}: file {rel!r} leaves the source")
    path = root / rel
    if not path.is_file():
        raise ArtifactError(
            f"{what}: {path} is listed in {MANIFEST_JSON} but missing. Fix: restore it or "
            "rebuild the bundle"
        )
    if path not in hashed:
        hashed[path] = sha256_file_cached(path, hash_cache())
    got = hashed[path]
    if got != want:
        raise ArtifactError(
            f"{what}: {path}: sha256 mismatch: {MANIFEST_JSON} says {want}, the file has {got}. "
            "The file was changed or corrupted and is refused (a local source is never "
            "re-downloaded). Fix: restore the file or rebuild the bundle"
        )
    built = entry.get("built")
    if release is not None:
        _check_against_release(what, version, kind, items, release)
        _check_pinned(what, path, got, kind, built, release)
        items = release.install
    install = _install_for(name, version, kind, path, got, items, cache=False)
    record = tuple(sorted((str(k), str(v)) for k, v in built.items())) \
        if isinstance(built, dict) else ()
    return FetchedArtifact(name=name, version=version, path=path, sha256=got, kind=kind,
                           install=install, built=record)
