"""``python tests/helpers/portal_serve.py --home HOME portal ...``: ``callrec`` with the ``portal``
command, for
tests that run the real server in a process of their own (as cli/main.py will register it)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.helpers

from tests.helpers.portal_env import group  # noqa: E402

if __name__ == "__main__":
    group()(prog_name="callrec")
