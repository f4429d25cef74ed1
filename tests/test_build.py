"""Build recipes and the build layer: go.mod generation, stamps, keys, packaging, errors.

The real builds run in the lab tests and `make lab-artifacts`; these are the pure parts.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from provisioner.build.build import default_exec_name, pinned_recipe_versions, write_release_tar
from provisioner.build.gotool import explain_failure
from provisioner.build.recipes import (
    RECIPES,
    RecipeError,
    consumer_gomod,
    pinned_files,
    recipe,
    recipe_key,
    upstream_replaces,
)

UPSTREAM_K8S = """module k8s.io/kubernetes

go 1.26.0

godebug default=go1.26

require (
\tgithub.com/blang/semver/v4 v4.0.0
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go // comment
)

replace example.com/old => example.com/new v1.2.3
"""


def test_upstream_replaces_reads_blocks_and_single_lines() -> None:
    assert upstream_replaces(UPSTREAM_K8S) == [
        ("k8s.io/api", "./staging/src/k8s.io/api"),
        ("k8s.io/client-go", "./staging/src/k8s.io/client-go"),
        ("example.com/old", "example.com/new v1.2.3"),
    ]


def test_consumer_gomod_pins_staging_modules_to_their_published_versions() -> None:
    text = consumer_gomod(recipe("kubernetes"), "1.37.2", {"k8s.io/kubernetes": UPSTREAM_K8S})
    assert "\tk8s.io/api => k8s.io/api v0.37.2\n" in text
    assert "\tk8s.io/client-go => k8s.io/client-go v0.37.2\n" in text
    assert "\texample.com/old => example.com/new v1.2.3\n" in text
    assert "\ngo 1.26.0\n" in text and "\ngodebug default=go1.26\n" in text
    assert "\tk8s.io/kubernetes v1.37.2\n" in text
    assert "\tk8s.io/kubernetes/cmd/kube-apiserver\n" in text  # tool block keeps tidy honest


def test_consumer_gomod_drops_directory_replaces_without_a_sibling_rule() -> None:
    upstream = "module go.etcd.io/etcd/server/v3\n\ngo 1.24\n\nreplace (\n" \
               "\tgo.etcd.io/etcd/api/v3 => ../api\n\tgo.etcd.io/etcd => ./FORBIDDEN\n)\n"
    text = consumer_gomod(recipe("etcd"), "3.6.6", {"go.etcd.io/etcd/server/v3": upstream})
    assert "replace" not in text and "\tgo.etcd.io/etcd/server/v3 v3.6.6\n" in text


def test_kubernetes_stamp_is_upstreams() -> None:
    flags = recipe("kubernetes").ldflags("1.37.2", "2026-10-27T12:01:04Z")
    for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        for key, value in (("gitVersion", "v1.37.2"), ("gitMajor", "1"), ("gitMinor", "37"),
                           ("buildDate", "2026-10-27T12:01:04Z"), ("gitTreeState", "clean")):
            assert f"-X '{pkg}.{key}={value}'" in flags
    assert flags.endswith("-s -w")
    assert recipe("kubernetes").env()["CGO_ENABLED"] == "0"
    assert recipe("runc").env()["CGO_ENABLED"] == "1" and "-static-pie" in recipe("runc").ldflags(
        "1.5.2", "x")


def test_recipe_key_changes_with_every_input() -> None:
    r = recipe("crictl")
    files = {"go.mod": b"a", "go.sum": b"b", "source-date": b"2026-01-01T00:00:00Z"}
    base = recipe_key(r, "1.36.0", files, "go1.26.8")
    assert base == recipe_key(r, "1.36.0", dict(files), "go1.26.8")
    assert base != recipe_key(r, "1.36.0", {**files, "go.sum": b"c"}, "go1.26.8")
    assert base != recipe_key(r, "1.36.0", files, "go1.26.9")
    assert base != recipe_key(r, "1.37.0", files, "go1.26.8")


def test_every_pinned_recipe_version_is_checked_in() -> None:
    pairs = pinned_recipe_versions()
    assert {name for name, _ in pairs} == set(RECIPES)
    for name, version in pairs:
        files = pinned_files(name, version)
        assert f"module provisioner.build/{name}" in files["go.mod"].decode()
    with pytest.raises(RecipeError, match=r"update-recipes\.py etcd 9\.9\.9"):
        pinned_files("etcd", "9.9.9")


def test_default_exec_name_follows_go() -> None:
    assert default_exec_name("go.etcd.io/etcd/server/v3") == "server"
    assert default_exec_name("go.etcd.io/etcd/etcdctl/v3") == "etcdctl"
    assert default_exec_name("github.com/opencontainers/runc") == "runc"
    assert default_exec_name("k8s.io/kubernetes/cmd/kubelet") == "kubelet"


def test_release_tar_is_reproducible_and_gzipped(tmp_path: Path) -> None:
    prog = tmp_path / "etcd"
    prog.write_bytes(b"\x7fELF etcd")
    out1, out2 = tmp_path / "a" / "etcd.tar.gz", tmp_path / "b" / "etcd.tar.gz"
    members = [("etcd-v3.7.0-linux-amd64/etcd", prog)]
    write_release_tar(members, out1)
    prog.touch()  # a newer mtime must not change the archive
    write_release_tar(members, out2)
    assert hashlib.sha256(out1.read_bytes()).digest() == hashlib.sha256(out2.read_bytes()).digest()
    assert out1.read_bytes()[:2] == b"\x1f\x8b"
    with tarfile.open(out1) as tar:
        assert tar.getnames() == ["etcd-v3.7.0-linux-amd64", "etcd-v3.7.0-linux-amd64/etcd"]
        m = tar.getmember("etcd-v3.7.0-linux-amd64/etcd")
        assert (m.mtime, m.uid, m.mode) == (0, 0, 0o755)


def test_proxy_refusal_names_the_module_and_version() -> None:
    msg = explain_failure("kubernetes 1.37.2", [
        "go: downloading k8s.io/api v0.37.2",
        "go: k8s.io/api@v0.37.2: reading https://proxy.golang.org/k8s.io/api/@v/v0.37.2.zip: "
        "403 Forbidden: This module version is not available",
    ])
    assert "did not serve k8s.io/api v0.37.2" in msg and "kubernetes 1.37.2" in msg
    other = explain_failure("runc 1.5.2", ["# github.com/seccomp/libseccomp-golang",
                                           "fatal error: seccomp.h: No such file or directory"])
    assert "go build failed" in other and "seccomp.h" in other


def test_image_layout_round_trips_and_is_reproducible(tmp_path: Path) -> None:
    from provisioner.build.images import IMAGES, ImageFile, make_image, read_layout, write_layout

    files = [ImageFile("/pause", data=b"\x7fELF pause", mode=0o755),
             ImageFile("/etc/passwd", data=b"root:x:0:0::/:/bin/sh\n"),
             ImageFile("/bin/sh", link="busybox")]
    ref = "registry.k8s.io/pause:3.10.2"
    a = make_image(IMAGES["pause"], ref, files, "2026-10-27T12:01:04Z")
    b = make_image(IMAGES["pause"], ref, list(reversed(files)), "2026-10-27T12:01:04Z")
    assert a.manifest_digest == b.manifest_digest
    write_layout(a, tmp_path / "pause.oci.tar")
    back = read_layout(tmp_path / "pause.oci.tar")
    assert back.reference == ref and back.manifest_digest == a.manifest_digest
    layer = next(v for k, v in back.blobs.items() if v[:2] == b"\x1f\x8b")
    import gzip
    import io
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        assert tar.getnames() == ["bin", "bin/sh", "etc", "etc/passwd", "pause"]
        assert tar.getmember("pause").mode == 0o755 and tar.getmember("bin/sh").issym()
