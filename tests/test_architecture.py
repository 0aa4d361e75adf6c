"""The stages of the package import one way: a static walk of every import (deferred ones too).

README.md's "Architecture" section lists the same stages. A module may import modules of its own stage
or of a lower one; an import of a higher stage, or any cycle between modules, fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the folders and the packages they install as: plugins/ and search_spaces/ stay at the repository's top level
# and are installed inside bnn_tune's namespace (bnn_tune/plugins and bnn_tune/search_spaces link to them)
PACKAGES = {"bnn_tune": "bnn_tune", "plugins": "bnn_tune.plugins", "search_spaces": "bnn_tune.search_spaces"}

# low -> high; a unit is a top-level package or a direct child of bnn_tune
STAGES: list[tuple[str, ...]] = [
    ("bnn_tune._imports", "bnn_tune._errors", "bnn_tune._validate", "bnn_tune.kernels"),
    ("bnn_tune.data",),
    ("bnn_tune.nn",),
    ("bnn_tune.schedules",),
    ("bnn_tune.optim",),
    ("bnn_tune.metrics",),
    ("bnn_tune.config",),
    ("bnn_tune.recipes",),
    ("bnn_tune.train",),
    ("bnn_tune.cli",),
    ("bnn_tune.search_spaces", "bnn_tune.plugins"),
    ("bnn_tune.objective", "bnn_tune._trainable"),
    ("bnn_tune.export", "bnn_tune.bench"),
    ("bnn_tune.viz",),
    ("bnn_tune.hpobench", "bnn_tune.search"),
]
RANK = {unit: i for i, units in enumerate(STAGES) for unit in units}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):  # rglob does not follow the links inside bnn_tune/
            parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(mod: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = (".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                      if node.level else node.module or "")
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    parents = {".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 1)}
    return {t for t in out if t in known and t != mod} - parents


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def _unit(mod: str) -> str:
    parts = mod.split(".")
    return ".".join(parts[:2]) if parts[0] == "bnn_tune" and len(parts) > 1 else parts[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_cycle_finder_sees_a_deferred_import():
    # the detector itself: a two-module loop through an import inside a function is a cycle
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_every_unit_has_a_stage():
    units = {_unit(m) for m in _modules()} - {"bnn_tune"}
    assert sorted(units - set(RANK)) == []


def test_imports_point_down_the_stages():
    upward = []
    for mod, deps in _graph().items():
        src = _unit(mod)
        if src == "bnn_tune":  # the package facade re-exports from every stage (lazily for ray/optuna)
            continue
        for dep in deps:
            dst = _unit(dep)
            if dst != "bnn_tune" and RANK[dst] > RANK[src]:
                upward.append(f"{mod} -> {dep}")
    assert sorted(upward) == []


def test_kernels_import_nothing_else_of_the_package():
    for mod, deps in _graph().items():
        if _unit(mod) == "bnn_tune.kernels":
            assert {_unit(d) for d in deps} <= {"bnn_tune.kernels", "bnn_tune._imports", "bnn_tune._errors"}, mod


def test_search_drivers_live_in_the_search_package():
    for old in ("search_cli.py", "_ray_search.py", "_optuna_search.py", "report.py"):
        assert not (ROOT / "bnn_tune" / old).exists(), old
    for new in ("cli.py", "ray.py", "optuna.py", "report.py"):
        assert (ROOT / "bnn_tune" / "search" / new).exists(), new


def test_plugins_and_spaces_are_imported_only_inside_the_bnn_tune_namespace():
    # a bare `import plugins` would load a second copy of every module (and collide with an application's own
    # `plugins` package once installed): the repository uses one import style, bnn_tune.plugins / bnn_tune.search_spaces
    bare = []
    for path in [*ROOT.glob("*.md"), *(ROOT / "notebooks").glob("*.ipynb"), *(p for folder in
                 ("bnn_tune", "plugins", "search_spaces", "tests", "benchmarks", "notebooks") for p in (ROOT / folder).rglob("*.py"))]:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip().strip('"').lstrip()
            if stripped.startswith(("import plugins", "import search_spaces", "from plugins", "from search_spaces")):
                bare.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert bare == []


def test_the_namespace_links_point_at_the_top_level_folders():
    for name in ("plugins", "search_spaces"):
        link = ROOT / "bnn_tune" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), link
