"""The import layers: data flows one way, no import cycle, and the numpy-only modules never load
torch."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "metricls"
# a module may import only from its own layer or those below it
LAYERS = [
    {"cli", "bench", "runner", "serve", "serve_page", "serve_guards", "serve_batching", "report",
     "catalog"},
    {"build", "training"},
    {"evaluation"},
    {"tagger"},
    {"folder"},
    {"pipeline"},
    {"prototypes", "ann", "miners", "encoders"},
    {"data"},
    {"config", "config_docs", "validation", "metrics", "artifacts", "staging", "manifest",
     "outputs", "formats", "progress", "csr_keys"},
    {"errors"},
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else module
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metricls."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("metricls.")}
    return found


def test_no_module_imports_a_higher_layer():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name in ("metricls.__init__", "metricls.cli") or rel.parts[1] in ("__init__",):
            continue
        for target in _imports(path):
            if _layer(target) < _layer(name):
                problems.append(f"{name} imports {target}")
    assert not problems, problems


def test_numpy_only_modules_do_not_load_torch():
    # metricls.ann is not among them: FAISS loads after torch, to share its OpenMP runtime
    # (metricls/ann/faiss_lib.py, tests/test_faiss_lib.py)
    code = ("import sys, metricls.metrics, metricls.artifacts, metricls.staging, "
            "metricls.manifest, metricls.outputs, "
            "metricls.pipeline.scoring, metricls.data; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def import_graph(root: Path, package: str = "metricls") -> dict[str, set[str]]:
    """module -> the modules of `package` it imports, read statically from every file under
    ``root/package``: module-level and function-level imports, ``TYPE_CHECKING`` blocks
    included, relative imports resolved, ``from pkg import mod`` counted as an import of
    ``pkg.mod``. A package's ``__init__`` is the package's name. A module importing its own
    package (or one above it) is no edge: the package is already being imported then."""
    files = {}
    for path in (root / package).rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")
                    if path.name != "__init__.py":
                        parts = parts[:-1]
                    parts = parts[:len(parts) - (node.level - 1)]
                    base = ".".join([*parts, base] if base else parts)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                found = known(target) if target.split(".")[0] == package else None
                if found and found != name and not name.startswith(found + "."):
                    graph[name].add(found)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per group of modules that import each other (each strongly
    connected component of more than one module), the shortest through its first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the package is far shallower than the recursion limit
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_shortest_cycle(graph, group) for group in groups]


def _shortest_cycle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    start, members = group[0], set(group)
    paths = {w: [start, w] for w in sorted(graph[start] & members)}
    frontier = list(paths)
    while start not in paths:
        frontier, step = [], frontier
        for v in step:
            for w in sorted(graph[v] & members):
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    frontier.append(w)
    return paths[start]


def test_no_import_cycle():
    cycles = import_cycles(import_graph(PACKAGE.parent))
    assert not cycles, "import cycles (static, function-level and TYPE_CHECKING imports " \
        "included):\n" + "\n".join("  " + " -> ".join(cycle) for cycle in cycles)


def test_the_cycle_check_sees_lazy_relative_and_type_checking_imports(tmp_path):
    files = {
        "__init__.py": "from pkg.a import A\n",
        "a.py": "from pkg import b\nA = 1\n",
        "b.py": "def f():\n    from .sub.c import C\n    return C\n",
        "sub/__init__.py": "",
        "sub/c.py": "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    import pkg.a\nC = 2\n",
        "d.py": "import pkg\nfrom . import a\n",  # its own package: no edge, no cycle
    }
    for rel, text in files.items():
        (tmp_path / "pkg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / rel).write_text(text)
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.b"] == {"pkg.sub.c"} and graph["pkg.d"] == {"pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
