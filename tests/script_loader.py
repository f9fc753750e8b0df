"""Loads a repository script (an example or a benchmark, which are not
packages) as a module, so that tests can call its functions."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(folder, name):
    """The module of ``<repo>/<folder>/<name>.py``, executed."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(REPO, folder, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
