"""What the web server loads to draw its pages: the core modules that app_shell and every page
module import must not pull in torch (seconds and hundreds of megabytes per server, and CUDA
initialised where no run trains). Work that needs torch runs in jobs; a page may import it only
inside a function, where it is deferred to the moment it is needed (Predict's single image).
Backbones are shown from their torch-free cards (``core.models.catalog``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVED = (ROOT / "app_shell.py", *sorted((ROOT / "pages").glob("*.py")))


def core_imports(path: Path) -> list[str]:
    """The statements by which ``path`` imports core when it is loaded (at its top level, not in
    functions), as written: ``from core.models import catalog``."""
    return [
        ast.unparse(node)
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.ImportFrom | ast.Import)
        and any(name.split(".")[0] == "core" for name in _modules(node))
    ]


def _modules(node: ast.ImportFrom | ast.Import) -> list[str]:
    return [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]


def torch_after_importing(statements: list[str]) -> bool:
    """Whether a fresh interpreter has torch loaded after running these import statements."""
    code = "\n".join([*statements, "import sys", "print('torch' in sys.modules)"])
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "True"


def test_the_shell_and_the_pages_load_their_core_modules_without_torch() -> None:
    statements = sorted({statement for path in SERVED for statement in core_imports(path)})
    assert any("core.jobs.evaluation" in s for s in statements)  # Results' check, for one
    assert "from core.models import catalog" in statements  # the backbones' cards, for another
    assert not torch_after_importing(statements)


def test_the_backbones_page_and_a_case_2_plan_are_drawn_without_torch() -> None:
    """Not only imported: drawn, from the catalog's cards (the stage facts of the cut included)."""
    code = """
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("app_shell.py", default_timeout=300).run()
at.switch_page("pages/backbones.py").run()
rows = at.dataframe[0].value.shape[0]
at.switch_page("pages/advisor.py").run()
at.radio(key="advisor.similarity").set_value("different").run()
at.button(key="advisor.use_plan").click().run()
assert not at.exception, at.exception
cut = at.selectbox(key="train.plan_cut_" + at.selectbox(key="train.plan_backbone").value)
print(rows > 0, at.radio(key="train.plan_case").value, cut.options[0].startswith("stage 1 of"), "torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "2", "True", "False"]
