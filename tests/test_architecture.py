"""The dependency arrows of ARCHITECTURE.md, checked by parsing every module's imports (relative ones
resolved, deferred and type-checking ones included): the stages import each other only as drawn,
capture's sub-packages likewise, every import names ``callrec.``, and no two modules import each other
or close any longer circle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("capture", "decode", "store", "recorder", "cli", "portal")
ALLOWED = {
    "capture": set(),
    "decode": {"capture"},
    "store": set(),
    "recorder": {"capture", "decode", "store"},
    "cli": {"capture", "decode", "store", "recorder"},
    "portal": {"store", "decode"},
}
# The one module allowed across an arrow: `callrec portal` starts the web application.
LAUNCHERS = {"cli/commands/portal.py": {"portal"}}
# decode may use only capture's value types, never its machinery.
DECODE_MAY_USE = "callrec.capture.model"
# Inside capture: packets flow sources -> frames -> sip / streams -> tracking; model is for all.
CAPTURE_ALLOWED = {
    "model": set(),
    "sources": {"model"},
    "frames": {"model", "sip"},
    "sip": {"model"},
    "streams": {"model", "sip"},
    "tracking": {"model", "sip", "streams"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "callrec." + ".".join(parts)


def imported_names(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything ``path`` imports, relative imports made absolute; for
    ``from a import b`` both ``a`` and ``a.b`` (b may be a module)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _modules() -> list[Path]:
    return [path for stage in STAGES for path in sorted((ROOT / stage).rglob("*.py"))]


MODULES = {module_name(path): path for path in _modules()}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_module_imports_follow_the_arrows(path: Path) -> None:
    stage = path.relative_to(ROOT).parts[0]
    for line, name in imported_names(path):
        top = name.split(".")[0]
        assert top not in STAGES, f"{_rel(path)}:{line} imports {name}: say callrec.{name}"
        if top != "callrec" or name == "callrec":
            continue
        other = name.split(".")[1]
        if other != stage:
            if other in LAUNCHERS.get(_rel(path), set()):
                continue
            assert other in ALLOWED[stage], (
                f"{_rel(path)}:{line} imports {name}: {stage} may not import {other}"
            )
            if stage == "decode":
                assert name.startswith(DECODE_MAY_USE), (
                    f"{_rel(path)}:{line} imports {name}: decode uses capture's value types only"
                )
        elif stage == "capture" and len(path.relative_to(ROOT).parts) > 2:
            mine, theirs = path.relative_to(ROOT).parts[1], name.split(".")[2]
            if theirs != mine and theirs in CAPTURE_ALLOWED:
                assert theirs in CAPTURE_ALLOWED[mine], (
                    f"{_rel(path)}:{line} imports {name}: capture.{mine} may not import capture.{theirs}"
                )


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph[name] = {target for _, target in imported_names(path) if target in MODULES and target != name}
    return graph


def test_no_two_modules_import_each_other_and_there_is_no_circle() -> None:
    graph = _graph()
    pairs = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if a in graph[b]})
    assert pairs == [], f"modules importing each other: {pairs}"
    # Tarjan's strongly connected components: any component of two or more modules is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == [], f"import circles: {circles}"


def test_the_checker_sees_every_stage_and_resolves_relative_imports(tmp_path: Path) -> None:
    assert {_rel(p).split("/")[0] for p in _modules()} == set(STAGES)
    assert len(MODULES) > 100
    assert any(graph_targets for graph_targets in _graph().values())
    sample = ROOT / "capture" / "sip" / "dialog.py"
    names = {name for _, name in imported_names(sample)}
    assert "callrec.capture.sip.sdp" in names


def test_a_bare_stage_import_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself can fail: a module saying ``import capture`` (which would import whatever
    other software installed under that name) is reported."""
    fake_root = tmp_path
    (fake_root / "decode").mkdir()
    bad = fake_root / "decode" / "bad.py"
    bad.write_text("import capture.sip\nfrom callrec.capture.tracking import tracker\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", fake_root)
    with pytest.raises(AssertionError, match="say callrec.capture.sip"):
        test_module_imports_follow_the_arrows(bad)
    bad.write_text("from callrec.capture.tracking import tracker\n")
    with pytest.raises(AssertionError, match="capture's value types only"):
        test_module_imports_follow_the_arrows(bad)
