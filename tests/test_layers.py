"""The import contracts in pyproject.toml hold, and they can fail.

The layers (bot over infra over training, training standalone, the bot's few doors into infra,
infra.aws behind the backends, no cycles) are import-linter contracts; this runs the linter so
the suite breaks when an import does. The second half copies the packages to a temporary
folder, adds one wrong import and checks that the contract meant to catch it reports it: a
contract that could never fail would prove nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "infra", "training")
# Run as `lint-imports` would be, with this interpreter; --no-cache so a stale cache in a copy
# or in the checkout never answers for the code as it is now.
LINT_IMPORTS = (
    "import sys; from importlinter.cli import lint_imports_command; "
    "sys.exit(lint_imports_command())"
)
HEAVY = ("tensorflow", "torch", "transformers", "tokenizers", "numpy", "matplotlib", "boto3")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_module_level_import_cycle() -> None:
    """Not one cycle between modules, lazy imports included and with no exception allowed.

    The acyclic_siblings contract looks at packages and lists an exception or two; a cycle
    between two modules makes their import order matter, so none is allowed at all.
    """
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    cycles = [sorted(group) for group in _strongly_connected(graph) if len(group) > 1]
    assert cycles == []


def test_entry_points_load_no_heavy_framework() -> None:
    """The CLI, the daemon and the launcher start without TensorFlow, torch or boto3.

    Those load inside the code paths that need them (a model, a trainer, the aws backend), so
    a command that uses none of them starts in about a second and the local setup never pays
    for AWS.
    """
    code = (
        "import sys\n"
        "import bot.cli, bot.daemon, infra.backends, infra.launcher, infra.retrain_queue\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


WRONG = '"""A deliberately wrong import."""\n\n'


@pytest.mark.parametrize(
    ("files", "contract"),
    [
        ({"training/wrong.py": "import bot.config"}, "bot above infra above training"),
        ({"training/wrong.py": "import infra.job"}, "training imports neither bot nor infra"),
        (
            # infra.keys is no door; infra.aws would break "only the backends use infra.aws" too
            {"bot/wrong.py": "import infra.keys"},
            "bot reaches infra only through its doors",
        ),
        ({"infra/wrong.py": "import infra.aws.cloud"}, "only the backends use infra.aws"),
        (
            {
                "training/wrong.py": "import training.wrong_too",
                "training/wrong_too.py": "import training.wrong",
            },
            "no import cycles",
        ),
    ],
    ids=[
        "training-imports-bot",
        "training-imports-infra",
        "bot-imports-infra-keys",
        "infra-module-imports-aws",
        "cycle",
    ],
)
def test_a_wrong_import_breaks_its_contract(
    tmp_path: Path, files: dict[str, str], contract: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for path, line in files.items():
        (tmp_path / path).write_text(f"{WRONG}{line}\n")

    result = lint_imports(tmp_path)

    assert result.returncode != 0, result.stdout
    assert re.search(rf"^{re.escape(contract)}\s*BROKEN\b", result.stdout, re.MULTILINE)
    assert "wrong" in result.stdout.split("Broken contracts", 1)[1]


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm over the module graph (grimp names cycles only between packages)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            groups.append(group)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups
