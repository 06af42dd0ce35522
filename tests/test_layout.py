"""Size limits that keep lib and bench readable: modules of at most 400 lines, functions of at most 50."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
# TODO(#15): report rewrite in progress
NOT_YET = {"lib/report.py", "lib/summary.py", "lib/plots.py"}


def _modules():
    """(relative path, text) of every lib and bench module held to the limits."""
    for path in sorted([*ROOT.glob("lib/*.py"), *ROOT.glob("bench/*.py")]):
        name = str(path.relative_to(ROOT))
        if name not in NOT_YET:
            yield name, path.read_text()


def _long_functions(name, text):
    """`path:line name (N lines)` for each function or method longer than the limit, decorators included."""
    found = []
    for node in ast.walk(ast.parse(text, name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - first + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_every_module_is_at_most_400_lines():
    offenders = [f"{name} ({len(text.splitlines())} lines)" for name, text in _modules()
                 if len(text.splitlines()) > MAX_MODULE_LINES]
    assert not offenders, f"split these modules (at most {MAX_MODULE_LINES} lines each): " + ", ".join(offenders)


def test_every_function_is_at_most_50_lines():
    offenders = [f for name, text in _modules() for f in _long_functions(name, text)]
    assert not offenders, (f"split these functions into helpers (at most {MAX_FUNCTION_LINES} lines each): "
                           + ", ".join(offenders))


def test_the_limits_see_what_they_check():
    """The checks find modules to read and would name a long function."""
    names = [name for name, _ in _modules()]
    assert "lib/cifar.py" in names and "bench/common.py" in names
    long_one = "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    assert _long_functions("x.py", long_one) == [f"x.py:1 f ({MAX_FUNCTION_LINES + 1} lines)"]
