"""Widget keys are per page, and values travel between pages only through named hand-offs: one
session walks every page after answering the Advisor, and no two pages share a key."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from helpers_pages import take_the_advisors_plan
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("advisor", "backbones", "train", "results", "predict", "admin")
TITLES = {
    "advisor": "Which transfer-learning approach?",
    "backbones": "Which network?",
    "train": "Train",
    "results": "Results",
    "predict": "Predict",
    "admin": "Admin",
}
SHELL = "shell"  # the sidebar's own widgets (sign-in, sign-out), drawn by app_shell on every page


def keys_shown(at: AppTest) -> set[str]:
    """The key of every keyed widget and container in the page's main area."""
    return {node.key for node in at.main if getattr(node, "key", None)}


def test_one_session_walks_every_page_after_the_advisor_and_each_keeps_to_its_keys(
    finished_run: Path, lab_home: Path
) -> None:
    shutil.copytree(finished_run, lab_home / "runs" / finished_run.name)  # Results and Predict have a run
    at = take_the_advisors_plan("different")
    seen: dict[str, set[str]] = {}
    for page in [*PAGES, "advisor", "train"]:  # and back: each page finds its own choices again
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        assert at.title[0].value == TITLES[page]
        shown = keys_shown(at)
        assert shown, page
        strays = sorted(key for key in shown if not key.startswith(f"{page}."))
        assert not strays, f"{page} shows widgets keyed as another page's: {strays}"
        seen.setdefault(page, set()).update(shown)
    assert at.radio(key="train.plan_case").value == 2  # handed on by the Advisor, kept by Train
    at.switch_page("pages/advisor.py").run()
    assert at.radio(key="advisor.similarity").value == "different"  # the Advisor's own answer
    assert sum(len(keys) for keys in seen.values()) == len(set().union(*seen.values()))


def keys_in(module: Path) -> list[str]:
    """The widget keys ``module`` writes as text (``key="train.start"``), or the text an
    f-string key starts with; keys made wholly from a variable name no page."""
    found = []
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "key":
            value = node.value
            if isinstance(value, ast.JoinedStr) and isinstance(value.values[0], ast.Constant):
                value = value.values[0]
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.append(value.value)
    return found


def pages_drawing(module: str) -> set[str]:
    """The pages whose script imports ``module`` (``pages._plan_form``), directly or through
    other modules of ``pages/``; the shell for what only app_shell imports."""
    importers: dict[str, set[str]] = {}
    scripts = {page: ROOT / "pages" / f"{page}.py" for page in PAGES} | {SHELL: ROOT / "app_shell.py"}
    helpers = {path.stem: path for path in (ROOT / "pages").glob("_*.py")}
    for name, path in {**scripts, **helpers}.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pages"):
                names = [node.module] if node.module != "pages" else [f"pages.{a.name}" for a in node.names]
                for imported in names:
                    importers.setdefault(imported.removeprefix("pages."), set()).add(name)
    found, frontier = set(), {module}
    while frontier:
        current = frontier.pop()
        for importer in importers.get(current, set()):
            if importer in scripts:
                found.add(importer)
            elif importer not in found:
                frontier.add(importer)
    return found


def test_no_two_pages_use_the_same_widget_key() -> None:
    owners: dict[str, str] = {}
    for path in sorted([*(ROOT / "pages").glob("*.py"), ROOT / "app_shell.py"]):
        page = path.stem if path.stem in PAGES else None
        for key in keys_in(path):
            prefix = key.split(".")[0]
            assert prefix in (*PAGES, SHELL), f"{path.name}: key {key!r} names no page"
            drawn_on = {page} if page else pages_drawing(path.stem)
            if prefix == SHELL:
                assert SHELL in drawn_on, (
                    f"{path.name}: {key!r} is the shell's, but the shell draws no {path.name}"
                )
            else:
                assert drawn_on == {prefix}, f"{path.name}: {key!r} is {prefix}'s, but {drawn_on} draw it"
            owners.setdefault(key, path.name)
    assert len(owners) >= 60  # every page's keys were found
