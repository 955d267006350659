"""Odd arguments get a one-line error naming the value, never a traceback (issue 18, items 8 and 12):
call ids and counts in ASCII digits only and within what the catalogue holds; capture files that are
not regular files (a FIFO would hang the import forever, a pipe cannot be walked) refused by name
before anything is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from callrec.capture.model.errors import UnsupportedFormat
from callrec.capture.sources.capture_file import open_capture
from tests.helpers.fixture_check import FIXTURES, run_cli
from tests.helpers.keyset import provision

BASIC = FIXTURES / "basic_pcmu.pcap"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = provision(tmp_path / "home")
    result = run_cli("--home", str(home), "import", str(BASIC))
    assert result.exit_code == 0, result.stderr + result.exc_text
    return home


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("calls", "show", "99999999999999999999"), "is not a call id"),
        (("calls", "show", "9223372036854775808"), "is not a call id"),
        (("calls", "show", "\uff11"), "digits 0-9 only"),  # FULLWIDTH DIGIT ONE, which int() takes
        (("calls", "show", "1_0"), "digits 0-9 only"),  # int() reads 10
        (("calls", "show", "0"), "1 to 9223372036854775807"),
        (("calls", "list", "--limit", "99999999999999999999"), "is not a count"),
        (("calls", "list", "--limit", "1_0"), "digits 0-9 only"),
        (("audit", "list", "--limit", "1e3"), "is not a count"),
        (("audit", "list", "--call", "\u0661"), "digits 0-9 only"),  # ARABIC-INDIC DIGIT ONE
        (("hold", "add", "99999999999999999999", "--reason", "x"), "is not a call id"),
        (("calls", "export", "1_0", "--out", "x.wav"), "digits 0-9 only"),
    ],
)
def test_numbers_are_ascii_digits_in_range(home: Path, args: tuple[str, ...], message: str) -> None:
    result = run_cli("--home", str(home), *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.exc_text == ""
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_largest_call_id_is_simply_not_found(home: Path) -> None:
    result = run_cli("--home", str(home), "calls", "show", "9223372036854775807")
    assert result.exit_code == 1 and result.exc_text == ""
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1


def test_the_reader_refuses_a_fifo_by_name_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "mirror.pcap"
    os.mkfifo(fifo)
    with pytest.raises(UnsupportedFormat, match=r"mirror\.pcap: not a regular file \(a FIFO or pipe\)"):
        open_capture(fifo)  # without the check this open() blocks until a writer comes


def test_import_of_a_fifo_and_a_directory_is_refused_and_imports_nothing(home: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)
    before = run_cli("--home", str(home), "calls", "list", "--json").stdout
    # a subprocess with a timeout: a regression would hang here, not the whole suite
    proc = subprocess.run(
        [sys.executable, "-m", "callrec.cli.main", "--home", str(home), "import", str(BASIC), str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == f"Error: {fifo}: not a regular file (a FIFO or pipe); copy it to a file first"
    )
    assert run_cli("--home", str(home), "calls", "list", "--json").stdout == before


def test_import_from_a_pipe_names_the_file(home: Path) -> None:
    """``callrec import /dev/stdin < x`` with a pipe was "Illegal seek", naming no file."""
    with BASIC.open("rb") as data:
        proc = subprocess.run(
            "cat | "
            + " ".join(
                [sys.executable, "-m", "callrec.cli.main", "--home", str(home), "import", "/dev/stdin"]
            ),
            shell=True,
            stdin=data,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    assert "/dev/stdin: not a regular file (a FIFO or pipe)" in proc.stderr
    assert "Traceback" not in proc.stderr
