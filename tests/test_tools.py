"""Every external program the tests and benchmarks run is installed by `make test` itself.

A fresh machine has nothing that was installed by hand, so a program a test calls but the Makefile never
installs passes here and fails there. This test reads what the code runs and what the Makefile installs.
"""
from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Programs that come with Python, the virtual environment or every Debian image, so no target installs them.
BASE = {"python", "python3", "sys.executable", "bash", "sh", "git", "make", "kill", "true", "runuser"}
# Only asked for where present, to name the GPU in a benchmark report; no test needs it.
OPTIONAL = {"nvidia-smi"}
# Program -> the command whose install brings it: PostgreSQL's server tools are found under its binary
# directory rather than on PATH, and ffprobe ships with ffmpeg.
COMES_WITH = {"initdb": "postgresql", "pg_ctl": "postgresql", "postgres": "postgresql", "psql": "postgresql",
              "createdb": "postgresql", "pg_isready": "postgresql", "ffprobe": "ffmpeg"}


def _first_word(node: ast.AST) -> str | None:
    """The program a subprocess call runs, when its first argument is a literal list or string."""
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        node = node.elts[0]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.split()[0] if node.value.strip() else None
    return None


def programs_run(paths: list[Path], root: Path = ROOT) -> dict[str, set[str]]:
    """{program: files} for every subprocess.run/Popen/check_output and shutil.which with a literal program."""
    found: dict[str, set[str]] = {}
    calls = {"run", "Popen", "check_output", "check_call", "call", "which"}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            owner = getattr(node.func, "value", None)
            if name not in calls or (name == "run" and getattr(owner, "id", "") != "subprocess"):
                continue
            prog = _first_word(node.args[0])
            if prog and not prog.startswith(("-", "/", ".")):
                found.setdefault(Path(prog).name, set()).add(str(path.relative_to(root)))
    return found


def installed_by_make_test() -> str:
    """What `make -n test` would run: the recipe text of test and every target it depends on."""
    done = subprocess.run(["make", "-n", "-B", "test-tools"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    deps = subprocess.run(["make", "-n", "-p", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert re.search(r"^test: .*\btest-tools\b", deps.stdout, re.M), "make test must depend on test-tools"
    return done.stdout


def test_every_program_the_tests_run_is_installed_by_make_test():
    sources = sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    recipe = installed_by_make_test()
    missing = {}
    for prog, where in programs_run(sources).items():
        if prog in BASE or prog in OPTIONAL:
            continue
        needle = COMES_WITH.get(prog, prog)
        if not re.search(rf"command -v \S*{re.escape(needle)}\S* ", recipe):
            missing[prog] = sorted(where)
    assert not missing, f"programs run by tests or benchmarks but never installed by `make test`: {missing}"


def test_the_check_finds_programs(tmp_path):
    """The scan is not vacuous: it sees list-form, string-form and `which` calls."""
    (tmp_path / "t.py").write_text("import subprocess, shutil\n"
                                   "subprocess.run(['ffmpeg', '-y'])\n"
                                   "subprocess.Popen('wrk -t1', shell=True)\n"
                                   "shutil.which('chromium')\n")
    assert set(programs_run([tmp_path / "t.py"], root=tmp_path)) == {"ffmpeg", "wrk", "chromium"}
