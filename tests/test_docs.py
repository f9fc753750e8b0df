"""The documentation site builds with `mkdocs build --strict` (no broken links,
every API page resolves to real docstrings, every documented parameter has a
type) without a single warning."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    env_site = tmp_path / "site"
    # Not --quiet: the build's own log is what a user sees, and must be clean.
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--site-dir", str(env_site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin",
             "PYTHONPATH": str(ROOT)})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert not warnings, "\n".join(warnings)
    assert "Documentation built" in log
    assert (env_site / "api" / "bijectors" / "index.html").exists()
    page = (env_site / "api" / "bijectors" / "index.html").read_text()
    assert "AffineCoupling" in page and "log|det" in page
