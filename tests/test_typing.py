"""The public API is typed: every public function, method and class of
`tfp_flows` annotates all its parameters and its return value, and the
package ships its ``py.typed`` marker.

Read statically with `ast` (milliseconds). Public means: a module-level
function whose name has no leading underscore, in a module whose name has
none; in a class, the methods without one (``__init__`` and ``__call__``
included for public classes). Functions nested in functions are
implementation details. The type check itself (mypy, configured in
setup.cfg) runs in CI (``.ci/run``).
"""

import ast
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tfp_flows"
_PUBLIC_DUNDERS = ("__init__", "__call__")


def _public_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(p.startswith("_") and p != "__init__" for p in parts):
            continue
        yield path


def _is_public(name, in_public_class):
    if name in _PUBLIC_DUNDERS:
        return in_public_class
    return not name.startswith("_")


def _missing(fn, is_method):
    """Names of `fn`'s unannotated parameters (and ``'return'``)."""
    args = fn.args
    positional = args.posonlyargs + args.args
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod"
                 for d in fn.decorator_list)
    if is_method and not static:
        positional = positional[1:]  # self / cls
    params = positional + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
    missing = [a.arg for a in params if a.annotation is None]
    if fn.returns is None:
        missing.append("return")
    return missing


def _unannotated(tree):
    """``(qualified name, missing)`` for each public function lacking types."""
    found = []

    def visit(body, prefix, in_class, public_class):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _is_public(node.name, public_class):
                    missing = _missing(node, in_class)
                    if missing:
                        found.append((prefix + node.name, missing))
            elif isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.", True,
                      public_class=not node.name.startswith("_"))
            elif isinstance(node, ast.If):  # e.g. `if TYPE_CHECKING:`
                visit(node.body + node.orelse, prefix, in_class, public_class)

    visit(tree.body, "", False, True)
    return found


def test_every_public_function_is_annotated():
    problems = []
    for path in _public_modules():
        for name, missing in _unannotated(ast.parse(path.read_text())):
            problems.append(f"{path.relative_to(ROOT)}: {name} ({', '.join(missing)})")
    assert not problems, "unannotated public API:\n" + "\n".join(problems)


def test_the_check_sees_missing_annotations():
    tree = ast.parse(
        "def f(x: int, y) -> int: ...\n"
        "def _private(x): ...\n"
        "class A:\n"
        "    def __init__(self, n: int): ...\n"
        "    def m(self, *args: int, **kw) -> None: ...\n"
        "    @staticmethod\n"
        "    def s(v) -> None: ...\n"
        "    def _helper(self, z): ...\n"
        "class _B:\n"
        "    def __init__(self, q): ...\n"
        "    def shown(self) -> int: ...\n")
    assert _unannotated(tree) == [("f", ["y"]), ("A.__init__", ["return"]),
                                  ("A.m", ["kw"]), ("A.s", ["v"])]


def test_the_package_ships_py_typed():
    assert (PACKAGE / "py.typed").is_file()
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    shipped = config["options.package_data"]["tfp_flows"].split()
    assert "py.typed" in shipped
