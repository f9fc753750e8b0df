"""The package's import structure: no import cycle, and the layers stay in
order (the bijectors never reach the models, training, export or the CLI).

The graph is read statically from every module's source with `ast`, so it
includes imports inside functions, and costs milliseconds. One subprocess
then imports `tfp_flows.bijectors` on its own to show that it stands alone.
"""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "tfp_flows"

# What the bijector layer may never import, directly or through other modules.
HIGHER_LAYERS = (
    "tfp_flows.models", "tfp_flows.training", "tfp_flows.cli",
    "tfp_flows.recipes", "tfp_flows.runs", "tfp_flows.plots",
    "tfp_flows.export", "tfp_flows.flow_ops", "tfp_flows.data",
)
BIJECTORS = "tfp_flows.bijectors"
REVERSIBLE = "tfp_flows.bijectors.reversible"


def _modules():
    """``{dotted name: path}`` of every module of the package (a package is
    named by its ``__init__.py``); directories without one are skipped."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        dirs = [ROOT.joinpath(*parts[:i]) for i in range(1, len(parts))]
        if not all((d / "__init__.py").is_file() for d in dirs):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name, path, modules):
    """The package modules `name` imports, anywhere in its source.

    ``from a import b`` counts as importing ``a.b`` when that is a module,
    else ``a``; ``import a.b`` as importing ``a.b``. The parent packages a
    dotted import initialises implicitly are not counted: every submodule
    would otherwise depend on ``tfp_flows/__init__.py``, which imports the
    whole library on purpose.
    """
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here[:len(here) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else base)
    return {t for t in targets if t in modules and t != name}


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _closure(graph, start):
    seen, stack = set(), [start]
    while stack:
        for target in graph[stack.pop()]:
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def _within(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def _find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_module_discovery_sees_the_layers(graph):
    for name in (PACKAGE, BIJECTORS, "tfp_flows.bijectors.chain",
                 "tfp_flows.bijectors.coupling", REVERSIBLE,
                 "tfp_flows.bijectors.reversible.gradient", "tfp_flows.models",
                 "tfp_flows.flow_ops", "tfp_flows.training.init"):
        assert name in graph, name


def test_the_checks_see_function_level_imports_and_cycles(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(textwrap.dedent("""
        from . import chain
        def late():
            from tfp_flows.bijectors.reversible import gradient
            import tfp_flows.models
    """))
    modules = {"tfp_flows.bijectors.chain": None, "tfp_flows.models": None,
               "tfp_flows.bijectors.reversible.gradient": None,
               "tfp_flows.bijectors.probe": source}
    assert _imports("tfp_flows.bijectors.probe", source, modules) == {
        "tfp_flows.bijectors.chain", "tfp_flows.models",
        "tfp_flows.bijectors.reversible.gradient"}
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle(graph):
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_bijectors_never_reach_higher_layers(graph):
    for name in graph:
        if not _within(name, BIJECTORS):
            continue
        reached = _closure(graph, name)
        bad = sorted(t for t in reached
                     if t == PACKAGE or any(_within(t, h) for h in HIGHER_LAYERS))
        assert not bad, f"{name} imports {bad}"


def test_bijectors_never_reach_the_reversible_gradient(graph):
    """The reversible gradient sits on top of the bijectors: `FlowChain` and
    every layer work without it (only the package's `__init__` exposes it)."""
    for name in graph:
        if not _within(name, BIJECTORS) or name == BIJECTORS or _within(name, REVERSIBLE):
            continue
        reached = sorted(t for t in _closure(graph, name) if _within(t, REVERSIBLE))
        assert not reached, f"{name} imports {reached}"


def test_bijectors_import_no_private_names(graph):
    """No bijector module imports another module's underscore names."""
    modules = _modules()
    for name, path in modules.items():
        if not _within(name, BIJECTORS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.module or \
                    not node.module.startswith(PACKAGE):
                continue
            private = [a.name for a in node.names if a.name.startswith("_")
                       and f"{node.module}.{a.name}" not in modules]
            assert not private, f"{name} imports {private} from {node.module}"


_STANDALONE = textwrap.dedent("""
    import json, sys, types
    # An empty top-level package: `tfp_flows/__init__.py` (which imports the
    # whole library) does not run, so only what the bijectors need loads.
    top = types.ModuleType("tfp_flows")
    top.__path__ = [sys.argv[1]]
    sys.modules["tfp_flows"] = top
    import tfp_flows.bijectors as B
    import tensorflow as tf

    layers = [B.ActNorm(2, event_ndims=1, data_init=False, name="a"),
              B.AffineCoupling([1.0, 0.0], hidden=4, name="c")]
    layers[0].log_scale.assign([0.5, -0.25])
    for v in layers[1].trainable_variables:
        v.assign(v + 0.1)
    x = tf.constant([[0.5, -1.0], [2.0, 0.25]])
    grads = []
    for chain in (B.FlowChain(layers), B.ReversibleChain(layers)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            z, ldj = B.inverse_and_log_det(chain, x)
            loss = tf.reduce_sum(z ** 2) + tf.reduce_sum(ldj)
        grads.append(tape.gradient(loss, x).numpy().tolist())
    print(json.dumps({"modules": sorted(m for m in sys.modules
                                        if m.startswith("tfp_flows.")),
                      "grads": grads}))
""")


def test_bijectors_import_alone_in_a_fresh_interpreter():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", _STANDALONE, str(ROOT / PACKAGE)], env=env,
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    loaded = result["modules"]
    assert REVERSIBLE in loaded
    higher = [m for m in loaded if any(_within(m, h) for h in HIGHER_LAYERS)]
    assert not higher, higher
    plain, reversible = result["grads"]
    np.testing.assert_allclose(reversible, plain, rtol=1e-5)
