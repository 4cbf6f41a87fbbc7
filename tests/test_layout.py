"""Architecture rules that keep the project what it says it is."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 400  # in pipeline/
MAX_FUNCTION_LINES = 60  # in pipeline/ and flows/


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included), read from its syntax tree."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_pipeline_never_imports_prefect_or_flows_not_even_lazily():
    bad = [(str(p.relative_to(REPO)), m) for p in (REPO / "pipeline").rglob("*.py") for m in imported_modules(p)
           if m.split(".")[0] in ("prefect", "prefect_dask", "distributed") or m.startswith("tailstudy.flows")]
    assert bad == []


def test_modules_and_functions_stay_small():
    over = {str(p.relative_to(REPO)) for p in (REPO / "pipeline").rglob("*.py")
            if len(p.read_text().splitlines()) > MAX_MODULE_LINES}
    for path in [*(REPO / "pipeline").rglob("*.py"), *(REPO / "flows").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                over.add(f"{path.relative_to(REPO)}:{node.name}")
    assert over == set()


def test_pipeline_library_never_imports_prefect():
    modules = sorted(
        ".".join(("tailstudy", *p.relative_to(REPO / "pipeline").with_suffix("").parts))
        for p in (REPO / "pipeline").rglob("*.py") if p.name != "__init__.py" or p.parent.name != "pipeline"
    )
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules) + \
        "print(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_sql_lives_in_sql_files():
    """No SQL statement is executed from a Python string literal (printed usage hints are fine)."""
    import re

    executed = re.compile(r"""(execute|sql|query)\(\s*f?["']{1,3}\s*(SELECT|CREATE|INSERT|WITH|PIVOT)\b""", re.I)
    for path in (REPO / "pipeline").rglob("*.py"):
        text = path.read_text()
        assert "CREATE OR REPLACE VIEW" not in text.upper(), path
        assert not executed.search(text), path


def test_importing_the_library_leaves_the_environment_alone_and_entry_points_set_it():
    names = "['HF_HUB_OFFLINE', 'NO_ALBUMENTATIONS_UPDATE', 'PREFECT_SERVER_ANALYTICS_ENABLED', 'WANDB_DISABLED']"
    library = f"import os, pipeline, tailstudy.stages, tailstudy.catalog; print([os.environ.get(n) for n in {names}])"
    entry = f"import os, flows; print([os.environ.get(n) for n in {names}])"
    env = {"PATH": "/usr/bin:/bin"}
    for code, expected in ((library, "[None, None, None, None]"), (entry, "['1', '1', 'false', 'true']")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                             timeout=120)
        assert out.stdout.strip() == expected, out.stderr


def test_standard_library_dataclasses_is_imported():
    import dataclasses

    assert "site-packages" not in dataclasses.__file__


def test_one_import_name_outside_the_checkout(tmp_path):
    """The installed package is `tailstudy` (library) with `tailstudy.flows` (orchestration); the folder names
    `pipeline` and `flows` are not import names, so they collide with nothing a user has."""
    code = ("import importlib.util as u, tailstudy, tailstudy.flows; "
            "print(u.find_spec('pipeline') is None, u.find_spec('flows') is None, tailstudy.flows.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.stdout.split() == ["True", "True", "tailstudy.flows"], out.stderr
