"""The package tree is the design: each layer imports only the layers below it, and the parts
the web server and the jobs layer load never pull in torch or an optional cluster library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"
# Bottom to top, as DESIGN.md's module map lists them; a module may import its own layer or lower.
LAYERS = (
    "errors",
    "storage",
    "limits",
    "access",
    "advice",
    "data",
    "models",
    "artifacts",
    "training",
    "analysis",
    "jobs",
    "cli",
)
# The machine's record (its CPU) and the rule that makes users' text inert sit at the bottom beside
# errors and storage: any layer may use them.
RANK = {"errors": 0, "inert": 0, "storage": 0, "machine": 0, **{name: i for i, name in enumerate(LAYERS)}}
TORCH_FREE = (
    "core.errors",
    "core.inert",
    "core.storage",
    "core.machine",
    "core.limits",
    "core.access",
    "core.advice",
    "core.models.catalog",
    "core.jobs",
)
HEAVY = ("torch", "torchvision", "ray")


def layer_of(module: str) -> str:
    """``core.models.adapt`` -> ``models``; the package's own entry points count as the CLI."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "cli"


def modules() -> list[str]:
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in CORE.rglob("*.py")
    )


def imported(module: str) -> set[str]:
    """Every ``core`` module ``module`` imports, at the top or inside a function."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core"):
            found |= (
                {f"{node.module}.{alias.name}" for alias in node.names}
                if node.module == "core"
                else {node.module}
            )
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("core")}
    return found


@pytest.mark.parametrize("module", modules())
def test_no_layer_imports_a_higher_one(module: str) -> None:
    own = RANK[layer_of(module)]
    upward = sorted(target for target in imported(module) if RANK[layer_of(target)] > own)
    assert not upward, f"{module} ({layer_of(module)}) imports from above: {upward}"


def test_the_torch_free_packages_import_no_torch_and_no_cluster_library() -> None:
    torch_free = [m for m in modules() if m.startswith(TORCH_FREE)]
    code = (
        "import importlib, sys\n"
        f"for name in {torch_free!r}: importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert len(torch_free) >= 8  # the jobs layer, its worker and queue among them
