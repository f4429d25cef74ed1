"""Artifacts: online, mirror and local sources, verification, cache, bundles and the CLI.

Scope: everything over HTTP talks to a server on 127.0.0.1 that serves files these tests make
(a manifest built here points at it); nothing else is contacted. The ``lab`` test builds the
Debian-package local source (network to Debian's archive, root) and fetches from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import re
import subprocess
import tarfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provisioner.artifacts import (
    ArtifactError,
    DebFile,
    FetchedArtifact,
    InstallItem,
    Manifest,
    artifacts_extravars,
    default_manifest,
    fetch,
    needed,
    write_bundle,
)
from provisioner.artifacts.files import parse_checksum_file
from provisioner.artifacts.model import Release as Pinned
from provisioner.plan import Plan, build_plan
from provisioner.spec import parse
from provisioner.versions import manifest as versions

ROOT = Path(__file__).resolve().parents[1]
FAKE_BASE = "https://downloads.test"  # never resolved: every URL is rewritten to the server
SOME = ("etcd", "etcdctl", "runc", "kube-apiserver", "haproxy")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- a local HTTP server serving what the test puts in `files` -------------------------------


@dataclass
class Server:
    """Files served at ``base + path``; ``requests`` lists every path asked for."""

    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def rewrite(self, url: str) -> str:
        assert url.startswith(FAKE_BASE), url
        return self.base + url[len(FAKE_BASE):]


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- a cluster and a manifest whose files the server holds ------------------------------------


def cluster_plan(extra: str = "") -> Plan:
    """The plan of a small nspawn cluster; its artifacts section is ``extra``'s, else a
    local source (the default, online, is refused for releases with unpinned artifacts)."""
    if "artifacts:" not in extra:
        extra += "  artifacts: {source: local, path: unused}\n"
    text = ("apiVersion: provisioner.dev/v1alpha1\nkind: Cluster\nmetadata: {name: art}\n"
            "spec:\n  provider: {type: nspawn}\n" + extra)
    return build_plan(parse(text, "test.yaml"))


def sourced(plan: Plan, **artifacts: Any) -> Plan:
    """``plan`` with ``artifacts`` (``source``, ``mirror_url``, ``path``) set on its spec.

    An online or mirror spec of a release with unpinned artifacts is not a valid spec
    (spec rule ``artifacts_pinned``); fetch tests pin their own made-up manifest, so they
    set the source on the plan rather than writing it into a spec.
    """
    spec = plan.cluster.spec
    art = spec.artifacts.model_copy(update=artifacts)
    cluster = plan.cluster.model_copy(
        update={"spec": spec.model_copy(update={"artifacts": art})})
    return dataclasses.replace(plan, cluster=cluster)


def online_plan() -> Plan:
    return sourced(cluster_plan(), source="online", path=None)


@dataclass
class Release:
    """The fake upstream release: file bytes per artifact, and the manifest describing them."""

    plan: Plan
    etcd_tar: bytes
    runc: bytes
    apiserver: bytes
    debs: dict[str, bytes]
    manifest: Manifest

    @property
    def etcd_v(self) -> str:
        return self.plan.release.component("etcd")


def make_release(srv: Server, plan: Plan) -> Release:
    """Every file pinned in the manifest; the server also publishes upstream-style checksum
    files (``.sha256``) beside kube-apiserver, which nothing may read."""
    ev = plan.release.component("etcd")
    rv = plan.release.component("runc")
    etcd_tar = tgz({f"etcd-v{ev}-linux-amd64/etcd": b"etcd-bin",
                    f"etcd-v{ev}-linux-amd64/etcdctl": b"etcdctl-bin",
                    f"etcd-v{ev}-linux-amd64/README.md": b"doc"})
    runc = b"runc-binary" * 100
    apiserver = b"apiserver" * 1000
    debs = {"liblua_1_amd64.deb": b"lua-deb", "haproxy_2.6_amd64.deb": b"haproxy-deb"}
    srv.files.update({
        f"/etcd/v{ev}/etcd-v{ev}-linux-amd64.tar.gz": etcd_tar,
        f"/runc/v{rv}/runc.amd64": runc,
        f"/k8s/v{plan.version}/kube-apiserver": apiserver,
        f"/k8s/v{plan.version}/kube-apiserver.sha256": sha(apiserver).encode(),
        **{f"/debian/{n}": b for n, b in debs.items()},
    })
    manifest = Manifest.from_dict({"artifacts": {
        "etcd": {
            "version_from": "etcd", "kind": "tar", "file": "etcd-v{version}-linux-amd64.tar.gz",
            "url": FAKE_BASE + "/etcd/v{version}/{file}", "sha256": {ev: sha(etcd_tar)},
            "install": [{"member": "etcd-v{version}-linux-amd64/etcd",
                         "dest": "/usr/local/bin/etcd", "mode": "0755"}],
        },
        "etcdctl": {
            "version_from": "etcd", "same_file_as": "etcd",
            "install": [{"member": "./etcd-v{version}-linux-amd64/etcdctl",
                         "dest": "/usr/local/bin/etcdctl", "mode": "0755"}],
        },
        "runc": {
            "version_from": "runc", "kind": "binary", "file": "runc.amd64",
            "url": FAKE_BASE + "/runc/v{version}/{file}", "sha256": {rv: sha(runc)},
            "install": [{"member": "", "dest": "/usr/local/sbin/runc", "mode": "0755"}],
        },
        "kube-apiserver": {
            "version_from": "kubernetes", "kind": "binary", "file": "kube-apiserver",
            "url": FAKE_BASE + "/k8s/v{version}/{file}",
            "sha256": {plan.version: sha(apiserver)},
            "install": [{"member": "", "dest": "/usr/local/bin/kube-apiserver", "mode": "0755"}],
        },
        "haproxy": {
            "version": "2.6-1", "kind": "deb", "file": "haproxy_{version}_debs.tar",
            "debs": [{"url": f"{FAKE_BASE}/debian/{n}", "sha256": sha(b)}
                     for n, b in debs.items()],
            "install": [],
        },
    }})
    return Release(plan, etcd_tar, runc, apiserver, debs, manifest)


def fetch_online(rel: Release, srv: Server, cache: Path) -> dict[str, FetchedArtifact]:
    return fetch(rel.plan, cache, ROOT, names=SOME, manifest=rel.manifest,
                 url_rewrite=srv.rewrite, timeout=5)


def pinned(man: Manifest, name: str, shas: Mapping[str, str]) -> Manifest:
    """``man`` with the sha256 pins of ``name`` replaced by ``shas`` ({version: sha256})."""
    return Manifest({**man.entries, name: dataclasses.replace(man.entry(name), sha256=shas)})


# --- online -----------------------------------------------------------------------------------


def test_online_fetch_verifies_then_second_fetch_uses_the_cache(
    server: Server, tmp_path: Path
) -> None:
    rel = make_release(server, online_plan())
    got = fetch_online(rel, server, tmp_path / "cache")

    assert set(got) == set(SOME)
    etcd, etcdctl = got["etcd"], got["etcdctl"]
    assert etcd.path == etcdctl.path == (
        tmp_path / "cache" / "etcd" / rel.etcd_v / f"etcd-v{rel.etcd_v}-linux-amd64.tar.gz")
    assert etcd.sha256 == sha(rel.etcd_tar) and etcd.kind == "tar"
    # Members are reported as the archive spells them, whatever the manifest's "./" prefix.
    assert etcdctl.install == (InstallItem(f"etcd-v{rel.etcd_v}-linux-amd64/etcdctl",
                                           "/usr/local/bin/etcdctl", "0755"),)
    assert got["runc"].path.read_bytes() == rel.runc
    assert got["kube-apiserver"].sha256 == sha(rel.apiserver)
    assert (got["runc"].path.parent / "runc.amd64.sha256").read_text().split()[0] == sha(rel.runc)
    with tarfile.open(got["haproxy"].path) as tar:
        assert sorted(tar.getnames()) == sorted(rel.debs)
    assert got["haproxy"].kind == "deb" and got["haproxy"].install == ()
    # The shared etcd tarball is downloaded once; upstream's checksum files are never read.
    assert sum("/etcd/" in r for r in server.requests) == 1
    assert not [r for r in server.requests if r.endswith((".sha256", "SUMS", ".sha256sum"))]

    before = len(server.requests)
    again = fetch_online(rel, server, tmp_path / "cache")
    assert len(server.requests) == before, "a cached verified file must not be fetched again"
    assert again == got


def test_online_corrupted_file_is_refused_and_not_cached(server: Server, tmp_path: Path) -> None:
    rel = make_release(server, online_plan())
    rv = rel.plan.release.component("runc")
    bad = b"evil" + rel.runc[4:]
    server.files[f"/runc/v{rv}/runc.amd64"] = bad

    with pytest.raises(ArtifactError) as exc:
        fetch_online(rel, server, tmp_path / "cache")
    msg = str(exc.value)
    assert "artifact runc" in msg and sha(rel.runc) in msg and sha(bad) in msg
    assert f"{server.base}/runc/v{rv}/runc.amd64" in msg
    runc_dir = tmp_path / "cache" / "runc" / rv
    assert not runc_dir.exists() or list(runc_dir.iterdir()) == []  # no file, no temp left


def test_online_never_reads_upstreams_checksum_file(server: Server, tmp_path: Path) -> None:
    """An artifact the manifest pins no sha256 for is refused online, even though upstream
    serves it with a matching checksum file: that file comes from where the artifact does.
    Neither is ever requested, and a copy cached earlier does not count."""
    plan = online_plan()
    rel = make_release(server, plan)
    unpinned = pinned(rel.manifest, "kube-apiserver", {})
    checksum = f"/k8s/v{plan.version}/kube-apiserver.sha256"
    assert server.files[checksum] == sha(rel.apiserver).encode()  # upstream would vouch

    def get(names: list[str]) -> dict[str, FetchedArtifact]:
        return fetch(plan, tmp_path / "c", ROOT, names=names, manifest=unpinned,
                     url_rewrite=server.rewrite, timeout=5)

    with pytest.raises(ArtifactError) as exc:
        get(list(SOME))
    msg = str(exc.value)
    assert msg.startswith("artifacts.source: 'online' trusts only sha256s pinned in the "
                          f"packaged manifest; unpinned in Kubernetes {plan.version}: "
                          "kube-apiserver. Fix: `artifacts.source: local` from "
                          "`provisioner artifacts build FILE`"), msg
    assert server.requests == [], "nothing is downloaded when an artifact is unpinned"

    # Pinned, it downloads and is cached; unpinned again (an older release that trusted the
    # checksum file left such a copy), the cached copy is refused before it is looked at.
    got = fetch(plan, tmp_path / "c", ROOT, names=["kube-apiserver"], manifest=rel.manifest,
                url_rewrite=server.rewrite, timeout=5)
    assert got["kube-apiserver"].path.is_file()
    with pytest.raises(ArtifactError, match=r"unpinned in Kubernetes .*: kube-apiserver"):
        get(["kube-apiserver"])
    # The per-file guard under fetch (artifacts build fetches Debian packages through it).
    fetch_module = importlib.import_module("provisioner.artifacts.fetch")
    with pytest.raises(ArtifactError) as exc:
        fetch_module.fetch_online([unpinned.release_for("kube-apiserver", plan)],
                                  tmp_path / "c", timeout=5)
    assert str(exc.value).startswith(f"artifact kube-apiserver {plan.version}: no sha256 is "
                                     "pinned"), exc.value
    assert "source's own checksums are never trusted" in str(exc.value)
    assert checksum not in server.requests
    assert [r for r in server.requests if r.startswith("/k8s/")] == [
        f"/k8s/v{plan.version}/kube-apiserver"]  # the one pinned download


def test_a_damaged_cached_download_is_fetched_again(server: Server, tmp_path: Path) -> None:
    """The download cache is re-hashed before use: a cached file changed on disk (its
    record beside it, or both) is never handed on; the pinned file is downloaded again."""
    rel = make_release(server, online_plan())
    cache = tmp_path / "c"

    def get() -> FetchedArtifact:
        return fetch(rel.plan, cache, ROOT, names=["runc"], manifest=rel.manifest,
                     url_rewrite=server.rewrite, timeout=5)["runc"]

    path = get().path
    for record_too in (False, True):
        path.write_bytes(b"tampered runc")
        if record_too:
            path.with_name(path.name + ".sha256").write_text(
                f"{sha(b'tampered runc')}  runc.amd64\n")
        before = len(server.requests)
        again = get()
        assert again.sha256 == sha(rel.runc) and path.read_bytes() == rel.runc
        assert len(server.requests) == before + 1


def test_online_missing_file_names_artifact_url_and_fix(server: Server, tmp_path: Path) -> None:
    rel = make_release(server, online_plan())
    server.files.clear()
    with pytest.raises(ArtifactError) as exc:
        fetch_online(rel, server, tmp_path / "cache")
    msg = str(exc.value)
    assert "HTTP 404" in msg and server.base in msg
    assert "artifacts.source: local with a bundle" in msg


def test_checksum_file_shapes() -> None:
    a, b = "a" * 64, "b" * 64
    assert parse_checksum_file(f"{a}\n", "kubelet") == a
    sums = f"{a}  etcd-v3.5.16-darwin-amd64.zip\n{b}  etcd-v3.5.16-linux-amd64.tar.gz\n"
    assert parse_checksum_file(sums, "etcd-v3.5.16-linux-amd64.tar.gz") == b
    assert parse_checksum_file(f"{b} *runc.amd64\n{a}  runc.arm64\n", "runc.amd64") == b
    assert parse_checksum_file(sums, "other") is None


# --- mirror -----------------------------------------------------------------------------------


def mirror_plan(srv: Server) -> Plan:
    return sourced(cluster_plan(), source="mirror", mirror_url=f"{srv.base}/mirror", path=None)


def publish_bundle(srv: Server, bundle: Path, prefix: str) -> None:
    """Serve an extracted bundle: the mirror layout is the bundle layout."""
    with tarfile.open(bundle) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            if f is not None:
                srv.files[f"{prefix}/{m.name}"] = f.read()


def test_mirror_fetch_with_the_bundle_layout(server: Server, tmp_path: Path) -> None:
    online = make_release(server, online_plan())
    fetched = fetch_online(online, server, tmp_path / "c1")
    bundle = write_bundle(fetched, tmp_path / "b.tar", online.manifest)
    publish_bundle(server, bundle, "/mirror")
    plan = mirror_plan(server)

    got = fetch(plan, tmp_path / "c2", ROOT, names=SOME, manifest=online.manifest, timeout=5)
    assert {n: f.sha256 for n, f in got.items()} == {n: f.sha256 for n, f in fetched.items()}
    # Binaries and tars are checked against the pins alone: the mirror's own .sha256 files
    # beside them (the bundle carries them) are never read (a deb tar's .debs are pinned).
    assert [r for r in server.requests if r.startswith("/mirror/") and r.endswith(".sha256")
            and not r.startswith("/mirror/haproxy/")] == []

    # A mirror whose file differs from the pinned sha256 is refused, even with a matching
    # .sha256 beside it.
    rv = plan.release.component("runc")
    path = f"/mirror/runc/{rv}/runc.amd64"
    server.files[path] = b"tampered"
    server.files[path + ".sha256"] = f"{sha(b'tampered')}  runc.amd64\n".encode()
    with pytest.raises(ArtifactError, match=f"artifact runc {rv}: .*sha256 mismatch"):
        fetch(plan, tmp_path / "c3", ROOT, names=["runc"], manifest=online.manifest, timeout=5)


def test_mirror_deb_tar_with_a_foreign_package_is_refused(server: Server, tmp_path: Path) -> None:
    online = make_release(server, online_plan())
    plan = mirror_plan(server)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {**online.debs, "haproxy_2.6_amd64.deb": b"other"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    server.files["/mirror/haproxy/2.6-1/haproxy_2.6-1_debs.tar"] = buf.getvalue()
    with pytest.raises(ArtifactError, match=r"artifact haproxy 2\.6-1: .*haproxy_2\.6_amd64\.deb"):
        fetch(plan, tmp_path / "c", ROOT, names=["haproxy"], manifest=online.manifest, timeout=5)
    assert not (tmp_path / "c" / "haproxy" / "2.6-1" / "haproxy_2.6-1_debs.tar").exists()


@pytest.mark.parametrize("name", ["kube-apiserver", "etcd"])
def test_mirror_never_trusts_its_own_checksum_file(
    server: Server, tmp_path: Path, name: str
) -> None:
    """A tampered file with a matching .sha256 beside it is refused: unpinned, because the
    mirror cannot vouch for itself; pinned, because it is not the pinned file."""
    online = make_release(server, online_plan())
    plan = mirror_plan(server)
    rel = online.manifest.release_for(name, plan)
    genuine = online.apiserver if name == "kube-apiserver" else online.etcd_tar
    # Same shape as the genuine file (a tar still holds the install members).
    tampered = b"evil" if rel.kind == "binary" else tgz({i.member: b"evil" for i in rel.install})
    url = f"/mirror/{rel.layout_path}"
    server.files[url] = tampered
    server.files[url + ".sha256"] = f"{sha(tampered)}  {rel.file}\n".encode()
    cached = tmp_path / "c" / rel.layout_path

    def get(man: Manifest) -> dict[str, FetchedArtifact]:
        return fetch(plan, tmp_path / "c", ROOT, names=[name], manifest=man, timeout=5)

    unpinned = pinned(online.manifest, name, {})
    with pytest.raises(ArtifactError) as exc:
        get(unpinned)
    msg = str(exc.value)
    listed = "" if rel.version == plan.version else f" {rel.version}"
    assert msg.startswith("artifacts.source: 'mirror' trusts only sha256s pinned in the "
                          f"packaged manifest; unpinned in Kubernetes {plan.version}: "
                          f"{name}{listed}. Fix: "), msg
    assert not cached.exists()
    assert server.requests == [], "nothing is asked of a mirror for an unpinned artifact"
    # Not even the genuine file is taken from the mirror without a pin.
    server.files[url] = genuine
    server.files[url + ".sha256"] = f"{sha(genuine)}  {rel.file}\n".encode()
    with pytest.raises(ArtifactError, match="trusts only sha256s pinned"):
        get(unpinned)
    assert not cached.exists() and server.requests == []

    with_pin = pinned(online.manifest, name, {rel.version: sha(genuine)})
    server.files[url] = tampered
    server.files[url + ".sha256"] = f"{sha(tampered)}  {rel.file}\n".encode()
    with pytest.raises(ArtifactError) as exc:
        get(with_pin)
    msg = str(exc.value)
    assert f"artifact {name} {rel.version}: " in msg and "sha256 mismatch" in msg
    assert sha(genuine) in msg and sha(tampered) in msg
    assert not cached.exists()

    # The pin alone decides: the genuine file passes even beside a wrong .sha256.
    server.files[url] = genuine
    got = get(with_pin)
    assert got[name].sha256 == sha(genuine) and cached.read_bytes() == genuine


# --- local: bundle round trip, tampering, missing artifacts -----------------------------------


def local_plan(path: Path) -> Plan:
    return cluster_plan(f"  artifacts: {{source: local, path: '{path}'}}\n")


def test_bundle_round_trip_through_a_local_source(server: Server, tmp_path: Path) -> None:
    online = make_release(server, online_plan())
    fetched = fetch_online(online, server, tmp_path / "cache")
    bundle = write_bundle(fetched, tmp_path / "out" / "bundle.tar", online.manifest)
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert f"etcd/{online.etcd_v}/etcd-v{online.etcd_v}-linux-amd64.tar.gz" in names
    assert f"etcd/{online.etcd_v}/etcd-v{online.etcd_v}-linux-amd64.tar.gz.sha256" in names
    assert manifest["etcdctl"]["file"] == manifest["etcd"]["file"]

    # A relative artifacts.path resolves against the spec's directory.
    plan = local_plan(Path("out/bundle.tar"))
    before = len(server.requests)
    # Without its pin, only the bundle's own manifest.json would vouch for kube-apiserver.
    unpinned = pinned(online.manifest, "kube-apiserver", {})
    with pytest.raises(ArtifactError, match=r"artifact kube-apiserver .*no sha256 is pinned"):
        fetch(plan, tmp_path / "cache2", tmp_path, names=SOME, manifest=unpinned)
    man = online.manifest
    got = fetch(plan, tmp_path / "cache2", tmp_path, names=SOME, manifest=man)
    assert len(server.requests) == before, "a local source never touches the network"
    for name in SOME:
        assert (got[name].sha256, got[name].version, got[name].kind, got[name].install) == (
            fetched[name].sha256, fetched[name].version, fetched[name].kind,
            fetched[name].install)
    again = fetch(plan, tmp_path / "cache2", tmp_path, names=SOME, manifest=man)
    assert again["runc"].path == got["runc"].path  # extracted once, reused
    # Bundles are reproducible: the same artifacts give the same bytes.
    second = write_bundle(fetched, tmp_path / "again.tar", online.manifest)
    assert sha(second.read_bytes()) == sha(bundle.read_bytes())


def fake_deb(filename: str) -> bytes:
    return f"{filename} test bytes".encode()


def with_fake_debs(man: Manifest) -> Manifest:
    """``man`` with every Debian package pinned to ``fake_deb``'s bytes."""
    return Manifest({name: dataclasses.replace(e, debs=tuple(
        DebFile(d.url, sha(fake_deb(d.filename))) for d in e.debs))
        for name, e in man.entries.items()})


def fake_file(rels: list[Pinned]) -> bytes:
    """Made-up bytes shaped like the file ``rels`` share: a tar holds their install members."""
    first = rels[0]
    if first.kind == "binary":
        return f"{first.name} test bytes".encode()
    if first.kind == "deb":
        return tgz({d.filename: fake_deb(d.filename) for d in first.debs})
    return tgz({i.member: f"{i.member} test bytes".encode() for r in rels for i in r.install})


def make_local_dir(
    root: Path, plan: Plan, names: Iterable[str], *, manifest: Manifest | None = None,
    data: Mapping[str, bytes] | None = None, built: bool = False,
    changes: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """A local source holding ``names`` as ``plan``'s release and ``manifest`` (default: the
    packaged one) pin them: version, kind, layout and install list, with a manifest.json.

    Each file is ``data[name]`` or made-up bytes of its kind (see ``fake_file``). ``built``
    marks the non-Debian entries as `provisioner artifacts build` does (its sha256 is then
    not the official one); ``changes`` is merged into an entry of manifest.json.
    """
    man = manifest if manifest is not None else default_manifest()
    rels = [man.release_for(n, plan) for n in names]
    shared: dict[str, list[Pinned]] = {}
    for r in rels:
        shared.setdefault(r.layout_path, []).append(r)
    content: dict[str, bytes] = {}
    for layout, group in shared.items():
        given = [data[r.name] for r in group if data is not None and r.name in data]
        content[layout] = given[0] if given else fake_file(group)
        (root / layout).parent.mkdir(parents=True, exist_ok=True)
        (root / layout).write_bytes(content[layout])
    entries: dict[str, Any] = {}
    for r in rels:
        entry: dict[str, Any] = {
            "version": r.version, "file": r.layout_path, "sha256": sha(content[r.layout_path]),
            "kind": r.kind,
            "install": [{"member": i.member, "dest": i.dest, "mode": i.mode} for i in r.install],
        }
        if built and r.build_recipe is not None:
            entry["built"] = {"recipe": r.build_recipe, "key": "test", "go": "go1.0"}
        entries[r.name] = {**entry, **(changes or {}).get(r.name, {})}
    (root / "manifest.json").write_text(json.dumps(entries))
    return root


def as_bundle(src: Path, out: Path) -> Path:
    """The local source directory ``src`` as a bundle tar (manifest.json at its top)."""
    with tarfile.open(out, "w") as tar:
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            tar.add(f, f.relative_to(src).as_posix())
    return out


def test_local_dir_with_a_tampered_file_is_refused(tmp_path: Path) -> None:
    plan = cluster_plan()
    rv = plan.release.component("runc")
    src = make_local_dir(tmp_path / "src", plan, ["runc"], data={"runc": b"good runc"},
                         built=True)
    plan = local_plan(src)
    assert fetch(plan, tmp_path / "c", tmp_path, names=["runc"])["runc"].sha256 == sha(b"good runc")

    (src / f"runc/{rv}/runc.amd64").write_bytes(b"bad runc")
    with pytest.raises(ArtifactError) as exc:
        fetch(plan, tmp_path / "c", tmp_path, names=["runc"])
    msg = str(exc.value)
    assert f"artifact runc {rv}" in msg and sha(b"good runc") in msg and sha(b"bad runc") in msg
    assert "never re-downloaded" in msg


def test_local_source_missing_an_artifact_names_it(tmp_path: Path) -> None:
    src = make_local_dir(tmp_path / "src", cluster_plan(), ["runc"], built=True)
    with pytest.raises(ArtifactError) as exc:
        fetch(local_plan(src), tmp_path / "c", tmp_path, names=["runc", "kube-apiserver"])
    msg = str(exc.value)
    assert msg.startswith("artifact kube-apiserver: not in the local source")
    assert "it has: runc" in msg and "provisioner artifacts bundle" in msg


def test_local_tar_member_missing_is_refused(tmp_path: Path) -> None:
    plan = cluster_plan()
    cv = re.escape(plan.release.component("crictl"))
    src = make_local_dir(tmp_path / "src", plan, ["crictl"], data={"crictl": tgz({"other": b"x"})},
                         built=True)
    with pytest.raises(ArtifactError, match=rf"artifact crictl {cv}: .* lacks crictl"):
        fetch(local_plan(src), tmp_path / "c", tmp_path, names=["crictl"])


def test_local_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such directory or bundle file"):
        fetch(local_plan(tmp_path / "nope.tar"), tmp_path / "c", tmp_path)


def packaged_install(name: str, plan: Plan) -> list[dict[str, str]]:
    rel = default_manifest().release_for(name, plan)
    return [{"member": i.member, "dest": i.dest, "mode": i.mode} for i in rel.install]


@pytest.mark.parametrize("as_tar", [False, True], ids=["dir", "bundle"])
@pytest.mark.parametrize("name, change", [
    ("runc", lambda items: [{**items[0], "dest": "/etc/sudoers.d/x"}]),
    ("runc", lambda items: [{**items[0], "mode": "4777"}]),
    ("runc", lambda items: [*items, {"member": "", "dest": "/etc/sudoers.d/x", "mode": "0440"}]),
    ("etcdctl", lambda items: [{**items[0], "dest": "/etc/sudoers.d/x"}, *items[1:]]),
    ("etcdctl", lambda items: items[:1]),  # installs less than the packaged manifest says
], ids=["dest", "setuid-mode", "extra-dest", "tar-member-dest", "missing-item"])
def test_local_source_cannot_choose_what_is_installed_where(
    tmp_path: Path, as_tar: bool, name: str, change: Any
) -> None:
    plan = cluster_plan()
    names = ["etcd", "etcdctl", "runc"]
    install = change(packaged_install(name, plan))
    src = make_local_dir(tmp_path / "src", plan, names, built=True,
                         changes={name: {"install": install}})
    path = as_bundle(src, tmp_path / "bundle.tar") if as_tar else src
    with pytest.raises(ArtifactError) as exc:
        fetch(local_plan(path), tmp_path / "c", tmp_path, names=names)
    msg = str(exc.value)
    assert msg.startswith(f"artifact {name} {default_manifest().pinned_version(name, plan)}: ")
    assert "kind or install list differs from the packaged manifest" in msg

    # The same source as the packaged manifest describes it is accepted, with its layout.
    good = make_local_dir(tmp_path / "good", plan, names, built=True)
    path = as_bundle(good, tmp_path / "good.tar") if as_tar else good
    got = fetch(local_plan(path), tmp_path / "c", tmp_path, names=names)
    assert [{"member": i.member, "dest": i.dest, "mode": i.mode}
            for i in got[name].install] == packaged_install(name, plan)


@pytest.mark.parametrize("name, kind", [("runc", "tar"), ("haproxy", "tar"), ("etcd", "deb")])
def test_local_source_cannot_change_an_artifacts_kind(
    tmp_path: Path, name: str, kind: str
) -> None:
    """Only the kind differs (same install list): refused all the same."""
    plan = cluster_plan()
    src = make_local_dir(tmp_path / "src", plan, [name], built=True,
                         changes={name: {"kind": kind}})
    with pytest.raises(ArtifactError, match="kind or install list differs"):
        fetch(local_plan(src), tmp_path / "c", tmp_path, names=[name])


@pytest.mark.parametrize("as_tar", [False, True], ids=["dir", "bundle"])
def test_local_source_of_another_release_is_refused(tmp_path: Path, as_tar: bool) -> None:
    plan = cluster_plan()
    other = next(v for v in versions.supported_versions() if v != plan.version)
    # A source built for another Kubernetes version, consistent in itself.
    src = make_local_dir(tmp_path / "src", cluster_plan(f"  kubernetesVersion: '{other}'\n"),
                         ["kube-apiserver"], built=True)
    path = as_bundle(src, tmp_path / "bundle.tar") if as_tar else src
    with pytest.raises(ArtifactError) as exc:
        fetch(local_plan(path), tmp_path / "c", tmp_path, names=["kube-apiserver"])
    msg = str(exc.value)
    assert msg.startswith(f"artifact kube-apiserver {other}: the local source holds version "
                          f"{other}, but this cluster's release pins {plan.version}")

    # Only the version differs: the file, its sha256 and the install list are right.
    src = make_local_dir(tmp_path / "src2", plan, ["runc"], built=True,
                         changes={"runc": {"version": "0.0.1"}})
    with pytest.raises(ArtifactError, match="holds version 0.0.1, but this cluster's release "
                       f"pins {re.escape(plan.release.component('runc'))}"):
        fetch(local_plan(src), tmp_path / "c", tmp_path, names=["runc"])


@pytest.mark.parametrize("as_tar", [False, True], ids=["dir", "bundle"])
def test_local_file_must_be_the_pinned_one_unless_built(tmp_path: Path, as_tar: bool) -> None:
    plan = cluster_plan()
    rv = plan.release.component("runc")
    official, other = b"official runc", b"some other runc"
    man = pinned(default_manifest(), "runc", {rv: sha(official)})

    def get(name: str, data: bytes, built: bool) -> FetchedArtifact:
        src = make_local_dir(tmp_path / name, plan, ["runc"], manifest=man,
                             data={"runc": data}, built=built)
        path = as_bundle(src, tmp_path / f"{name}.tar") if as_tar else src
        return fetch(local_plan(path), tmp_path / "c", tmp_path, names=["runc"],
                     manifest=man)["runc"]

    # manifest.json agrees with the file, but the file is not the official one.
    with pytest.raises(ArtifactError) as exc:
        get("downloaded", other, built=False)
    msg = str(exc.value)
    assert msg.startswith(f"artifact runc {rv}: ")
    assert f"sha256 {sha(other)} differs from the official sha256 pinned" in msg
    assert sha(official) in msg

    assert get("official", official, built=False).sha256 == sha(official)
    # A built entry is not byte-identical to upstream's: its own sha256 is what counts.
    built = get("built", other, built=True)
    assert built.sha256 == sha(other) and built.version == rv
    assert built.install == man.release_for("runc", plan).install
    # ...but it is still checked against that sha256.
    (tmp_path / "built" / f"runc/{rv}/runc.amd64").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        fetch(local_plan(tmp_path / "built"), tmp_path / "c", tmp_path, names=["runc"],
              manifest=man)


@pytest.mark.parametrize("as_tar", [False, True], ids=["dir", "bundle"])
def test_local_file_without_a_pin_is_refused_unless_built(tmp_path: Path, as_tar: bool) -> None:
    """A downloaded file of a version the packaged manifest pins no sha256 for: only the
    source's own manifest.json would vouch for it."""
    plan = cluster_plan()
    rv = plan.release.component("runc")
    man = pinned(default_manifest(), "runc", {})

    def get(name: str, built: bool) -> FetchedArtifact:
        src = make_local_dir(tmp_path / name, plan, ["runc"], manifest=man, built=built)
        path = as_bundle(src, tmp_path / f"{name}.tar") if as_tar else src
        return fetch(local_plan(path), tmp_path / "c", tmp_path, names=["runc"],
                     manifest=man)["runc"]

    with pytest.raises(ArtifactError) as exc:
        get("downloaded", built=False)
    msg = str(exc.value)
    assert msg.startswith(f"artifact runc {rv}: ") and "no sha256 is pinned" in msg
    assert "`provisioner artifacts build`" in msg
    assert get("built", built=True).version == rv


@pytest.mark.parametrize("record, why", [
    ({"recipe": "kubernetes", "key": "k", "go": "go1.0"}, "names recipe 'runc'"),
    ({"key": "k"}, "names recipe 'runc'"),
    ("yes", "names recipe 'runc'"),
], ids=["other-recipe", "no-recipe", "not-a-record"])
def test_a_build_record_must_name_the_packaged_recipe(tmp_path: Path, record: Any,
                                                      why: str) -> None:
    """A "built" record is what exempts a file from the official pin: it must name the
    recipe the packaged manifest builds that artifact with."""
    plan = cluster_plan()
    rv = plan.release.component("runc")
    man = pinned(default_manifest(), "runc", {rv: sha(b"official runc")})
    src = make_local_dir(tmp_path / "src", plan, ["runc"], manifest=man,
                         data={"runc": b"other runc"}, changes={"runc": {"built": record}})
    with pytest.raises(ArtifactError) as exc:
        fetch(local_plan(src), tmp_path / "c", tmp_path, names=["runc"], manifest=man)
    msg = str(exc.value)
    assert msg.startswith(f"artifact runc {rv}: ") and "says it was built" in msg
    assert why in msg and "refusing it" in msg


@pytest.mark.parametrize("as_tar", [False, True], ids=["dir", "bundle"])
def test_local_debian_packages_are_checked_against_the_packaged_pins(
    tmp_path: Path, as_tar: bool
) -> None:
    """A deb tar's manifest.json sha256 is the source's own: each .deb inside must be the
    package the packaged manifest pins (Debian's sha256), and a "built" record changes
    nothing for an artifact that is never built."""
    plan = cluster_plan()
    man = with_fake_debs(default_manifest())
    rel = man.release_for("haproxy", plan)
    good = {d.filename: fake_deb(d.filename) for d in rel.debs}

    def get(name: str, debs: Mapping[str, bytes],
            changes: Mapping[str, Any] | None = None) -> FetchedArtifact:
        src = make_local_dir(tmp_path / name, plan, ["haproxy"], manifest=man,
                             data={"haproxy": tgz(dict(debs))},
                             changes={"haproxy": changes or {}})
        path = as_bundle(src, tmp_path / f"{name}.tar") if as_tar else src
        return fetch(local_plan(path), tmp_path / "c", tmp_path, names=["haproxy"],
                     manifest=man)["haproxy"]

    assert get("good", good).kind == "deb"
    first = rel.debs[0].filename
    for name, debs in (("tampered", {**good, first: b"a shell script"}),
                       ("extra", {**good, "evil_1_amd64.deb": b"x"}),
                       ("missing", {n: b for n, b in good.items() if n != first})):
        with pytest.raises(ArtifactError) as exc:
            get(name, debs)
        msg = str(exc.value)
        assert msg.startswith(f"artifact haproxy {rel.version}: "), msg
        assert "do not match the manifest's Debian sha256s" in msg, msg
    with pytest.raises(ArtifactError, match="no recipe: it is never built here"):
        get("claims-built", {**good, first: b"a shell script"},
            {"built": {"recipe": "haproxy", "key": "k", "go": "go1.0"}})


def test_a_tampered_unpacked_bundle_is_refused_then_unpacked_again(
    tmp_path: Path, state_root: Path
) -> None:
    """A bundle is unpacked once into the controller's 0700 cache, and every fetch verifies
    the unpacked copy again before anything is shipped: a file changed there is refused
    (its manifest.json entry changed with it too), the copy is dropped, and the next fetch
    unpacks the bundle itself again."""
    plan = cluster_plan()
    rv = plan.release.component("runc")
    src = make_local_dir(tmp_path / "src", plan, ["runc"], data={"runc": b"good runc"},
                         built=True)
    bundle = as_bundle(src, tmp_path / "b.tar")
    cache = tmp_path / "cache"
    first = fetch(local_plan(bundle), cache, tmp_path, names=["runc"])["runc"]
    unpacked = first.path.parents[2]
    assert unpacked.parent == cache / "bundles" and first.sha256 == sha(b"good runc")

    first.path.write_bytes(b"bad runc")
    with pytest.raises(ArtifactError) as exc:
        fetch(local_plan(bundle), cache, tmp_path, names=["runc"])
    msg = str(exc.value)
    assert msg.startswith(f"artifact runc {rv}: ") and "sha256 mismatch" in msg
    assert sha(b"bad runc") in msg and f"the controller's unpacked copy of {bundle}" in msg
    assert not unpacked.exists()
    assert fetch(local_plan(bundle), cache, tmp_path, names=["runc"])["runc"].path.read_bytes() \
        == b"good runc"

    # The file and its manifest.json entry both changed: the packaged manifest's pin
    # (here: runc pinned, the file downloaded) still refuses it.
    man = pinned(default_manifest(), "runc", {rv: sha(b"good runc")})
    src = make_local_dir(tmp_path / "official", plan, ["runc"], manifest=man,
                         data={"runc": b"good runc"})
    bundle = as_bundle(src, tmp_path / "official.tar")
    got = fetch(local_plan(bundle), cache, tmp_path, names=["runc"], manifest=man)["runc"]
    got.path.write_bytes(b"bad runc")
    entries = json.loads((got.path.parents[2] / "manifest.json").read_text())
    entries["runc"]["sha256"] = sha(b"bad runc")
    (got.path.parents[2] / "manifest.json").write_text(json.dumps(entries))
    with pytest.raises(ArtifactError, match="differs from the official sha256 pinned"):
        fetch(local_plan(bundle), cache, tmp_path, names=["runc"], manifest=man)
    assert fetch(local_plan(bundle), cache, tmp_path, names=["runc"],
                 manifest=man)["runc"].path.read_bytes() == b"good runc"


def _role_tasks(*names: str) -> list[dict[str, Any]]:
    """The named tasks of the provisioner_artifacts role, as written."""
    import yaml

    tasks = yaml.safe_load((ROOT / "playbooks/roles/provisioner_artifacts/tasks/main.yml")
                           .read_text())
    found = [t for t in tasks if t.get("name") in names]
    assert [t["name"] for t in found] == list(names)
    return found


def test_the_role_refuses_a_tampered_unpacked_archive_before_shipping(tmp_path: Path) -> None:
    """The artifacts role unpacks each archive once into the cluster's 0700 controller cache
    (cache/unpacked/<sha256>) and verifies every member again before anything is shipped:
    a member changed there fails the run and the copy is removed, so the next run unpacks
    the verified archive again. Runs the role's own two tasks on this machine (local
    connection, controller side only: nothing is installed)."""
    import os
    import sys

    import yaml

    binary = Path(sys.executable).parent / "ansible-playbook"
    if not binary.exists():
        pytest.skip("ansible-playbook is not installed")
    archive = tmp_path / "crictl.tgz"
    archive.write_bytes(tgz({"crictl": b"good crictl"}))
    cache = tmp_path / "state" / "cache" / "unpacked"
    digest = sha(archive.read_bytes())
    play = [{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "vars": {
            "ansible_python_interpreter": sys.executable,
            "provisioner_artifacts_names": ["crictl"],
            "provisioner_artifacts_controller_cache": str(cache),
            "provisioner_artifacts": {"crictl": {
                "path": str(archive), "sha256": digest, "kind": "tar", "version": "1",
                "install": [{"member": "crictl", "dest": "/usr/local/bin/crictl",
                             "mode": "0755"}]}},
        },
        "tasks": _role_tasks("Artifacts | Unpack archives on the controller",
                             "Artifacts | Verify the unpacked archives"),
    }]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_FILTER_PLUGINS": str(ROOT / "playbooks/filter_plugins"),
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
           "ANSIBLE_HOME": str(tmp_path / "ansible"), "ANSIBLE_NOCOLOR": "1"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binary), "-i", "localhost,", str(tmp_path / "play.yml")],
                              capture_output=True, text=True, env=env, timeout=120,
                              check=False)

    done = run()
    assert done.returncode == 0, done.stdout + done.stderr
    member = cache / digest / "crictl"
    assert member.read_bytes() == b"good crictl"
    assert (cache / digest).stat().st_mode & 0o777 == 0o700

    member.write_bytes(b"bad crictl")
    done = run()
    assert done.returncode != 0
    assert "changed after it was verified; removed it, run again" in done.stdout + done.stderr
    assert not (cache / digest).exists()  # the next run unpacks it again, as the first did


def test_the_fetch_cache_is_private(tmp_path: Path) -> None:
    """Bundles are unpacked and downloads kept in a 0700 directory: nobody else can swap
    a verified file before it is shipped."""
    plan = cluster_plan()
    src = make_local_dir(tmp_path / "src", plan, ["runc"], built=True)
    bundle = as_bundle(src, tmp_path / "b.tar")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    cache.chmod(0o755)
    fetch(local_plan(bundle), cache, tmp_path, names=["runc"])
    assert cache.stat().st_mode & 0o777 == 0o700
    assert any((cache / "bundles").iterdir())


# What the packaged manifest does not pin yet (the official sha256s could not be read where
# this was written, and none is ever invented): these come only from a local source of
# built artifacts. Pinning one is an edit to artifacts.yaml and to this table.
KNOWN_UNPINNED = {
    "1.35.4": {"containerd", "cni-plugin-flannel", "kube-apiserver", "kube-controller-manager",
               "kube-scheduler", "kube-proxy"},
    "1.36.3": {"containerd", "runc", "cni-plugin-flannel", "kube-apiserver",
               "kube-controller-manager", "kube-scheduler", "kube-proxy"},
    "1.37.2": {"etcd", "etcdctl", "containerd", "runc", "cni-plugin-flannel", "kube-apiserver",
               "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubelet",
               "kubectl"},
}


def test_unpinned_artifacts_are_known_and_never_downloaded(server: Server,
                                                           tmp_path: Path) -> None:
    """Every Debian package is pinned; every other artifact is pinned or listed in
    KNOWN_UNPINNED, and an online or mirror fetch of a release refuses exactly those,
    naming each, before anything is requested. A recipe is not a pin: it only makes the
    built local source possible (test_every_binary_artifact_has_a_pinned_build_recipe)."""
    man = default_manifest()
    assert set(KNOWN_UNPINNED) == set(versions.supported_versions())
    for version, known in KNOWN_UNPINNED.items():
        release = versions.release_for(version)
        for name, entry in man.entries.items():
            rel = entry.release(man.version_at(name, version, release))
            assert rel.url or rel.debs, name
            if rel.kind == "deb":
                assert rel.debs and all(len(d.sha256) == 64 for d in rel.debs), name
        unpinned = {r.name for r in man.unpinned(man.entries, version, release)}
        assert unpinned == known, (version, "update KNOWN_UNPINNED", unpinned ^ known)
        plan = cluster_plan(f"  kubernetesVersion: '{version}'\n")
        wanted = {n for n in needed(plan) if n in known}
        for source in ("online", "mirror"):
            at = sourced(plan, source=source, path=None,
                         mirror_url=f"{server.base}/mirror" if source == "mirror" else None)
            with pytest.raises(ArtifactError) as exc:
                fetch(at, tmp_path / "c", ROOT, manifest=man, url_rewrite=server.rewrite,
                      timeout=5)
            msg = str(exc.value)
            assert f"unpinned in Kubernetes {version}: " in msg and "no release is fully" in msg
            assert all(re.search(rf"[:,;] {re.escape(n)}[ ,;.]", msg) for n in wanted), msg
    assert man.fully_pinned(man.entries) == ()
    assert server.requests == [] and not (tmp_path / "c").exists()


@pytest.mark.parametrize("version", versions.supported_versions())
def test_the_unpinned_message_fits_one_issue_line(version: str) -> None:
    """The widest cluster (every artifact) at each release: the message is not cut where
    the spec error cuts an issue line, and names every artifact and its version."""
    from provisioner.artifacts.manifest import unpinned_problem
    from provisioner.spec.errors import ISSUE_CHARS

    man = default_manifest()
    release = versions.release_for(version)
    problem = unpinned_problem(man, "mirror", man.entries, version, release)
    assert problem is not None
    line = f"spec.artifacts.source: {problem[0]} (fix: {problem[1]})"
    assert len(line) <= ISSUE_CHARS, (len(line), line)
    # Grouped by version: the cluster's own Kubernetes binaries under "Kubernetes <version>".
    for rel in man.unpinned(man.entries, version, release):
        assert re.search(rf"[:,;] {re.escape(rel.name)}[ ,;]", problem[0]), rel.name
        assert rel.version in problem[0]


def test_extravars_are_json_and_carry_the_install_layout(server: Server, tmp_path: Path) -> None:
    rel = make_release(server, online_plan())
    extra = artifacts_extravars(fetch_online(rel, server, tmp_path / "c"))
    data = json.loads(json.dumps(extra))["provisioner_artifacts"]
    assert data["runc"]["install"] == [{"member": "", "dest": "/usr/local/sbin/runc",
                                        "mode": "0755"}]
    assert data["etcd"]["kind"] == "tar" and data["haproxy"]["kind"] == "deb"
    assert set(data["etcd"]) == {"path", "sha256", "kind", "version", "install"}


# --- the packaged manifest --------------------------------------------------------------------


def test_every_binary_artifact_has_a_pinned_build_recipe() -> None:
    """Every non-Debian artifact of every supported version names a recipe whose Go module
    (go.mod, go.sum, source-date) is checked in for the pinned version."""
    from provisioner.build.recipes import pinned_files, recipe

    man = default_manifest()
    for version in versions.supported_versions():
        plan = cluster_plan(f"  kubernetesVersion: '{version}'\n")
        for name in needed(plan):
            entry = man.entry(name)
            if entry.kind == "deb":
                continue
            assert entry.build is not None, name
            rel = man.release_for(name, plan)
            files = pinned_files(entry.build.recipe, rel.version)
            assert files["go.sum"].strip() and files["source-date"].strip(), name
            r = recipe(entry.build.recipe)
            gomod = files["go.mod"].decode()
            assert all(p.package in gomod for p in r.programs), (name, rel.version)


def test_packaged_manifest_destinations_match_the_units() -> None:
    man = default_manifest()
    dests = {i.dest for e in man.entries.values() for i in e.install}
    for path in ("/usr/local/bin/etcd", "/usr/local/bin/etcdctl", "/usr/local/bin/containerd",
                 "/usr/local/bin/containerd-shim-runc-v2", "/usr/local/bin/ctr",
                 "/usr/local/sbin/runc", "/usr/local/bin/crictl",
                 "/opt/cni/bin/bridge", "/opt/cni/bin/host-local", "/opt/cni/bin/loopback",
                 "/usr/local/bin/kube-apiserver", "/usr/local/bin/kubelet",
                 "/usr/local/bin/kube-proxy", "/usr/local/bin/kubectl"):
        assert path in dests
    assert man.entry("haproxy").kind == man.entry("keepalived").kind == "deb"


def test_the_manifest_has_no_checksum_url() -> None:
    """A checksum file comes from where the file does: the manifest refuses to name one
    rather than seem to trust it."""
    entry = {"version_from": "kubernetes", "kind": "binary", "file": "kubelet",
             "url": FAKE_BASE + "/{file}", "checksum_url": FAKE_BASE + "/{file}.sha256",
             "install": [{"member": "", "dest": "/usr/local/bin/kubelet", "mode": "0755"}]}
    with pytest.raises(ArtifactError, match="kubelet: checksum_url is not read"):
        Manifest.from_dict({"artifacts": {"kubelet": entry}})
    assert "checksum_url:" not in (ROOT / "provisioner/versions/artifacts.yaml").read_text()


# --- CLI --------------------------------------------------------------------------------------


def test_cli_fetch_and_bundle_from_a_local_source(
    tmp_path: Path, state_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provisioner.cli_artifacts import app

    plan = cluster_plan()
    # What `provisioner artifacts build` writes: every binary built, the Debian packages
    # (made-up ones here, so the packaged manifest is made to pin them).
    man = with_fake_debs(default_manifest())
    # (the package exports a function named `fetch`: reach the module itself)
    monkeypatch.setattr(importlib.import_module("provisioner.artifacts.fetch"),
                        "default_manifest", lambda: man)
    src = make_local_dir(tmp_path / "src", plan, needed(plan), manifest=man, built=True)
    spec = tmp_path / "cluster.yaml"
    spec.write_text("apiVersion: provisioner.dev/v1alpha1\nkind: Cluster\n"
                    "metadata: {name: art}\nspec:\n  provider: {type: nspawn}\n"
                    "  artifacts: {source: local, path: src}\n")

    runner = CliRunner()
    res = runner.invoke(app, ["fetch", str(spec)])
    assert res.exit_code == 0, res.output
    assert "kube-apiserver" in res.output and plan.version in res.output
    assert f"{len(needed(plan))} artifacts verified (local source)" in res.output

    out = tmp_path / "bundle.tar"
    res = runner.invoke(app, ["bundle", str(spec), "--out", str(out)])
    assert res.exit_code == 0, res.output
    with tarfile.open(out) as tar:
        assert "manifest.json" in tar.getnames()

    (src / f"kubelet/{plan.version}/kubelet").write_bytes(b"changed")
    res = runner.invoke(app, ["fetch", str(spec)])
    assert res.exit_code == 1 and f"artifact kubelet {plan.version}" in res.output


@pytest.mark.parametrize("source", ["", "  artifacts: {source: online}\n",
                                    "  artifacts: {source: mirror, mirrorURL: 'http://m.test/'}\n"],
                         ids=["default", "online", "mirror"])
def test_cli_fetch_refuses_unpinned_artifacts_without_the_network(
    tmp_path: Path, state_root: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """`artifacts fetch` (and `provision`, which fetches the same way) of an online or
    mirror spec whose release has unpinned artifacts: one message naming them and the
    fix, and no request to any server."""
    import urllib.request

    from provisioner.cli_artifacts import app

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access: {args}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    spec = tmp_path / "cluster.yaml"
    spec.write_text("apiVersion: provisioner.dev/v1alpha1\nkind: Cluster\n"
                    "metadata: {name: art}\nspec:\n  provider: {type: nspawn}\n"
                    "  network: {cni: flannel}\n" + source)
    res = CliRunner().invoke(app, ["fetch", str(spec)])
    assert res.exit_code == 1, res.output
    out = " ".join(res.output.split())
    version = versions.default_version()
    kind = "mirror" if "mirror" in source else "online"
    assert (f"'{kind}' trusts only sha256s pinned in the packaged manifest; unpinned in "
            f"Kubernetes {version}: kube-apiserver, kube-controller-manager") in out, out
    assert "cni-plugin-flannel 0.9.1" in out
    assert "`artifacts.source: local` from `provisioner artifacts build FILE`" in out
    assert "no release is fully pinned yet" in out
    assert not (state_root / "cache" / "artifacts").exists()


# --- lab: the built local source ------------------------------------------------------------


@pytest.mark.lab
def test_built_local_source_holds_the_real_programs(tmp_path: Path) -> None:
    """The lab's built source (cached after `make lab-artifacts`) verifies as a local source,
    and the programs print their upstream versions."""
    from tests.fixtures.built_artifacts import built_local_source

    plan = cluster_plan()
    src = built_local_source(plan, needed(plan))
    plan = cluster_plan(f"  artifacts: {{source: local, path: '{src}'}}\n")
    got = fetch(plan, tmp_path / "cache", tmp_path)
    assert got["etcd"].path == got["etcdctl"].path
    assert got["etcd"].version == plan.release.component("etcd")
    assert {"/opt/cni/bin/bridge", "/opt/cni/bin/host-local", "/opt/cni/bin/loopback"} <= {
        i.dest for i in got["cni-plugins"].install}
    with tarfile.open(got["etcd"].path) as tar:
        for item in got["etcd"].install + got["etcdctl"].install:
            tar.extract(item.member, tmp_path / "x", filter="data")

    def version(path: Path, *args: str) -> str:
        out = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=30)
        return out.stdout + out.stderr

    etcd = tmp_path / "x" / got["etcd"].install[0].member
    assert f"etcd Version: {got['etcd'].version}" in version(etcd, "--version")
    assert version(got["kube-apiserver"].path, "--version").strip() == f"Kubernetes v{plan.version}"
    assert f"runc version {got['runc'].version}" in version(got["runc"].path, "--version")
    with tarfile.open(got["containerd"].path) as tar:
        tar.extract("bin/containerd", tmp_path / "c", filter="data")
    assert f"v{got['containerd'].version}" in version(tmp_path / "c" / "bin/containerd",
                                                      "--version")
    ldd = subprocess.run(["ldd", str(got["runc"].path)], capture_output=True, text=True)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr or "statically" in ldd.stdout


def test_a_built_source_bundled_stays_a_built_source(tmp_path: Path) -> None:
    """`artifacts build` then `artifacts bundle`: the bundle keeps the build record, so the
    air-gapped copy is accepted as the build was (not held to the official pin)."""
    plan = cluster_plan()
    rv = plan.release.component("runc")
    man = pinned(default_manifest(), "runc", {rv: sha(b"official runc")})
    src = make_local_dir(tmp_path / "built", plan, ["runc"], manifest=man,
                         data={"runc": b"built runc"}, built=True)
    got = fetch(local_plan(src), tmp_path / "c", tmp_path, names=["runc"], manifest=man)
    assert got["runc"].built, "the build record is read from manifest.json"
    bundle = write_bundle(got, tmp_path / "out" / "b.tar", man)
    with tarfile.open(bundle) as tar:
        entry = json.loads(tar.extractfile("manifest.json").read())["runc"]  # type: ignore[union-attr]
    assert entry["built"] == dict(got["runc"].built)
    again = fetch(local_plan(bundle), tmp_path / "c2", tmp_path, names=["runc"], manifest=man)
    assert again["runc"].sha256 == sha(b"built runc")


def test_the_controller_hash_cache_never_hides_a_change(tmp_path: Path) -> None:
    """A cached digest is reused only while size, mtime, ctime and inode are unchanged:
    rewriting a file in place with its old size and mtime still moves its ctime."""
    import hashlib
    import os
    import time

    from provisioner.artifacts.files import sha256_file_cached

    f = tmp_path / "kubelet"
    f.write_bytes(b"A" * 4096)
    cache = tmp_path / "cache" / "sha256-stat.json"
    assert sha256_file_cached(f, cache) == hashlib.sha256(b"A" * 4096).hexdigest()
    assert not cache.exists()  # changed within the last two seconds: not cached yet
    time.sleep(2.2)
    sha256_file_cached(f, cache)
    assert cache.stat().st_mode & 0o777 == 0o600 and str(f.resolve()) in cache.read_text()
    st = f.stat()
    with f.open("r+b") as handle:
        handle.write(b"B" * 4096)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sha256_file_cached(f, cache) == hashlib.sha256(b"B" * 4096).hexdigest()
