"""Architecture rules that keep the project what it says it is."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 400  # in pipeline/
MAX_FUNCTION_LINES = 60  # in pipeline/ and flows/
# imports made inside a function (an optional or heavy dependency, each with its reason beside it), pipeline/ + flows/
MAX_FUNCTION_IMPORTS = 40


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


def test_one_import_name_outside_the_checkout(tmp_path):
    """The installed package is `tailstudy` (library) with `tailstudy.flows` (orchestration); the folder names
    `pipeline` and `flows` are not import names, so they collide with nothing a user has."""
    code = ("import importlib.util as u, tailstudy, tailstudy.flows; "
            "print(u.find_spec('pipeline') is None, u.find_spec('flows') is None, tailstudy.flows.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.stdout.split() == ["True", "True", "tailstudy.flows"], out.stderr


def function_level_imports(path: Path, root: Path = REPO, reasons: bool = False) -> list[str]:
    """`file:line` of every import statement whose enclosing scope is a function (a lambda included); `reasons`: only
    those without a comment saying why (on the statement's last line or the line above it)."""
    found, lines = [], path.read_text().splitlines()

    def said_why(statement: ast.stmt) -> bool:
        return "#" in lines[statement.end_lineno - 1] or lines[statement.lineno - 2].strip().startswith("#")

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)) and not (reasons and said_why(child)):
                found.append(f"{path.relative_to(root)}:{child.lineno}")
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def test_imports_are_made_at_module_level():
    """Cold start the ordinary way: a module imports what it uses at the top; an import inside a function is kept for
    an optional or heavy dependency only (img2dataset, sentence-transformers, torch for commands that train nothing)."""
    paths = [p for root in ("pipeline", "flows") for p in sorted((REPO / root).rglob("*.py"))]
    found = [i for p in paths for i in function_level_imports(p)]
    assert len(found) <= MAX_FUNCTION_IMPORTS, found
    assert [i for p in paths for i in function_level_imports(p, reasons=True)] == [], "say why beside each one"


def test_function_level_imports_are_counted_in_every_function(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("import a\ndef f():\n    import b\n    def g():\n        from c import d\n    return 1\n"
                    "class C:\n    import e\n    def m(self):\n        import f\n")
    assert function_level_imports(path, tmp_path) == ["probe.py:3", "probe.py:5", "probe.py:10"]
    path.write_text("def f():\n    import b  # optional\n    # heavy\n    import c\n    import d\n")
    assert function_level_imports(path, tmp_path, reasons=True) == ["probe.py:5"]


def test_no_process_ends_without_its_cleanup():
    """`os._exit` skips atexit handlers, finally blocks and buffered output: entry points end with sys.exit."""
    used = [f"{p.relative_to(REPO)}:{n}" for root in ("pipeline", "flows", "benchmarks", "deploy")
            for p in sorted((REPO / root).rglob("*.py"))
            for n, line in enumerate(p.read_text().splitlines(), 1) if "os._exit" in line]
    assert used == []
