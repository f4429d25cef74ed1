"""The offline Debian 12 Vagrant box (libvirt provider), built on this host from packages.

Scope: no box can be downloaded where the lab runs, so the project builds its own
``provisioner/debian12`` box from the Debian mirror alone: debootstrap a root filesystem, make
it a Vagrant base box (user ``vagrant`` with the insecure key and passwordless sudo, DHCP on
eth0, GRUB and the kernel on the serial console, an ed25519 host key made on first boot and
printed on the serial console on every boot so the host can pin it), copy it onto a
partitioned raw disk through a loop device, install GRUB from inside one software-emulated
(TCG) boot of that disk, convert it to qcow2 and package the box. Also: whether Vagrant has
the box, and adding it. Needs root for the build (debootstrap, loop devices, mounts).

Layout under the cache directory (``$PROVISIONER_VAGRANT_DIR`` or
``/var/lib/provisioner/vagrant``)::

    boxes/debian12-libvirt-r<RECIPE_VERSION>.box   the box (written under a temporary name)
    logs/box-<step>.log                            output of every build step
    logs/box-finalize-console.log                  serial console of the finalize boot
    debootstrap-cache/                             downloaded .deb files, for rebuilds
    work/                                          root filesystem and disks while building
    .lock                                          one build at a time

Pure helpers (console parsing, ``vagrant box list`` parsing, mountinfo and ``losetup``
parsing, box file contents) are separate functions so they are unit-testable without root.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import glob
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.providers.base import ProviderError, Reporter, quiet
from provisioner.providers.nspawn.system import which

BOX_NAME = "provisioner/debian12"
RECIPE_VERSION = 1
"""Bump when the recipe below changes: the box file name and the installed box's info change."""

ENV_DIR = "PROVISIONER_VAGRANT_DIR"
DEFAULT_DIR = Path("/var/lib/provisioner/vagrant")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
PROVIDER = "libvirt"
HOSTNAME = "debian12"

HOST_KEY_MARKER = "provisioner-ssh-host-key: "
"""Prefix of the line the box prints on its serial console with its SSH host key."""
HOST_KEY_FILE = "/etc/ssh/ssh_host_ed25519_key"

DISK_GIB = 10
PARTITION_START = 1024 * 1024
FINALIZE_SCRIPT = "/usr/local/sbin/provisioner-finalize"
FINALIZE_OK = "provisioner-finalize: ok"
FINALIZE_FAILED = "provisioner-finalize: failed"
FINALIZE_TIMEOUT = 600.0
FINALIZE_MEMORY_MIB = 1024
STEP_TIMEOUT = 1800.0

# What a Vagrant base box and a Kubernetes node need on top of minbase: systemd as init, SSH
# with sftp (Vagrant's file uploads), python3 + python3-apt (Ansible), ifupdown + dhclient
# (Vagrant's Debian guest plugin configures extra networks with ifupdown), a kernel,
# an initramfs and a boot loader, and the usual tools playbooks expect.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "openssh-sftp-server",
    "python3",
    "python3-apt",
    "sudo",
    "iproute2",
    "iputils-ping",
    "ifupdown",
    "isc-dhcp-client",
    "kmod",
    "iptables",
    "curl",
    "gnupg",
    "linux-image-amd64",
    "initramfs-tools",
    "grub-pc",
    "netbase",
    "procps",
    "less",
    "ca-certificates",
    "rsync",
)

# MODULES=list keeps the initramfs small (it is unpacked under TCG on every boot); these are
# what a libvirt VM's disk and NIC need (virtio, or SATA/SCSI when a user changes disk_bus).
INITRAMFS_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "virtio_console",
    "ext4",
    "sd_mod",
    "ata_piix",
    "ahci",
)

# Timers that would take the dpkg lock or burn emulated CPU in the middle of a provisioning run.
DISABLED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
)

# Commands the build runs on the host, with the Debian package that provides each.
BUILD_TOOLS = (
    ("debootstrap", "debootstrap"),
    ("chroot", "coreutils"),
    ("parted", "parted"),
    ("losetup", "mount"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("mkfs.ext4", "e2fsprogs"),
    ("rsync", "rsync"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
)
SEABIOS = Path("/usr/share/seabios/bios-256k.bin")

# Where Vagrant keeps its insecure key pair: Debian's package, then HashiCorp's.
VAGRANT_KEY_GLOBS = (
    "/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",
    "/usr/lib/ruby/vendor_ruby/vagrant/keys/vagrant.pub",
    "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub",
    "/opt/vagrant/embedded/gems/*/gems/vagrant-*/keys/vagrant.pub",
)

GRUB_DEFAULT = """GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""

INTERFACES = """source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
"""

HOSTS = f"""127.0.0.1\tlocalhost
127.0.1.1\t{HOSTNAME}

::1\tlocalhost ip6-localhost ip6-loopback
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""

FSTAB = "LABEL=root / ext4 defaults,noatime,errors=remount-ro 0 1\n"
RESOLV_CONF = "# provisioner: no resolver in the image; dhclient writes one from DHCP\n"
SSHD_CONFIG = f"UseDNS no\nGSSAPIAuthentication no\nHostKey {HOST_KEY_FILE}\n"
SUDOERS = "vagrant ALL=(ALL) NOPASSWD: ALL\n"

# ed25519 only: an RSA key costs about 15 s of emulated CPU on every first boot under TCG.
HOSTKEYS_UNIT = f"""[Unit]
Description=Generate the SSH host key on first boot
Before=ssh.service
ConditionPathExists=!{HOST_KEY_FILE}

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N '' -f {HOST_KEY_FILE}

[Install]
WantedBy=multi-user.target
"""

PRINT_HOST_KEY_SCRIPT = f"""#!/bin/sh
# provisioner: print the SSH host key on the serial console on every boot. The host reads it
# from the VM's console log (out of band, like cloud-init) to pin the key before logging in.
key=$(cat {HOST_KEY_FILE}.pub) || exit 0
[ -w /dev/ttyS0 ] || exit 0
printf '{HOST_KEY_MARKER}%s\\n' "$key" > /dev/ttyS0
exit 0
"""

PRINT_HOST_KEY_UNIT = f"""[Unit]
Description=Print the SSH host key on the serial console
After=ssh-hostkeys.service
Before=ssh.service
ConditionPathExists={HOST_KEY_FILE}.pub

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/provisioner-print-host-key

[Install]
WantedBy=multi-user.target
"""

# Runs as PID 1 of the one finalize boot: the boot loader must be installed from a system that
# sees the disk as /dev/vda (this host's kernel cannot partition-scan loop devices). The
# success marker comes last, after the data is synced and / is read-only.
FINALIZE = f"""#!/bin/sh
# provisioner: one-time finalize boot of the box image (init=); installs GRUB, powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
if [ "$1" != --from-copy ] && cp "$0" /dev/provisioner-finalize; then
    # Go on from a copy outside the root file system: a running script that deletes itself
    # stays open as an orphan inode, and / could not be remounted read-only cleanly.
    exec /bin/sh /dev/provisioner-finalize --from-copy
fi
mount -o remount,rw /
if grub-install --target=i386-pc /dev/vda && update-grub; then
    result=ok
else
    result=failed
fi
rm -f {FINALIZE_SCRIPT}
sync
# Read-only, so the file system is clean; the kernel's emergency remount if / is busy.
mount -o remount,ro / || echo u > /proc/sysrq-trigger
i=0
until grep -q '^[^ ]* / [^ ]* ro[ ,]' /proc/mounts || [ $i -ge 30 ]; do
    sleep 1
    i=$((i + 1))
done
grep -q '^[^ ]* / [^ ]* ro[ ,]' /proc/mounts || result=failed
echo "provisioner-finalize: $result"
echo o > /proc/sysrq-trigger
sleep 600
"""

BOX_VAGRANTFILE = """Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
    libvirt.nic_model_type = "virtio"
  end
end
"""


# ---- paths ---------------------------------------------------------------------------------


def box_dir() -> Path:
    """The cache directory: ``$PROVISIONER_VAGRANT_DIR`` or ``/var/lib/provisioner/vagrant``."""
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else DEFAULT_DIR


def box_file() -> Path:
    """The box file of the current recipe: ``<box_dir()>/boxes/debian12-libvirt-r<N>.box``."""
    return box_dir() / "boxes" / f"debian12-libvirt-r{RECIPE_VERSION}.box"


def logs_dir() -> Path:
    """Where the build and ``vagrant box add`` write their logs."""
    return box_dir() / "logs"


# ---- pure helpers --------------------------------------------------------------------------

# The marker, the key type and its base64, then at most a printable comment to the line's end.
_HOST_KEY_LINE = re.compile(
    re.escape(HOST_KEY_MARKER)
    + r"(ssh-ed25519) ([A-Za-z0-9+/]+={0,2})(?: [\x21-\x7e][\x20-\x7e]*)?$"
)
_ED25519_BLOB = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"


def _is_ed25519_blob(b64: str) -> bool:
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(blob) == len(_ED25519_BLOB) + 32 and blob.startswith(_ED25519_BLOB)


def host_key_from_console(text: str) -> str | None:
    """The last SSH host key the box printed on its console, as ``ssh-ed25519 AAAA...``.

    Only a whole line ending after the key (and an optional printable comment) counts, and
    the key must decode to an ed25519 public key; anything garbled is ignored. A console log
    holds every boot of a machine, so the last key wins.
    """
    found: str | None = None
    for raw in text.replace("\r", "\n").split("\n"):
        match = _HOST_KEY_LINE.search(raw.rstrip())
        if match and _is_ed25519_blob(match.group(2)):
            found = f"{match.group(1)} {match.group(2)}"
    return found


def metadata_json() -> str:
    """The box's ``metadata.json`` (a vagrant-libvirt box with a qcow2 disk)."""
    return json.dumps({"provider": PROVIDER, "format": "qcow2", "virtual_size": DISK_GIB}) + "\n"


def info_json() -> str:
    """The box's ``info.json``: ``vagrant box list`` shows it, so the recipe is recognizable."""
    return json.dumps({"provisioner_recipe": str(RECIPE_VERSION)}) + "\n"


@dataclass(frozen=True)
class InstalledBox:
    """One line of ``vagrant box list``."""

    name: str
    provider: str
    version: str
    info: Mapping[str, str] = field(default_factory=dict)


def _unescape_machine(value: str) -> str:
    return value.replace("%!(VAGRANT_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


def parse_box_list(output: str) -> list[InstalledBox]:
    """Boxes in the output of ``vagrant box list --machine-readable``.

    Each box is a ``box-name`` line followed by ``box-provider``, ``box-version`` and any
    ``box-info`` lines (``timestamp,target,type,data...``; commas in data are escaped).
    """
    boxes: list[InstalledBox] = []
    current: dict[str, str] | None = None
    info: dict[str, str] = {}

    def flush() -> None:
        if current is not None and "name" in current and "provider" in current:
            boxes.append(
                InstalledBox(current["name"], current["provider"], current.get("version", ""),
                             dict(info))
            )

    for line in output.splitlines():
        parts = line.strip().split(",")
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        kind, data = parts[2], [_unescape_machine(p) for p in parts[3:]]
        if kind == "box-name":
            flush()
            current, info = {"name": data[0]}, {}
        elif current is None:
            continue
        elif kind == "box-provider":
            current["provider"] = data[0]
        elif kind == "box-version":
            current["version"] = data[0]
        elif kind == "box-info" and len(data) >= 2:
            info[data[0]] = data[1]
    flush()
    return boxes


def mounts_under(mountinfo: str, root: Path) -> list[Path]:
    """Mount points at or below ``root`` in ``/proc/self/mountinfo`` text, deepest first.

    A mount point stacked twice is listed twice (it takes two unmounts).
    """
    prefix = str(root).rstrip("/")
    found: list[Path] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def loop_devices(losetup_output: str) -> list[str]:
    """Devices in the output of ``losetup -j FILE`` (``/dev/loop0: [..]:.. (FILE)...``)."""
    return [
        line.split(":", 1)[0]
        for line in losetup_output.splitlines()
        if line.startswith("/dev/loop") and ":" in line
    ]


def first_partition(parted_output: str) -> tuple[int, int]:
    """Start and size in bytes of partition 1 in ``parted -m ... unit B print`` output."""
    for line in parted_output.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == "1":
            try:
                return int(fields[1].rstrip("B")), int(fields[3].rstrip("B"))
            except ValueError:
                break
    raise ValueError(f"no partition 1 in parted output:\n{parted_output}")


def find_vagrant_key(patterns: Sequence[str] = VAGRANT_KEY_GLOBS) -> Path | None:
    """Vagrant's insecure public key (newest Vagrant version first), if installed."""
    for pattern in patterns:
        matches = sorted(glob.glob(pattern), key=_version_key)
        if matches:
            return Path(matches[-1])
    return None


def _version_key(path: str) -> list[int | str]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def missing_tools(find: Callable[[str], str | None] | None = None) -> list[tuple[str, str]]:
    """(command, Debian package) of every build tool that is not installed."""
    lookup = find or which
    return [(cmd, pkg) for cmd, pkg in BUILD_TOOLS if lookup(cmd) is None]


# ---- running commands with a log -----------------------------------------------------------


def _failure(step: str, what: str, log: Path, fix: str) -> ProviderError:
    message = f"box build step '{step}' failed: {what}\n  log: {log}\n  fix: {fix}"
    with contextlib.suppress(OSError), log.open("a") as fh:
        fh.write(f"\n{message}\n")
    return ProviderError(message)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":/usr/local/sbin:/usr/sbin:/sbin"
    env.update(LC_ALL="C", LANG="C", DEBIAN_FRONTEND="noninteractive")
    return env


def _run(
    argv: Sequence[str],
    log: Path,
    *,
    step: str,
    fix: str,
    timeout: float = STEP_TIMEOUT,
    input_text: str | None = None,
    capture: bool = False,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run ``argv`` with its output appended to ``log``; return stdout when ``capture``."""
    with log.open("a") as fh:
        fh.write(f"$ {shlex.join(argv)}\n")
        fh.flush()
        try:
            proc = subprocess.run(
                list(argv),
                stdout=subprocess.PIPE if capture else fh,
                stderr=fh if capture else subprocess.STDOUT,
                stdin=None if input_text is not None else subprocess.DEVNULL,
                input=input_text,
                text=True,
                timeout=timeout,
                env=dict(env) if env is not None else _env(),
                check=False,
            )
        except FileNotFoundError:
            raise _failure(step, f"command not found: {argv[0]}", log, fix) from None
        except subprocess.TimeoutExpired:
            raise _failure(step, f"`{shlex.join(argv)}` did not finish within {timeout:.0f} s",
                           log, fix) from None
        if capture and proc.stdout:
            fh.write(proc.stdout)
    if proc.returncode != 0:
        raise _failure(step, f"`{shlex.join(argv)}` exited with {proc.returncode}", log, fix)
    return proc.stdout if capture else ""


@dataclass
class _Timer:
    report: Reporter
    times: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        self.times[name] = time.monotonic() - start
        self.report(f"box: {name} {self.times[name]:.0f} s")


# ---- the build -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Work:
    """Files of one build (all under ``<box_dir()>/work``)."""

    dir: Path

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def mnt(self) -> Path:
        return self.dir / "mnt"

    @property
    def raw(self) -> Path:
        return self.dir / "disk.raw"

    @property
    def qcow2(self) -> Path:
        return self.dir / "box.img"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"


def build_box(
    mirror: str = DEFAULT_MIRROR, report: Reporter = quiet, force: bool = False
) -> Path:
    """Build the box file of the current recipe (or reuse it) and return its path.

    Needs root. Takes about three minutes on two cores (debootstrap about 100 s, the
    software-emulated finalize boot about 30 s); each step's time goes to ``report``.
    """
    target = box_file()
    if target.is_file() and not force:
        return target
    root = box_dir()
    logs = logs_dir()
    logs.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock", report):
        if target.is_file() and not force:
            return target
        key = _preflight(logs / "box-preflight.log")
        report(f"box: building {target.name} ({SUITE} from {mirror}); about 3 minutes, "
               f"logs in {logs}")
        start = time.monotonic()
        _build(target, mirror, key, logs, report)
        size = target.stat().st_size / 2**20
        report(f"box: built {target} ({size:.0f} MiB) in {time.monotonic() - start:.0f} s")
    return target


@contextlib.contextmanager
def _locked(path: Path, report: Reporter) -> Iterator[None]:
    with path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(f"box: another build holds {path}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _preflight(log: Path) -> Path:
    log.write_text("")
    if os.geteuid() != 0:
        raise _failure("preflight", "building the box needs root (debootstrap, loop devices, "
                       "mounts)", log, "run `provisioner vagrant box` as root")
    missing = missing_tools()
    if not SEABIOS.is_file():
        missing.append((str(SEABIOS), "seabios"))
    if missing:
        packages = " ".join(sorted({pkg for _, pkg in missing}))
        raise _failure("preflight", "missing " + ", ".join(cmd for cmd, _ in missing), log,
                       f"apt-get install {packages}")
    key = find_vagrant_key()
    if key is None:
        raise _failure("preflight", "Vagrant's insecure public key was not found (looked for "
                       + ", ".join(VAGRANT_KEY_GLOBS) + ")", log, "apt-get install vagrant")
    return key


def _build(target: Path, mirror: str, key: Path, logs: Path, report: Reporter) -> None:
    work = _Work(box_dir() / "work")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        stale.unlink(missing_ok=True)
    # A build killed without its cleanup (SIGKILL, power loss) may have left mounts behind.
    problems = _release(work, logs / "box-image.log")
    if problems:
        raise _failure("cleanup of an earlier build", "; ".join(problems),
                       logs / "box-image.log", f"then delete {work.dir}")
    shutil.rmtree(work.dir, ignore_errors=True)
    work.dir.mkdir(parents=True)
    timer = _Timer(report)
    ok = False
    try:
        with timer.step("debootstrap"):
            _debootstrap(work.rootfs, mirror, logs / "box-debootstrap.log")
        with timer.step("configure"):
            _configure(work.rootfs, key, logs / "box-configure.log")
        with timer.step("image"):
            _make_image(work, logs / "box-image.log")
        with timer.step("finalize boot"):
            _finalize(work, logs / "box-finalize-console.log", logs / "box-finalize-qemu.log")
        with timer.step("qcow2 convert"):
            log = _fresh(logs / "box-convert.log")
            _run(["qemu-img", "convert", "-O", "qcow2", str(work.raw), str(work.qcow2)], log,
                 step="qcow2 convert", fix=f"check free space in {work.dir}")
        with timer.step("package"):
            _package(work.qcow2, tmp, _fresh(logs / "box-package.log"))
            os.replace(tmp, target)
        ok = True
    finally:
        tmp.unlink(missing_ok=True)
        problems = _release(work, logs / "box-image.log")
        if not problems:
            shutil.rmtree(work.dir, ignore_errors=True)
        for problem in problems:
            report(f"box: cleanup: {problem}")
        if ok and problems:
            raise ProviderError("box built, but cleanup failed: " + "; ".join(problems))


def _fresh(log: Path) -> Path:
    log.write_text("")
    return log


def _release(work: _Work, log: Path) -> list[str]:
    """Unmount everything under the work directory and detach the raw disk's loop devices.

    Returns what could not be released; the work directory is only deleted when nothing is
    mounted below it (deleting through a bind mount of /dev would be a disaster).
    """
    problems: list[str] = []
    if not work.dir.exists():
        return problems
    real = work.dir.resolve()
    for point in mounts_under(Path("/proc/self/mountinfo").read_text(), real):
        try:
            _run(["umount", str(point)], log, step="cleanup", fix="", timeout=120)
        except ProviderError:
            with contextlib.suppress(ProviderError):
                _run(["umount", "-l", str(point)], log, step="cleanup", fix="", timeout=120)
    left = mounts_under(Path("/proc/self/mountinfo").read_text(), real)
    if left:
        problems.append("still mounted: " + ", ".join(map(str, left)) + "; unmount them by hand")
    if work.raw.exists() and which("losetup"):
        try:
            out = _run(["losetup", "-j", str(work.raw)], log, step="cleanup", fix="",
                       capture=True, timeout=60)
        except ProviderError as exc:
            problems.append(str(exc))
            out = ""
        for dev in loop_devices(out):
            try:
                _run(["losetup", "-d", dev], log, step="cleanup", fix="", timeout=60)
            except ProviderError:
                problems.append(f"loop device {dev} is still attached; run `losetup -d {dev}`")
    return problems


def _debootstrap(rootfs: Path, mirror: str, log: Path) -> None:
    _fresh(log)
    cache = box_dir() / "debootstrap-cache"
    cache.mkdir(parents=True, exist_ok=True)
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--cache-dir={cache.resolve()}",
            "--include=" + ",".join(PACKAGES),
            SUITE,
            str(rootfs),
            mirror,
        ],
        log,
        step="debootstrap",
        fix=f"check that the mirror {mirror} is reachable from this host and serves Debian "
        f"{SUITE} (another mirror: --mirror URL); the log names the failing package",
    )


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def _passwd_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user and len(fields) >= 4:
            return int(fields[2]), int(fields[3])
    raise KeyError(user)


def _configure(root: Path, key: Path, log: Path) -> None:
    _fresh(log)
    fix = f"see {log}; the root filesystem is in {root.parent} until the next build"

    def chroot(*argv: str, check: bool = True, input_text: str | None = None) -> None:
        try:
            _run(["chroot", str(root), *argv], log, step="configure", fix=fix,
                 input_text=input_text)
        except ProviderError:
            if check:
                raise

    _write(root / "etc/hostname", f"{HOSTNAME}\n")
    _write(root / "etc/hosts", HOSTS)
    _write(root / "etc/fstab", FSTAB)
    _write(root / "etc/network/interfaces", INTERFACES)
    _write(root / "etc/resolv.conf", RESOLV_CONF)
    # The Vagrant base box user; root stays locked (Vagrant logs in as vagrant and uses sudo).
    chroot("useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", "vagrant")
    chroot("chpasswd", input_text="vagrant:vagrant\n")
    chroot("passwd", "--lock", "root")
    _write(root / "etc/sudoers.d/vagrant", SUDOERS, 0o440)
    uid, gid = _passwd_ids(root, "vagrant")
    ssh_dir = root / "home/vagrant/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    _write(ssh_dir / "authorized_keys", key.read_text(), 0o600)
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, uid, gid)
    # SSH: no host keys in the image; each VM makes an ed25519 key on first boot and prints it.
    _write(root / "etc/ssh/sshd_config.d/provisioner.conf", SSHD_CONFIG)
    for hostkey in (root / "etc/ssh").glob("ssh_host_*"):
        hostkey.unlink()
    _write(root / "etc/systemd/system/ssh-hostkeys.service", HOSTKEYS_UNIT)
    _write(root / "usr/local/sbin/provisioner-print-host-key", PRINT_HOST_KEY_SCRIPT, 0o755)
    _write(root / "etc/systemd/system/provisioner-print-host-key.service", PRINT_HOST_KEY_UNIT)
    chroot("systemctl", "enable", "ssh-hostkeys.service", "provisioner-print-host-key.service")
    for unit in DISABLED_UNITS:
        chroot("systemctl", "disable", unit, check=False)
    # Empty machine-id: every VM made from the box gets its own on first boot.
    _write(root / "etc/machine-id", "", 0o444)
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    # Boot: GRUB and the kernel on the serial console (libvirt logs it), classic eth0 naming.
    _write(root / "etc/default/grub", GRUB_DEFAULT)
    conf = root / "etc/initramfs-tools/initramfs.conf"
    conf.write_text(re.sub(r"(?m)^MODULES=.*$", "MODULES=list", conf.read_text()))
    _write(root / "etc/initramfs-tools/modules", "".join(f"{m}\n" for m in INITRAMFS_MODULES))
    mounts = [("/proc", "proc"), ("/sys", "sys"), ("/dev", "dev")]
    try:
        for source, target in mounts:
            _run(["mount", "--bind", source, str(root / target)], log, step="configure", fix=fix)
        chroot("update-initramfs", "-u", "-k", "all")
    finally:
        for point in _mounted(root):
            with contextlib.suppress(ProviderError):
                _run(["umount", str(point)], log, step="configure", fix=fix)
    left = _mounted(root)
    if left:
        raise _failure("configure", "still mounted: " + ", ".join(map(str, left)), log,
                       "unmount them by hand (umount -l PATH)")
    chroot("apt-get", "clean")


def _mounted(root: Path) -> list[Path]:
    return mounts_under(Path("/proc/self/mountinfo").read_text(), root.resolve())


def _make_image(work: _Work, log: Path) -> None:
    """Partition a sparse raw disk, make ext4 on partition 1 and copy the root filesystem."""
    _fresh(log)
    fix = "this needs root and a free loop device (`losetup -f`); see the log"
    with work.raw.open("wb") as fh:
        fh.truncate(DISK_GIB * 2**30)
    _run(["parted", "-s", str(work.raw), "mklabel", "msdos",
          "mkpart", "primary", "ext4", f"{PARTITION_START}B", "100%", "set", "1", "boot", "on"],
         log, step="image", fix=fix)
    table = _run(["parted", "-s", "-m", str(work.raw), "unit", "B", "print"], log,
                 step="image", fix=fix, capture=True)
    try:
        start, size = first_partition(table)
    except ValueError as exc:
        raise _failure("image", str(exc), log, fix) from None
    # The host kernel cannot scan partitions of loop devices: map partition 1 by offset.
    loop = _run(["losetup", "--show", "-f", "--offset", str(start), "--sizelimit", str(size),
                 str(work.raw)], log, step="image", fix=fix, capture=True).strip()
    try:
        _run(["mkfs.ext4", "-q", "-L", "root", loop], log, step="image", fix=fix)
        work.mnt.mkdir(exist_ok=True)
        _run(["mount", loop, str(work.mnt)], log, step="image", fix=fix)
        try:
            _run(["rsync", "-aHAX", "--numeric-ids", f"{work.rootfs}/", f"{work.mnt}/"], log,
                 step="image", fix=f"check free space in {work.dir}; see the log")
            _write(work.mnt / FINALIZE_SCRIPT.lstrip("/"), FINALIZE, 0o755)
            kernel, initrd = _newest_kernel(work.mnt / "boot")
            shutil.copyfile(kernel, work.kernel)
            shutil.copyfile(initrd, work.initrd)
        finally:
            with contextlib.suppress(ProviderError):
                _run(["umount", str(work.mnt)], log, step="image", fix=fix)
    finally:
        with contextlib.suppress(ProviderError):
            _run(["losetup", "-d", loop], log, step="image", fix=fix)
    # The disk is booted next: nothing on the host may still have it mounted or attached.
    problems = _release(work, log)
    if problems:
        raise _failure("image", "; ".join(problems), log, "release them by hand, then rebuild")


def _newest_kernel(boot: Path) -> tuple[Path, Path]:
    kernels = sorted(boot.glob("vmlinuz-*"), key=lambda p: _version_key(p.name))
    if not kernels:
        raise ProviderError(f"no kernel in {boot}: linux-image-amd64 was not installed")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = boot / f"initrd.img-{version}"
    if not initrd.is_file():
        raise ProviderError(f"no initramfs {initrd}: update-initramfs failed")
    return kernels[-1], initrd


def finalize_command(work_raw: Path, kernel: Path, initrd: Path, console: Path) -> list[str]:
    """The qemu command line of the finalize boot (TCG, serial console to a file, no net)."""
    drive = str(work_raw).replace(",", ",,")
    return [
        "qemu-system-x86_64",
        "-accel", "tcg",
        "-machine", "pc",
        "-m", str(FINALIZE_MEMORY_MIB),
        "-smp", "1",
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        "-serial", f"file:{console}",
        "-drive", f"file={drive},format=raw,if=virtio",
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", f"root=LABEL=root rw console=ttyS0,115200n8 init={FINALIZE_SCRIPT} panic=-1",
    ]


def _finalize(work: _Work, console: Path, log: Path) -> None:
    """Boot the disk once under TCG with init= the finalize script; wait for its marker."""
    _fresh(console)
    _fresh(log)
    fix = f"read the console log {console} (kernel panic? missing module in the initramfs?)"
    argv = finalize_command(work.raw, work.kernel, work.initrd, console)
    with log.open("a") as fh:
        fh.write(f"$ {shlex.join(argv)}\n")
        fh.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + FINALIZE_TIMEOUT
    done_at: float | None = None
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if now > deadline:
                raise _failure("finalize boot", f"no power-off within {FINALIZE_TIMEOUT:.0f} s",
                               console, fix)
            text = console.read_text(errors="replace")
            if done_at is None and (FINALIZE_OK in text or FINALIZE_FAILED in text):
                done_at = now
            # The marker comes after sync and a read-only remount: a missing power-off is
            # not worth waiting long for.
            if done_at is not None and now - done_at > 60:
                break
            time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    text = console.read_text(errors="replace")
    if FINALIZE_OK not in text:
        what = ("grub-install or update-grub failed inside the image"
                if FINALIZE_FAILED in text else
                f"the boot ended (qemu exit {proc.returncode}) without {FINALIZE_OK!r}")
        raise _failure("finalize boot", what + f"; qemu's own output is in {log}", console, fix)


def _package(image: Path, out: Path, log: Path) -> None:
    """Write the box: metadata.json, info.json, the box Vagrantfile and box.img."""
    try:
        with tarfile.open(out, "w") as tar:
            for name, text in (
                ("metadata.json", metadata_json()),
                ("info.json", info_json()),
                ("Vagrantfile", BOX_VAGRANTFILE),
            ):
                data = text.encode()
                member = tarfile.TarInfo(name)
                member.size = len(data)
                member.mode = 0o644
                member.mtime = int(time.time())
                tar.addfile(member, io.BytesIO(data))
            tar.add(image, arcname="box.img")
    except OSError as exc:
        raise _failure("package", str(exc), log, f"check free space in {out.parent}") from None


# ---- Vagrant -------------------------------------------------------------------------------


def _vagrant(env: Mapping[str, str]) -> str:
    found = shutil.which("vagrant", path=env.get("PATH"))
    if found is None:
        raise ProviderError("vagrant is not installed: apt-get install vagrant vagrant-libvirt")
    return found


def installed_boxes(env: Mapping[str, str]) -> list[InstalledBox]:
    """What ``vagrant box list`` shows in the Vagrant home of ``env``."""
    argv = [_vagrant(env), "box", "list", "--machine-readable"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=dict(env),
                              stdin=subprocess.DEVNULL, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise ProviderError("`vagrant box list` did not finish within 300 s") from None
    if proc.returncode != 0:
        detail = "\n  ".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
        raise ProviderError(
            f"`vagrant box list` failed with exit code {proc.returncode} (is VAGRANT_HOME "
            f"{env.get('VAGRANT_HOME', '~/.vagrant.d')} readable?):\n  {detail}"
        )
    return parse_box_list(proc.stdout)


def box_installed(name: str, env: Mapping[str, str]) -> bool:
    """True when Vagrant (with environment ``env``) has box ``name`` for libvirt."""
    return any(b.name == name and b.provider == PROVIDER for b in installed_boxes(env))


def _current_installed(name: str, env: Mapping[str, str]) -> bool | None:
    """True: installed from this recipe; False: from another recipe; None: not installed."""
    mine = [b for b in installed_boxes(env) if b.name == name and b.provider == PROVIDER]
    if not mine:
        return None
    return any(b.info.get("provisioner_recipe") == str(RECIPE_VERSION) for b in mine)


def add_box(name: str, path: Path, env: Mapping[str, str]) -> None:
    """``vagrant box add --force --name NAME PATH``."""
    logs_dir().mkdir(parents=True, exist_ok=True)
    log = _fresh(logs_dir() / "box-add.log")
    _run([_vagrant(env), "box", "add", "--force", "--name", name, str(path)], log,
         step="vagrant box add", fix="see the log; is there room in VAGRANT_HOME "
         f"({env.get('VAGRANT_HOME', '~/.vagrant.d')})?", env=env)


def ensure_box(
    name: str,
    env: Mapping[str, str],
    report: Reporter = quiet,
    force: bool = False,
    *,
    mirror: str = DEFAULT_MIRROR,
) -> bool:
    """Make Vagrant have box ``name`` when it is the box this project builds.

    For ``BOX_NAME``: unless it is installed from the current recipe (or with ``force``),
    build the box file (reused when present, rebuilt with ``force``) and add it; True when it
    was added. Any other name is left to ``vagrant up``, which downloads public boxes itself.
    """
    if name != BOX_NAME:
        return False
    state = None if force else _current_installed(name, env)
    if state:
        return False
    if state is False:
        report(f"box: {name} is installed from another recipe; replacing it with r{RECIPE_VERSION}")
    path = build_box(mirror=mirror, report=report, force=force)
    start = time.monotonic()
    add_box(name, path, env)
    report(f"box: vagrant box add {time.monotonic() - start:.0f} s")
    return True
