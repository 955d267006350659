"""store.home: default resolution, layout, directory creation and modes, clear errors."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from callrec.store.catalogue.db import parse_when
from callrec.store.errors import InvalidArgument, NotFound, StoreError
from callrec.store.home import Home, default_home, recording_name
from callrec.store.objects.local import RecordingStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_default_home_prefers_callrec_home(tmp_path: Path) -> None:
    env = {"CALLREC_HOME": str(tmp_path / "data"), "HOME": "/home/someone"}
    assert default_home(env) == tmp_path / "data"


def test_default_home_falls_back_to_local_share() -> None:
    assert default_home({"HOME": "/home/someone"}) == Path("/home/someone/.local/share/callrec")
    assert default_home({"HOME": "/home/someone", "CALLREC_HOME": "  "}) == Path(
        "/home/someone/.local/share/callrec"
    )


def test_default_home_expands_tilde_from_the_given_environment() -> None:
    assert default_home({"HOME": "/home/x", "CALLREC_HOME": "~/rec"}) == Path("/home/x/rec")


def test_default_home_makes_relative_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_home({"CALLREC_HOME": "rel"}) == tmp_path / "rel"


def test_paths() -> None:
    home = Home("/srv/callrec")
    assert home.catalogue_path == Path("/srv/callrec/catalogue.db")
    assert home.recordings == Path("/srv/callrec/recordings")
    assert home.spool == Path("/srv/callrec/spool")
    assert home.tmp == Path("/srv/callrec/tmp")
    assert repr(home) == "Home('/srv/callrec')"


def test_open_create_makes_every_directory_0700(tmp_path: Path, umask_022: None) -> None:
    home = Home(tmp_path / "a" / "b" / "home").open(create=True)
    for directory in home.directories():
        assert directory.is_dir()
        assert mode(directory) == 0o700, directory
    assert not home.catalogue_path.exists()  # the catalogue is made by Catalogue, not by Home


def test_open_create_is_idempotent_and_leaves_existing_modes(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.mkdir(mode=0o750)
    os.chmod(root, 0o750)
    Home(root).open(create=True)
    Home(root).open(create=True)
    assert mode(root) == 0o750  # an admin's choice for an existing directory is kept
    assert mode(root / "recordings") == 0o700


def test_open_existing_without_catalogue_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"^no catalogue in .*/missing: run `callrec import` first$"):
        Home(tmp_path / "missing").open(create=False)
    Home(tmp_path / "empty").open(create=True)
    with pytest.raises(NotFound, match="run `callrec import` first"):
        Home(tmp_path / "empty").open(create=False)


def test_open_existing_with_catalogue(tmp_path: Path) -> None:
    home = Home(tmp_path).open(create=True)
    home.catalogue_path.write_bytes(b"")
    assert Home(tmp_path).open(create=False).root == tmp_path


def test_open_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(StoreError, match="is not a directory"):
        Home(target).open(create=False)
    with pytest.raises(StoreError, match="exists and is not a directory"):
        Home(target).open(create=True)


def test_open_create_below_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create .*file/home"):
        Home(tmp_path / "file" / "home").open(create=True)


def test_open_reports_unwritable_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Home(tmp_path).open(create=True)
    (tmp_path / "catalogue.db").write_bytes(b"")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == tmp_path else real_access(p, m))
    with pytest.raises(StoreError, match=rf"^cannot write to {tmp_path}: permission denied$"):
        Home(tmp_path).open(create=False)


def _check_permission_errors(locked: Path) -> None:
    with pytest.raises(StoreError, match="permission denied"):
        Home(locked / "home").open(create=True)
    with pytest.raises(StoreError, match="cannot write to"):
        Home(locked).open(create=True)


def test_open_reports_real_permission_problems(tmp_path: Path) -> None:
    """A directory the user may not write to. As root (CI) the check runs in a child process that
    has dropped to the unprivileged user ``nobody``, since root may write anywhere."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        os.chmod(locked, 0o500)
        try:
            _check_permission_errors(locked)
        finally:
            os.chmod(locked, 0o700)
        return
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        os.chmod(top, 0o755)  # nobody may look inside but not write
        locked = Path(top) / "locked"
        locked.mkdir(mode=0o755)
        pid = os.fork()
        if pid == 0:  # child: drop privileges, run the checks, report by exit code
            code = 1
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                _check_permission_errors(locked)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "permission errors not reported as nobody"


def test_recording_name_is_laid_out_by_utc_date() -> None:
    assert recording_name(parse_when("2026-11-28T14:02:03.120Z"), 42) == "recordings/2026/11/28/42.wav"
    assert (
        recording_name(parse_when("2026-11-28T23:59:59.999999999"), 7, ".mp3")
        == "recordings/2026/11/28/7.mp3"
    )
    assert recording_name(parse_when("2026-11-29T00:30+01:00"), 7) == "recordings/2026/11/28/7.wav"
    assert Home("/x").recording_name(parse_when("2027-01-01"), 1) == "recordings/2027/01/01/1.wav"


@pytest.mark.parametrize("suffix", ["wav", "./wav", ".a/b"])
def test_recording_name_rejects_bad_suffixes(suffix: str) -> None:
    with pytest.raises(InvalidArgument):
        recording_name(0, 1, suffix)


def test_recording_store_writes_under_the_home_with_tmp(tmp_path: Path) -> None:
    home = Home(tmp_path).open(create=True)
    store = home.recording_store()
    assert isinstance(store, RecordingStore)
    assert store.root == tmp_path and store.tmp_dir == home.tmp
    stored = store.write(home.recording_name(parse_when("2026-11-28"), 5), [b"RIFF"])
    assert stored.path == tmp_path / "recordings/2026/11/28/5.wav"
    assert stored.relative_path == "recordings/2026/11/28/5.wav"
    assert list(home.tmp.iterdir()) == []
