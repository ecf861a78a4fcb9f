"""The import layers: data flows one way, and the numpy-only modules never load torch."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "metricls"
# a module may import only from its own layer or those below it
LAYERS = [
    {"cli", "bench", "runner", "serve", "serve_page", "serve_guards", "report", "catalog"},
    {"build", "training"},
    {"evaluation"},
    {"tagger"},
    {"folder"},
    {"pipeline"},
    {"prototypes", "ann", "miners", "encoders"},
    {"data"},
    {"config", "validation", "metrics", "artifacts", "formats", "progress"},
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
    code = ("import sys, metricls.ann, metricls.metrics, metricls.artifacts, "
            "metricls.pipeline.scoring, metricls.data; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
