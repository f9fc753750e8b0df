"""What every benchmark records beside its figures, and how it writes them:
the CPU model and the commit, and ``results/<name>.json`` + ``.md``."""

import json
import os
import subprocess

__all__ = ["RESULTS", "cpu_model", "commit", "write"]

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def cpu_model():
    """``lscpu``'s model name (from /proc/cpuinfo), or 'unknown CPU'."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def commit():
    """The short hash of the checked-out commit, or 'unknown'."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write(name, result, text):
    """Writes ``results/<name>.json`` (the data) and ``results/<name>.md``."""
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
        f.write(text)
