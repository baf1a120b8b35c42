"""Run entry points (`python -m lvm.<name>`) as a user does, in a subprocess (the only way to test DDP
launches, multiruns and kills): the repository on PYTHONPATH, LVM_ROOT (logs/, data/) in `cwd`."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_module_cli(module: str, *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS`; fails the test with the end of its output unless it exits 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LVM_ROOT": str(cwd)}
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def run_train_cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m lvm.train ARGS`."""
    return run_module_cli("lvm.train", *args, cwd=cwd, timeout=timeout)
