"""Every capture in ../shared/pcaps (real captures made by others, many odd) imports without a
crash, a hang or a call whose processing failed; files that are not captures get a clear error."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from callrec.capture.model.errors import ParseError
from callrec.recorder.pipeline import import_captures
from callrec.store.home import Home
from tests.helpers.keyset import provision

SHARED = Path(__file__).resolve().parents[3] / "shared" / "pcaps"
MANIFEST = SHARED / "MANIFEST.tsv"


def _captures() -> list[str]:
    if not MANIFEST.is_file():
        return []
    with MANIFEST.open(newline="") as f:
        return [row["file"] for row in csv.DictReader(f, delimiter="\t") if (SHARED / row["file"]).is_file()]


CAPTURES = _captures()


@pytest.mark.skipif(not CAPTURES, reason="../shared/pcaps is not beside this checkout")
@pytest.mark.parametrize("name", CAPTURES)
def test_every_shared_capture_imports_cleanly(name: str, tmp_path: Path) -> None:
    try:
        report = import_captures([SHARED / name], Home(provision(tmp_path)))
    except ParseError as exc:  # not a capture Callrec reads: refused with a message naming the file
        assert Path(name).name in str(exc)
        return
    assert report.failed == 0, f"{name}: {report.not_recorded}"
    assert report.packets > 0 or report.warnings
