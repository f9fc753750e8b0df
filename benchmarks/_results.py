"""What every benchmark records beside its figures, and how it writes them:
the CPU model and the commit, and ``results/<name>.json`` + ``.md``."""

import json
import os
import subprocess

__all__ = ["RESULTS", "cpu_model", "commit", "write", "run_json_worker"]

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


def run_json_worker(cmd, env, what):
    """Runs `cmd` (a benchmark's worker process) and returns the last JSON
    line it printed; a RuntimeError with its stderr's tail if it failed."""
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{what} worker failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])
