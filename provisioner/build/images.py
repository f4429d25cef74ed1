"""Container images built without Docker: the cluster's own images, from source or Debian.

Scope: each ``ImageRecipe`` says what goes into one image (a program from a Go build recipe,
pause compiled from the Kubernetes module's C source, or a root filesystem from Debian 12
packages) and under which upstream name it is known (``registry.k8s.io/pause:3.10.2``), so a
cluster with internet access pulls the upstream images unchanged and the lab serves the same
names from its own registry. Images are written as OCI image layouts in one tar
(``ctr images import`` and registries take them), reproducibly: sorted members, mtime 0,
gzip without a timestamp, so the same inputs give the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.artifacts.files import new_parent_dirs, tar_info
from provisioner.build.gotool import go_binary, go_env
from provisioner.build.recipes import RecipeError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class ImageFile:
    """One file of an image layer."""

    path: str  # absolute path inside the image
    source: Path | None = None  # file to copy, or None with ``data``/``link``
    data: bytes | None = None
    link: str | None = None  # symlink target
    mode: int = 0o644


@dataclass(frozen=True)
class ImageRecipe:
    """One image: its upstream name, where its version comes from, how it is made."""

    name: str
    repository: str
    """Upstream repository without the tag, e.g. ``registry.k8s.io/coredns/coredns``."""
    version_from: str
    """Key in kubernetes.yaml (``pause``, ``coredns``), or ``debian`` for Debian's version."""
    tag_prefix: str = "v"
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    user: str = ""
    ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    go_recipe: str | None = None
    """Go build recipe (same version) whose program becomes /<program>."""
    debs: tuple[str, ...] = ()
    """Debian packages unpacked into the root filesystem: ``name=version``, or ``name`` for
    the version Debian serves now."""
    links: tuple[tuple[str, str], ...] = ()
    """Symlinks ``(path, target)`` the packages' maintainer scripts would make (busybox's
    applets, Debian's iptables alternatives)."""
    source: str = ""

    def tag(self, version: str) -> str:
        """The upstream tag for ``version``."""
        return f"{self.tag_prefix}{version}"

    def reference(self, version: str) -> str:
        """``<repository>:<tag>``."""
        return f"{self.repository}:{self.tag(version)}"

    def path(self) -> str:
        """The repository path without its registry host (``coredns/coredns``)."""
        return self.repository.split("/", 1)[1]


# Pinned to bookworm's own release, which no longer changes (nginx is not: see its recipe).
BUSYBOX_DEBIAN = "1:1.35.0-4+deb12u1+b1"
IPTABLES_DEBIAN = "1.8.9-2"
BUSYBOX_APPLETS = ("sh", "cat", "cp", "echo", "env", "grep", "head", "hostname", "ip", "ls",
                   "mkdir", "nc", "nslookup", "ping", "rm", "sed", "sleep", "tail", "test",
                   "timeout", "true", "wget")
BUSYBOX_LINKS = tuple((f"/bin/{a}", "busybox") for a in BUSYBOX_APPLETS)
# Debian 12's iptables userland with the nft backend, the default alternative on Debian 12
# nodes, so that flanneld's rules and kube-proxy's are in the same tables.
IPTABLES_DEBS = (f"iptables={IPTABLES_DEBIAN}", f"libip4tc2={IPTABLES_DEBIAN}",
                 f"libip6tc2={IPTABLES_DEBIAN}", f"libxtables12={IPTABLES_DEBIAN}",
                 "libnftnl11", "libmnl0", "libnetfilter-conntrack3", "libnfnetlink0", "libc6")
IPTABLES_LINKS = tuple((f"/usr/sbin/{t}{op}", "xtables-nft-multi")
                       for t in ("iptables", "ip6tables") for op in ("", "-save", "-restore"))

IMAGES: Mapping[str, ImageRecipe] = {r.name: r for r in (
    ImageRecipe(
        name="pause", repository="registry.k8s.io/pause", version_from="pause", tag_prefix="",
        entrypoint=("/pause",), user="65535:65535",
        source="kubernetes build/pause: pause.c compiled static with -Os, as its Makefile",
    ),
    ImageRecipe(
        name="coredns", repository="registry.k8s.io/coredns/coredns", version_from="coredns",
        entrypoint=("/coredns",), ports=("53/tcp", "53/udp"), go_recipe="coredns",
        source="coredns Dockerfile: the static binary on a distroless base, CA bundle",
    ),
    ImageRecipe(
        name="metrics-server", repository="registry.k8s.io/metrics-server/metrics-server",
        version_from="metrics_server", entrypoint=("/metrics-server",), user="65534:65534",
        go_recipe="metrics-server",
        source="metrics-server Dockerfile: the static binary on distroless, user 65534",
    ),
    ImageRecipe(
        name="nginx", repository="docker.io/library/nginx", version_from="debian",
        tag_prefix="", entrypoint=("/usr/sbin/nginx",), cmd=("-g", "daemon off;"),
        ports=("80/tcp",),
        # Unpinned: Debian's security archive serves only its newest nginx, so a pin breaks
        # cold builds at the next security update (CHANGELOG, Fixed).
        debs=("nginx", "nginx-common", "libc6", "libgcc-s1",
              "libcrypt1", "libpcre2-8-0", "libssl3", "zlib1g"),
        source="Debian 12's nginx and the libraries it links (the seeds' web server)",
    ),
    ImageRecipe(
        name="busybox", repository="docker.io/library/busybox", version_from="debian",
        tag_prefix="", entrypoint=("/bin/sh",), debs=(f"busybox-static={BUSYBOX_DEBIAN}",),
        links=BUSYBOX_LINKS,
        source="Debian 12's busybox-static: the small client the checks run in pods",
    ),
    ImageRecipe(
        name="flannel", repository="ghcr.io/flannel-io/flannel", version_from="flannel",
        entrypoint=("/opt/bin/flanneld",), go_recipe="flannel",
        debs=(*IPTABLES_DEBS, f"busybox-static={BUSYBOX_DEBIAN}"),
        links=(*IPTABLES_LINKS, *BUSYBOX_LINKS),
        source="flannel images/Dockerfile: flanneld in /opt/bin with the iptables userland "
               "(here Debian 12's, nft backend) and a shell with cp for the CNI config",
    ),
)}

# The tag of Debian-built images: the upstream-looking tag the cluster refers to ("latest"
# is what `kubectl create deploy web --image=hub.test.com/nginx` asks for).
DEBIAN_TAG = "latest"


def image_version(r: ImageRecipe, components: Mapping[str, str]) -> str:
    """The version (and tag without prefix) of ``r`` for a release's pins."""
    if r.version_from == "debian":
        return DEBIAN_TAG
    return components[r.version_from]


# --- OCI layout --------------------------------------------------------------------------------


def layer_tar(files: Sequence[ImageFile]) -> bytes:
    """An uncompressed, reproducible layer tar of ``files`` (parent directories included)."""
    buf = io.BytesIO()
    dirs: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(files, key=lambda x: x.path):
            rel = f.path.lstrip("/")
            for d in new_parent_dirs(rel, dirs):
                tar.addfile(tar_info(d, 0o755, kind=tarfile.DIRTYPE))
            if f.link is not None:
                info = tar_info(rel, 0o777, kind=tarfile.SYMTYPE)
                info.linkname = f.link
                tar.addfile(info)
                continue
            data = f.data if f.data is not None else (f.source.read_bytes() if f.source else b"")
            tar.addfile(tar_info(rel, f.mode, len(data)), io.BytesIO(data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class OciImage:
    """An image's blobs and descriptors, ready to write as a layout or push to a registry."""

    reference: str
    blobs: dict[str, bytes] = field(repr=False)
    manifest: bytes = field(repr=False)

    @property
    def manifest_digest(self) -> str:
        """``sha256:...`` of the manifest: the image's identity."""
        return _digest(self.manifest)


def make_image(r: ImageRecipe, reference: str, files: Sequence[ImageFile],
               created: str) -> OciImage:
    """One-layer OCI image of ``files`` with ``r``'s runtime settings."""
    raw = layer_tar(files)
    layer = _gzip(raw)
    config_doc: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            **({"Entrypoint": list(r.entrypoint)} if r.entrypoint else {}),
            **({"Cmd": list(r.cmd)} if r.cmd else {}),
            **({"User": r.user} if r.user else {}),
            "Env": list(r.env),
            **({"ExposedPorts": {p: {} for p in r.ports}} if r.ports else {}),
            "Labels": {"org.opencontainers.image.source": r.source},
        },
        "rootfs": {"type": "layers", "diff_ids": [_digest(raw)]},
        "history": [{"created": created, "created_by": f"provisioner: {r.source}"}],
    }
    config = json.dumps(config_doc, sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": _digest(layer), "size": len(layer)}],
    }, sort_keys=True, separators=(",", ":")).encode()
    return OciImage(reference, {_digest(config): config, _digest(layer): layer}, manifest)


def write_layout(image: OciImage, out: Path) -> None:
    """The image as one OCI layout tar at ``out`` (``ctr images import`` reads it)."""
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": image.manifest_digest,
            "size": len(image.manifest),
            "annotations": {"io.containerd.image.name": image.reference,
                            "org.opencontainers.image.ref.name": image.reference},
        }],
    }, sort_keys=True, separators=(",", ":")).encode()
    entries = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index,
               **{f"blobs/sha256/{d.removeprefix('sha256:')}": b
                  for d, b in [*image.blobs.items(), (image.manifest_digest, image.manifest)]}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(tar_info(d, 0o755, kind=tarfile.DIRTYPE))
        for name in sorted(entries):
            tar.addfile(tar_info(name, 0o644, len(entries[name])), io.BytesIO(entries[name]))
    os.replace(tmp, out)


def read_layout(path: Path) -> OciImage:
    """An image written by :func:`write_layout`."""
    with tarfile.open(path) as tar:
        def member(name: str) -> bytes:
            f = tar.extractfile(name)
            assert f is not None
            return f.read()
        index = json.loads(member("index.json"))
        desc = index["manifests"][0]
        manifest = member(f"blobs/sha256/{desc['digest'].removeprefix('sha256:')}")
        doc = json.loads(manifest)
        blobs = {d["digest"]: member(f"blobs/sha256/{d['digest'].removeprefix('sha256:')}")
                 for d in [doc["config"], *doc["layers"]]}
    return OciImage(desc["annotations"]["io.containerd.image.name"], blobs, manifest)


# --- root filesystems --------------------------------------------------------------------------

PASSWD = ("root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
GROUP = "root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n"
NGINX_CONF = """# provisioner's image of Debian's nginx: one server on port 80, logs to the
# container's stdout and stderr.
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /dev/stderr;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    access_log /dev/stdout;
    server {
        listen 80 default_server;
        root /usr/share/nginx/html;
        index index.html;
        location / { try_files $uri $uri/ =404; }
    }
}
"""


def _ca_bundle() -> list[ImageFile]:
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    return [ImageFile("/etc/ssl/certs/ca-certificates.crt", bundle)] if bundle.is_file() else []


def debian_rootfs(debs: Sequence[str], work: Path, run: Callable[[list[str], Path], None]
                  ) -> Path:
    """Unpack ``debs`` (``apt-get download`` verifies them against Debian's signed index)."""
    dl, root = work / "debs", work / "rootfs"
    dl.mkdir(parents=True)
    root.mkdir()
    run(["apt-get", "download", *debs], dl)
    for deb in sorted(dl.glob("*.deb")):
        run(["dpkg-deb", "-x", str(deb), str(root)], work)
    return root


def rootfs_files(root: Path, skip: tuple[str, ...] = ("usr/share/doc", "usr/share/man",
                                                       "usr/share/lintian", "usr/share/locale")
                 ) -> list[ImageFile]:
    """Every file and symlink under ``root`` as image files (documentation left out)."""
    out: list[ImageFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames
                       if not os.path.join(rel_dir, d).lstrip("./").startswith(skip)
                       and not os.path.islink(os.path.join(dirpath, d))]
        for name in [*filenames, *(d for d in os.listdir(dirpath)
                                   if os.path.islink(os.path.join(dirpath, d))
                                   and os.path.isdir(os.path.join(dirpath, d)))]:
            full = Path(dirpath) / name
            rel = "/" + os.path.normpath(os.path.join(rel_dir, name)).lstrip("./")
            if full.is_symlink():
                out.append(ImageFile(rel, link=os.readlink(full)))
            elif full.is_file():
                out.append(ImageFile(rel, full, mode=full.stat().st_mode & 0o7777))
    return out


def compile_pause(kube_module_dir: Path, version: str, out: Path) -> Path:
    """pause, as build/pause/Makefile compiles it (static, -Os, the version stamped)."""
    src = kube_module_dir / "build" / "pause" / "linux" / "pause.c"
    if not src.is_file():
        raise RecipeError(f"pause {version}: {src} is missing from the Kubernetes module")
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RecipeError("pause: gcc is not installed. Fix: `make deps` (gcc, libc6-dev)")
    proc = subprocess.run([gcc, "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{version}",
                           "-o", str(out), str(src)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RecipeError(f"pause {version}: gcc failed: {proc.stderr.strip()}")
    subprocess.run(["strip", str(out)], check=False)
    return out


def kube_module_dir(cache: Path, kube_version: str) -> Path:
    """The unpacked k8s.io/kubernetes module (pause.c lives in it), downloaded if needed."""
    env = go_env(cache, {"GOFLAGS": "-mod=mod"})
    proc = subprocess.run([go_binary(), "mod", "download", "-json",
                           f"k8s.io/kubernetes@v{kube_version}"], capture_output=True, text=True,
                          env=env, cwd=tempfile.gettempdir(), check=False)
    try:
        info = json.loads(proc.stdout or "{}")
    except ValueError:
        info = {}
    if proc.returncode != 0 or "Dir" not in info:
        raise RecipeError(f"the Go module proxy did not serve k8s.io/kubernetes v{kube_version}: "
                          f"{info.get('Error') or proc.stderr.strip()}")
    return Path(info["Dir"])


def image_files(r: ImageRecipe, program: Path | None, work: Path,
                run: Callable[[list[str], Path], None]) -> list[ImageFile]:
    """The files of image ``r``; ``program`` is its built program, if it has one."""
    files: list[ImageFile] = []
    if program is not None:
        files.append(ImageFile(r.entrypoint[0], program, mode=0o755))
        files += _ca_bundle()
        files += [ImageFile("/etc/passwd", data=PASSWD.encode()),
                  ImageFile("/etc/group", data=GROUP.encode())]
    if r.debs:
        root = debian_rootfs(r.debs, work, run)
        files += rootfs_files(root)
        files += [ImageFile("/etc/passwd", data=PASSWD.encode()),
                  ImageFile("/etc/group", data=GROUP.encode())]
    if r.name == "nginx":
        files = [f for f in files if not f.path.startswith("/etc/nginx/sites-")
                 and f.path != "/etc/nginx/nginx.conf"]
        files += [ImageFile("/etc/nginx/nginx.conf", data=NGINX_CONF.encode()),
                  ImageFile("/usr/share/nginx/html/index.html",
                            data=b"<h1>provisioner: nginx from Debian 12</h1>\n"),
                  ImageFile("/var/lib/nginx/.keep", data=b""),
                  ImageFile("/run/.keep", data=b""), ImageFile("/tmp/.keep", data=b"")]
    files += [ImageFile(path, link=target) for path, target in r.links]
    if r.name in ("busybox", "flannel"):
        files += [ImageFile("/tmp/.keep", data=b""), ImageFile("/run/.keep", data=b"")]
    # One entry per path: the later one (the image's own config) wins.
    return list({f.path: f for f in files}.values())
