"""Unit tests of the offline Vagrant box that need neither root nor a build.

Scope: reading the host key from a console log, the box file's contents and name, parsing
``vagrant box list``, mountinfo, ``losetup`` and ``parted`` output, the host checks, the
finalize boot's command line, ``ensure_box`` (with a test double ``vagrant`` on PATH) and the CLI.
"""

from __future__ import annotations

import base64
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from provisioner.cli import app
from provisioner.providers.base import ProviderError
from provisioner.providers.vagrant import box

runner = CliRunner()


def _ed25519() -> str:
    """A fresh ``ssh-ed25519 AAAA...`` public key (type and base64, no comment)."""
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private box cache directory."""
    root = tmp_path / "vagrant"
    monkeypatch.setenv(box.ENV_DIR, str(root))
    return root


# ---- host key on the console ----------------------------------------------------------------


def _boot(key_line: str) -> str:
    """Console text of one boot as libvirt logs it: CRLF, colours, kernel lines."""
    return (
        "\x1b[2J\x1b[01;01HBooting `Debian GNU/Linux'\r\r\n\r\n"
        "Loading Linux 6.1.0-31-amd64 ...\r\n"
        "[    0.000000] Linux version 6.1.0-31-amd64 (debian-kernel@lists.debian.org)\r\n"
        "[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz root=UUID=x ro console=ttyS0\r\n"
        "[  OK  ] Started \x1b[0;1;39mssh-hostkeys.service\x1b[0m - Generate the SSH host key.\r\n"
        "         Starting \x1b[0;1;39mprovisioner-print-host-key.service\x1b[0m...\r\n"
        f"{key_line}\r\n"
        "[  OK  ] Finished provisioner-print-host-key.service.\r\n"
        "\r\nDebian GNU/Linux 12 debian12 ttyS0\r\n\r\ndebian12 login: "
    )


def test_host_key_is_read_from_a_realistic_console_log() -> None:
    """The marker line of one boot gives the key without its comment."""
    key = _ed25519()
    text = _boot(f"{box.HOST_KEY_MARKER}{key} root@debian12")
    assert box.host_key_from_console(text) == key


def test_the_last_boot_wins() -> None:
    """A console log keeps every boot; a re-created VM's new key is the one that counts."""
    first, second = _ed25519(), _ed25519()
    text = _boot(f"{box.HOST_KEY_MARKER}{first} root@debian12") + _boot(
        f"{box.HOST_KEY_MARKER}{second} root@node1"
    )
    assert box.host_key_from_console(text) == second
    # A later garbled line does not replace a good key with garbage.
    text += _boot(f"{box.HOST_KEY_MARKER}{_ed25519()[:40]}")
    assert box.host_key_from_console(text) == second


def test_the_marker_may_follow_noise_on_the_same_line() -> None:
    """A kernel message without a newline before the marker does not hide the key."""
    key = _ed25519()
    text = _boot(f"[   12.3] random: crng init done{box.HOST_KEY_MARKER}{key}")
    assert box.host_key_from_console(text) == key


@pytest.mark.parametrize(
    "line",
    [
        "",  # no marker at all
        "{marker}{key}[   12.345678] virtio_net virtio0 eth0: renamed",  # noise glued on
        "{marker}{key}\x1b[0m",  # a control sequence after the key
        "{marker}{truncated}",  # cut short
        "{marker}ssh-rsa {key_b64}",  # another type name
        "{marker}ssh-ed25519 {rsa_b64}",  # base64 that is no ed25519 key
        "{marker}ssh-ed25519 {key_b64}!",  # not base64
        "{marker}ssh-ed25519  {key_b64}",  # two spaces
        "{marker_no_space}{key}",  # marker without its space
        "provisioner-ssh-host-key {key}",  # marker without its colon
    ],
)
def test_bogus_lines_are_rejected(line: str) -> None:
    """Only a well-formed line with a real ed25519 key counts."""
    key = _ed25519()
    rsa = base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + b"\x01" * 44).decode()
    text = line.format(
        marker=box.HOST_KEY_MARKER,
        marker_no_space=box.HOST_KEY_MARKER.rstrip(),
        key=key,
        key_b64=key.split()[1],
        truncated=key[:-4],
        rsa_b64=rsa,
    )
    assert box.host_key_from_console(_boot(text)) is None


def test_the_image_prints_the_line_the_host_parses() -> None:
    """The box's print script and the parser share the marker: run its printf for real."""
    key = _ed25519()
    fmt = f"{box.HOST_KEY_MARKER}%s\\n"
    assert f"printf '{fmt}' \"$key\" > /dev/ttyS0" in box.PRINT_HOST_KEY_SCRIPT
    printed = subprocess.run(
        ["sh", "-c", f"printf '{fmt}' \"$1\"", "sh", f"{key} root@debian12"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert printed.count("\n") == 1
    assert box.host_key_from_console(printed) == key
    # It runs on every boot after the key exists, before sshd answers.
    unit = box.PRINT_HOST_KEY_UNIT
    assert "After=ssh-hostkeys.service" in unit and "Before=ssh.service" in unit
    assert "RemainAfterExit" not in unit and "WantedBy=multi-user.target" in unit


def test_only_an_ed25519_host_key_is_made_on_first_boot() -> None:
    """RSA keygen is slow under TCG: the unit makes ed25519 and sshd uses only that key."""
    assert "-t ed25519" in box.HOSTKEYS_UNIT
    assert f"ConditionPathExists=!{box.HOST_KEY_FILE}" in box.HOSTKEYS_UNIT
    assert f"HostKey {box.HOST_KEY_FILE}\n" in box.SSHD_CONFIG
    assert "UseDNS no" in box.SSHD_CONFIG


# ---- box file ---------------------------------------------------------------------------------


def test_metadata_and_vagrantfile() -> None:
    """A libvirt box with a 10 GiB qcow2 disk on virtio."""
    assert json.loads(box.metadata_json()) == {
        "provider": "libvirt",
        "format": "qcow2",
        "virtual_size": 10,
    }
    assert 'libvirt.disk_bus = "virtio"' in box.BOX_VAGRANTFILE
    assert 'libvirt.nic_model_type = "virtio"' in box.BOX_VAGRANTFILE
    assert box.BOX_VAGRANTFILE.startswith('Vagrant.configure("2") do |config|')
    assert json.loads(box.info_json()) == {"provisioner_recipe": str(box.RECIPE_VERSION)}


def test_package_writes_a_box_vagrant_can_add(tmp_path: Path) -> None:
    """The tar holds metadata.json, info.json, Vagrantfile and box.img at its root."""
    image = tmp_path / "box.img"
    image.write_bytes(b"QFI\xfb" + b"\0" * 1000)
    out = tmp_path / "test.box"
    box._package(image, out, tmp_path / "package.log")
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert names == ["metadata.json", "info.json", "Vagrantfile", "box.img"]
        meta = tar.extractfile("metadata.json")
        vfile = tar.extractfile("Vagrantfile")
        img = tar.extractfile("box.img")
        assert meta is not None and vfile is not None and img is not None
        assert meta.read().decode() == box.metadata_json()
        assert vfile.read().decode() == box.BOX_VAGRANTFILE
        assert img.read() == image.read_bytes()


def test_paths_follow_the_environment(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Box files live under <dir>/boxes, named by recipe version; logs under <dir>/logs."""
    assert box.box_dir() == cache
    assert box.box_file() == cache / "boxes" / f"debian12-libvirt-r{box.RECIPE_VERSION}.box"
    assert box.logs_dir() == cache / "logs"
    monkeypatch.setattr(box, "RECIPE_VERSION", 7)
    assert box.box_file().name == "debian12-libvirt-r7.box"
    monkeypatch.delenv(box.ENV_DIR)
    assert box.box_dir() == Path("/var/lib/provisioner/vagrant")


def test_an_existing_box_file_is_reused_without_building(cache: Path) -> None:
    """build_box returns the file of this recipe at once (no root, no tools needed)."""
    target = box.box_file()
    target.parent.mkdir(parents=True)
    target.write_bytes(b"box")
    assert box.build_box(report=pytest.fail) == target
    assert not (cache / "work").exists()


# ---- vagrant box list -----------------------------------------------------------------------

BOX_LIST = """1700000000,,ui,info,generic/debian12 (virtualbox%!(VAGRANT_COMMA) 4.3.12)
1700000000,,box-name,generic/debian12
1700000000,,box-provider,virtualbox
1700000000,,box-version,4.3.12
1700000000,,ui,info,provisioner/debian12 (libvirt%!(VAGRANT_COMMA) 0)
1700000000,,box-name,provisioner/debian12
1700000000,,box-provider,libvirt
1700000000,,box-version,0
1700000000,,box-info,provisioner_recipe,{recipe}
1700000000,,box-info,note,a%!(VAGRANT_COMMA) b
1700000001,,box-name,other/box
1700000001,,box-provider,libvirt
1700000001,,box-version,1.0
"""


def test_box_list_is_parsed() -> None:
    """Names, providers, versions and info; escaped commas come back."""
    boxes = box.parse_box_list(BOX_LIST.format(recipe="1"))
    assert [(b.name, b.provider, b.version) for b in boxes] == [
        ("generic/debian12", "virtualbox", "4.3.12"),
        ("provisioner/debian12", "libvirt", "0"),
        ("other/box", "libvirt", "1.0"),
    ]
    assert boxes[1].info == {"provisioner_recipe": "1", "note": "a, b"}
    assert boxes[0].info == {} and boxes[2].info == {}
    empty = "1700000000,,ui,warn,There are no installed boxes! Use `vagrant box add` to add some."
    assert box.parse_box_list(empty) == []


def _fake_vagrant(tmp_path: Path, list_output: str) -> dict[str, str]:
    """A test double ``vagrant`` on PATH that prints ``list_output`` and records every call."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (tmp_path / "list.txt").write_text(list_output)
    script = bindir / "vagrant"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {tmp_path}/calls.txt\n'
        f'if [ "$1 $2" = "box list" ]; then cat {tmp_path}/list.txt; fi\n'
    )
    script.chmod(0o755)
    return {"PATH": f"{bindir}:/usr/bin:/bin", "VAGRANT_HOME": str(tmp_path / "vhome")}


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_box_installed_asks_vagrant_with_the_given_environment(tmp_path: Path) -> None:
    """Installed means listed for the libvirt provider."""
    env = _fake_vagrant(tmp_path, BOX_LIST.format(recipe="1"))
    assert box.box_installed("provisioner/debian12", env)
    assert box.box_installed("other/box", env)
    assert not box.box_installed("generic/debian12", env)  # virtualbox only
    assert not box.box_installed("generic/debian", env)
    assert _calls(tmp_path)[0] == "box list --machine-readable"


def test_ensure_box_leaves_other_boxes_to_vagrant_up(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any other box name: nothing is run, built or added."""
    env = _fake_vagrant(tmp_path, "")
    monkeypatch.setattr(box, "build_box", lambda *a, **k: pytest.fail("built"))
    lines: list[str] = []
    assert box.ensure_box("generic/debian12", env, lines.append) is False
    assert box.ensure_box("generic/debian12", env, lines.append, force=True) is False
    assert _calls(tmp_path) == []
    assert lines == []
    assert not cache.exists()


def test_ensure_box_adds_the_box_only_when_needed(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed from this recipe: nothing. From another recipe, or forced: build and add."""
    built: list[tuple[str, bool]] = []
    boxfile = tmp_path / "built.box"

    def fake_build(mirror: str = box.DEFAULT_MIRROR, report: object = None,
                   force: bool = False) -> Path:
        built.append((mirror, force))
        return boxfile

    monkeypatch.setattr(box, "build_box", fake_build)
    env = _fake_vagrant(tmp_path, BOX_LIST.format(recipe=str(box.RECIPE_VERSION)))
    assert box.ensure_box(box.BOX_NAME, env) is False
    assert built == []

    env = _fake_vagrant(tmp_path, BOX_LIST.format(recipe=str(box.RECIPE_VERSION + 1)))
    lines: list[str] = []
    assert box.ensure_box(box.BOX_NAME, env, lines.append, mirror="http://mirror/debian")
    assert built == [("http://mirror/debian", False)]
    assert f"box add --force --name {box.BOX_NAME} {boxfile}" in _calls(tmp_path)
    assert any("another recipe" in line for line in lines)
    assert any(line.startswith("box: vagrant box add ") for line in lines)

    env = _fake_vagrant(tmp_path, BOX_LIST.format(recipe=str(box.RECIPE_VERSION)))
    assert box.ensure_box(box.BOX_NAME, env, force=True)
    assert built[-1] == (box.DEFAULT_MIRROR, True)


def test_missing_vagrant_names_the_package(tmp_path: Path) -> None:
    """Without vagrant on PATH the error says what to install."""
    with pytest.raises(ProviderError, match="apt-get install vagrant"):
        box.box_installed(box.BOX_NAME, {"PATH": str(tmp_path)})


# ---- host helpers -------------------------------------------------------------------------


def test_mounts_under_lists_the_build_mounts_deepest_first() -> None:
    """Only mounts at or below the work directory; octal escapes decoded; stacked twice."""
    mountinfo = (
        "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "30 22 0:5 / /var/lib/v/work/rootfs/proc rw - proc proc rw\n"
        "31 22 0:5 / /var/lib/v/work/rootfs/dev rw - devtmpfs udev rw\n"
        "32 22 0:5 / /var/lib/v/work/rootfs/dev rw - devtmpfs udev rw\n"
        "33 22 7:0 / /var/lib/v/work/m\\040nt rw - ext4 /dev/loop0 rw\n"
        "34 22 7:1 / /var/lib/v/work2 rw - ext4 /dev/loop1 rw\n"
        "35 30 0:6 / /var/lib/v/work/rootfs/proc/sys/fs/binfmt_misc rw - binfmt_misc b rw\n"
    )
    found = box.mounts_under(mountinfo, Path("/var/lib/v/work"))
    assert found[0] == Path("/var/lib/v/work/rootfs/proc/sys/fs/binfmt_misc")
    assert sorted(map(str, found)) == [
        "/var/lib/v/work/m nt",
        "/var/lib/v/work/rootfs/dev",
        "/var/lib/v/work/rootfs/dev",
        "/var/lib/v/work/rootfs/proc",
        "/var/lib/v/work/rootfs/proc/sys/fs/binfmt_misc",
    ]


def test_loop_devices_and_partition_table_are_parsed() -> None:
    """``losetup -j`` and ``parted -m unit B print`` output."""
    out = (
        "/dev/loop3: [65024]:1234 (/var/lib/v/work/disk.raw), offset 1048576, sizelimit 9\n"
        "/dev/loop5: [65024]:1234 (/var/lib/v/work/disk.raw)\n"
    )
    assert box.loop_devices(out) == ["/dev/loop3", "/dev/loop5"]
    assert box.loop_devices("") == []
    table = (
        "BYT;\n"
        "/var/lib/v/work/disk.raw:10737418240B:file:512:512:msdos::;\n"
        "1:1048576B:10737418239B:10736369664B:::boot;\n"
    )
    assert box.first_partition(table) == (1048576, 10736369664)
    with pytest.raises(ValueError, match="no partition 1"):
        box.first_partition("BYT;\n/x:1B:file:512:512:msdos::;\n")


def test_missing_tools_name_their_packages(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preflight error lists every missing tool and one apt-get line."""
    absent = {"debootstrap", "qemu-img"}
    assert box.missing_tools(lambda c: None if c in absent else f"/usr/bin/{c}") == [
        ("debootstrap", "debootstrap"),
        ("qemu-img", "qemu-utils"),
    ]
    monkeypatch.setattr(box.os, "geteuid", lambda: 0)
    monkeypatch.setattr(box, "which", lambda c: None if c in absent else f"/usr/bin/{c}")
    log = cache / "preflight.log"
    cache.mkdir()
    with pytest.raises(ProviderError) as exc:
        box._preflight(log)
    message = str(exc.value)
    assert "'preflight'" in message and "apt-get install debootstrap qemu-utils" in message
    assert str(log) in message and "apt-get install" in log.read_text()


def test_building_needs_root(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root: a clear message before anything happens."""
    monkeypatch.setattr(box.os, "geteuid", lambda: 1000)
    # Should the check ever be lost, the test must not start a real ten-minute build.
    monkeypatch.setattr(box, "_build", lambda *a, **k: pytest.fail("build started"))
    with pytest.raises(ProviderError, match="needs root"):
        box.build_box()
    assert not (cache / "work").exists()


def test_vagrant_key_of_the_newest_vagrant_is_used(tmp_path: Path) -> None:
    """Several installed gem versions: 2.10 is newer than 2.9."""
    for version in ("2.9.1", "2.10.0"):
        keys = tmp_path / f"vagrant-{version}" / "keys"
        keys.mkdir(parents=True)
        (keys / "vagrant.pub").write_text(f"ssh-rsa AAAA {version}\n")
    pattern = str(tmp_path / "vagrant-*" / "keys" / "vagrant.pub")
    found = box.find_vagrant_key([str(tmp_path / "none" / "*.pub"), pattern])
    assert found == tmp_path / "vagrant-2.10.0" / "keys" / "vagrant.pub"
    assert box.find_vagrant_key([str(tmp_path / "none" / "*.pub")]) is None


def test_finalize_boot_command() -> None:
    """TCG, no network, serial to a file, the finalize script as init; commas escaped."""
    argv = box.finalize_command(
        Path("/d/a,b.raw"), Path("/d/vmlinuz"), Path("/d/initrd.img"), Path("/l/console.log")
    )
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert "-nodefaults" in argv and "-no-reboot" in argv
    assert argv[argv.index("-serial") + 1] == "file:/l/console.log"
    assert argv[argv.index("-drive") + 1] == "file=/d/a,,b.raw,format=raw,if=virtio"
    append = argv[argv.index("-append") + 1]
    assert f"init={box.FINALIZE_SCRIPT}" in append and "root=LABEL=root" in append
    # The success marker is what the script's echo prints for result=ok, after the sync.
    script = box.FINALIZE
    echo = next(line for line in script.splitlines() if line.startswith('echo "provisioner'))
    printed = subprocess.run(["sh", "-c", f"result=ok; {echo}"], capture_output=True,
                             text=True, check=True).stdout
    assert printed == f"{box.FINALIZE_OK}\n"
    assert box.FINALIZE_OK not in script  # a script echoed by mistake is no success
    assert script.index("sync") < script.index(echo)
    assert f"rm -f {box.FINALIZE_SCRIPT}" in script


def test_boot_configuration() -> None:
    """Serial console, classic interface names, DHCP on eth0, virtio in the initramfs."""
    assert "GRUB_TIMEOUT=0" in box.GRUB_DEFAULT
    assert "console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0" in box.GRUB_DEFAULT
    assert "allow-hotplug eth0\niface eth0 inet dhcp" in box.INTERFACES
    assert box.FSTAB.startswith("LABEL=root / ext4 ")
    assert {"virtio_blk", "virtio_net", "virtio_pci", "ext4"} <= set(box.INITRAMFS_MODULES)
    assert {"linux-image-amd64", "grub-pc", "openssh-server", "python3-apt"} <= set(box.PACKAGES)


# ---- CLI ------------------------------------------------------------------------------------


def test_cli_box_reports_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ProviderError exits 1 with its message."""

    def fail(*args: object, **kwargs: object) -> bool:
        raise ProviderError("box build step 'debootstrap' failed: boom")

    monkeypatch.setattr(box, "ensure_box", fail)
    result = runner.invoke(app, ["vagrant", "box"])
    assert result.exit_code == 1
    assert "error: box build step 'debootstrap' failed: boom" in result.output


def test_cli_box_passes_force_and_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    """--force and --mirror reach ensure_box, which gets the process environment."""
    seen: dict[str, object] = {}

    def fake(name: str, env: object, report: object = None, force: bool = False, *,
             mirror: str = "") -> bool:
        seen.update(name=name, force=force, mirror=mirror, env=env)
        return True

    monkeypatch.setattr(box, "ensure_box", fake)
    result = runner.invoke(app, ["vagrant", "box", "--force", "--mirror", "http://m/debian"])
    assert result.exit_code == 0, result.output
    assert seen["name"] == box.BOX_NAME and seen["force"] is True
    assert seen["mirror"] == "http://m/debian"
    assert "added to Vagrant" in result.output and "total " in result.output
