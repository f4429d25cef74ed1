"""Bundles extract safely without ``tarfile``'s ``filter`` argument (absent from Debian 12's
own Python 3.11.2): only regular files and directories, inside the destination."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from provisioner.artifacts.files import UnsafeArchiveError, safe_extract


def _tar(tmp: Path, *members: tarfile.TarInfo, data: bytes = b"x") -> Path:
    path = tmp / "b.tar"
    with tarfile.open(path, "w") as tar:
        for m in members:
            if m.isfile():
                m.size = len(data)
                tar.addfile(m, io.BytesIO(data))
            else:
                tar.addfile(m)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644,
            link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.mode, m.linkname = kind, mode, link
    return m


def test_regular_files_and_dirs_extract_with_safe_modes(tmp_path: Path) -> None:
    path = _tar(tmp_path, _member("./d", tarfile.DIRTYPE, 0o777), _member("./d/f", mode=0o4777),
                _member("top", mode=0o600))
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(path) as tar:
        safe_extract(tar, dest)
    assert (dest / "d" / "f").read_bytes() == b"x"
    assert (dest / "d" / "f").stat().st_mode & 0o7777 == 0o755  # no setuid, no o+w
    assert (dest / "top").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("member", [
    _member("../evil"),
    _member("/etc/evil"),
    _member("a/../../evil"),
    _member("link", tarfile.SYMTYPE, link="/etc/passwd"),
    _member("hard", tarfile.LNKTYPE, link="/etc/passwd"),
    _member("dev", tarfile.CHRTYPE),
    _member("fifo", tarfile.FIFOTYPE),
])
def test_members_leaving_the_destination_or_not_plain_are_refused(
        tmp_path: Path, member: tarfile.TarInfo) -> None:
    path = _tar(tmp_path, member)
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(path) as tar, pytest.raises(UnsafeArchiveError):
        safe_extract(tar, dest)
    assert not (tmp_path / "evil").exists()
