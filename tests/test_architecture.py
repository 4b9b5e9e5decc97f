"""The package tree is the design: each layer imports only the layers below it, and the parts
the web server and the jobs layer load never pull in torch or an optional cluster library. The
design's prose names only modules that exist. The tests stand on their own: what they share
lives in ``tests/helpers_*.py`` and ``conftest.py``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"
TESTS = ROOT / "tests"
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
    "explain",
    "serving",
    "training",
    "tracking",
    "analysis",
    "jobs",
    "housekeeping",
    "experiments",
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
    "core.analysis.record",
    "core.tracking",
    "core.jobs",
    "core.experiments",
    "core.housekeeping",
)
HEAVY = ("torch", "torchvision", "ray")
# The prose that names modules and files: the design and the documents beside the README.
DOCUMENTS = (
    "DESIGN.md",
    "README.md",
    "bench/README.md",
    *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")),
)
# `core/jobs/run.py`, `tests/helpers_*.py`, `app_shell.py` (beside the document or at the root);
# `core.jobs.run.Run.open`.
FILE_NAMED = re.compile(r"(?<![\w./<-])(?:(?:core|pages|tests|bench|scripts)/[\w./*-]*\w|\w+\.py\b)")
MODULE_NAMED = re.compile(r"(?<![\w./])(?:core|pages)(?:\.\w+)+")


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


def imported_tests(source: str) -> list[str]:
    """The test modules (``test_*``) and conftests that ``source`` imports, anywhere in it.

    Importing one runs it under a second name (``tests.test_jobs`` beside ``test_jobs``), with its
    fixtures and module state twice, and ties one module's tests to another's helpers; pytest
    finds a conftest's fixtures by itself."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            prefix = f"{node.module}." if node.module else ""
            names |= {node.module or ""} | {prefix + alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return sorted(
        name for name in names if (last := name.split(".")[-1]).startswith("test_") or last == "conftest"
    )


@pytest.mark.parametrize(
    "source",
    [
        "from tests.test_jobs import wait_for_state",
        "from test_pages_training import open_page",
        "import tests.browser.test_access_browser",
        "from . import test_adapt",
        "from conftest import start_app",
        "def f():\n    from tests import test_retention",
    ],
)
def test_an_import_of_a_test_module_is_caught(source: str) -> None:
    assert imported_tests(source)


def test_no_test_module_imports_another() -> None:
    offenders = {
        str(path.relative_to(ROOT)): imports
        for path in sorted(TESTS.rglob("*.py"))
        if (imports := imported_tests(path.read_text()))
    }
    assert not offenders, f"move what these share to tests/helpers_*.py or conftest.py: {offenders}"


def top_level_names(module: Path) -> set[str]:
    """What ``module`` defines or imports at its top level, and what its ``__all__`` exports
    (a package's facade may import its names lazily)."""
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                names |= set(ast.literal_eval(node.value))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def module_exists(dotted: str) -> bool:
    """``core.jobs.run.Run.open``: the longest prefix that is a package or module exists, and
    the first name after it is defined there (what follows a class is not checked)."""
    parts = dotted.split(".")
    folder = ROOT
    for i, part in enumerate(parts):
        if (folder / part).is_dir():
            folder = folder / part
        elif (folder / f"{part}.py").is_file():
            rest = parts[i + 1 :]
            return not rest or rest[0] in top_level_names(folder / f"{part}.py")
        else:
            init = folder / "__init__.py"
            return init.is_file() and part in top_level_names(init)
    return True


def named_in(text: str) -> tuple[set[str], set[str]]:
    """The repository files and the modules a document names."""
    return set(FILE_NAMED.findall(text)), set(MODULE_NAMED.findall(text))


def test_the_name_finder_sees_files_and_modules_and_refuses_what_is_not_there() -> None:
    files, dotted = named_in(
        "see `core/models/families.py`, `app_shell.py` and `core.data.ingestion.ingest()`"
    )
    assert files == {"core/models/families.py", "app_shell.py"}
    assert not any(ROOT.glob("core/families.py")) and any(ROOT.glob("tests/helpers_*.py"))
    assert dotted == {"core.data.ingestion.ingest"}
    assert module_exists("core.data.ingestion.ingest") and module_exists("core.jobs.run.Run.open")
    assert not module_exists("core.families.FAMILIES") and not module_exists("core.jobs.nothing")


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_module_and_file_a_document_names_exists(document: str) -> None:
    path = ROOT / document
    files, dotted = named_in(path.read_text())
    missing = sorted(name for name in files if not any(ROOT.glob(name)) and not any(path.parent.glob(name)))
    missing += sorted(name for name in dotted if not module_exists(name))
    assert not missing, f"{document} names what does not exist: {missing}"
