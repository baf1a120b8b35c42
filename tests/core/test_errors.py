"""User errors: one `error:` line and exit status 1 from every entry point; bugs keep their traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lvm.core.errors import RefusedCheckpointError, UserError, one_line, report_user_errors, user_error_in
from lvm.data.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[2]


def raised(function, *args) -> BaseException:
    try:
        function(*args)
    except Exception as error:  # the test wants the exception with its traceback
        return error
    raise AssertionError("nothing was raised")


def test_what_counts_as_a_user_error(tmp_path):
    ours = raised(read_manifest, tmp_path / "nope.json")  # FileNotFoundError raised by lvm.data.shards
    assert user_error_in(ours) is ours
    torch_bug = raised(np.zeros(3).reshape, 4)  # ValueError raised inside numpy: a bug of the caller
    assert user_error_in(torch_bug) is None
    assert user_error_in(raised(lambda: [][1])) is None  # IndexError: a bug wherever it is raised
    assert user_error_in(AssertionError("invariant")) is None
    missing = raised(open, tmp_path / "missing.txt")  # a missing path is the user's, wherever it is met
    assert user_error_in(missing) is missing
    refused = RefusedCheckpointError(tmp_path / "x.ckpt")
    assert user_error_in(refused) is refused and isinstance(refused, UserError)
    mandatory = raised(lambda: OmegaConf.create({"inputs": "???"}).inputs)
    assert user_error_in(mandatory) is mandatory
    # A _target_ constructor refusing its arguments: Hydra wraps the error; the cause is what is shown.
    wrapped = raised(instantiate, {"_target_": "lvm.tokenizer.vqgan.VQGANConfig", "hidden_channels": 33})
    assert isinstance(wrapped, InstantiationException)
    assert isinstance(user_error_in(wrapped), ValueError) and "hidden_channels=33" in one_line(user_error_in(wrapped))
    numpy_inside = raised(instantiate, {"_target_": "numpy.ones", "shape": -1})
    assert user_error_in(numpy_inside) is None


def test_one_line_joins_lines_and_drops_key_error_quotes():
    assert one_line(ValueError("first\n  second\n")) == "first; second"
    assert one_line(KeyError("model: unknown size vqlm_3m")) == "model: unknown size vqlm_3m"


def test_the_decorator_prints_one_line_and_exits_1_or_lets_bugs_through(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @report_user_errors
    def command(path):
        return read_manifest(path)

    with pytest.raises(SystemExit) as exit_info:
        command(tmp_path / "nope.json")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope.json'}: manifest does not exist\n"

    @report_user_errors
    def buggy():
        return np.zeros(3).reshape(4)

    with pytest.raises(ValueError, match="cannot reshape"):
        buggy()
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the full trace on request
    with pytest.raises(FileNotFoundError):
        command(tmp_path / "nope.json")


def run_entry_point(module: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {name: value for name, value in os.environ.items() if name != "HYDRA_FULL_ERROR"}
    env = {**base, "PYTHONPATH": str(ROOT), "LVM_ROOT": str(cwd), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


TOKENIZER = str(ROOT / "lvm" / "assets" / "demo_tokenizer")
# (module, arguments with {missing} for a path that does not exist, the one line expected on stderr)
ENTRY_POINTS = [
    (
        "lvm.tokenize",
        ["inputs=[{missing}]", "output_dir=out", f"tokenizer_path={TOKENIZER}"],
        "error: inputs: {missing} is not a folder, a .txt file list, a glob or a file",
    ),
    (
        "lvm.train",
        ["experiment=demo", "paths.data_dir={missing}"],
        "error: {missing}/shards/train/video/manifest.json: manifest does not exist",
    ),
    (
        "lvm.generate",
        ["model_path={missing}.ckpt", f"tokenizer_path={TOKENIZER}", "frames=[a.png]"],
        "error: {missing}.ckpt does not exist",
    ),
    (
        "lvm.evaluate",
        ["task=perplexity", "model_path={missing}.ckpt", f"tokenizer_path={TOKENIZER}", "prompts=p.jsonl"],
        "error: {missing}.ckpt does not exist",
    ),
    ("lvm.convert", ["direction=to_hf", "src={missing}.ckpt", "dst=hf"], "error: src: {missing}.ckpt does not exist"),
    ("lvm.detokenize", ["shards={missing}", f"tokenizer_path={TOKENIZER}"], "error: {missing}: no shards found"),
    (
        "lvm.train_tokenizer",
        ["experiment=tokenizer_tiny", "data.source={missing}"],
        "error: {missing}: no such folder or image list",
    ),
    (
        "data_pipelines.build",
        ["pipeline=video", "pipeline.builder.paths=[{missing}.mp4]", "output_dir=out", f"tokenizer_path={TOKENIZER}"],
        "error: {missing}.mp4: no such video file",
    ),
    ("lvm.app", ["model_path={missing}.ckpt", f"tokenizer_path={TOKENIZER}"], "error: {missing}.ckpt does not exist"),
    (
        "lvm.demo",
        ["tokenizer_path={missing}"],
        f"error: tokenizer_path: {{missing}}: no config.json (expected an open-muse VQGAN folder; the shipped one is "
        f"{TOKENIZER})",
    ),
    ("data_pipelines.jsonl", ["import", "{missing}.jsonl", "out"], "error: {missing}.jsonl: no such file"),
    ("data_pipelines.stats", ["{missing}"], "error: {missing}: not a manifest file or a folder"),
]


@pytest.mark.parametrize("module, args, expected", ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS])
def test_a_missing_input_path_is_one_error_line(tmp_path, module, args, expected):
    missing = str(tmp_path / "nope")
    result = run_entry_point(module, *(a.format(missing=missing) for a in args), cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert error_lines == [expected.format(missing=missing)], result.stderr[-2000:]
    assert result.stderr.rstrip("\n").splitlines()[-1] == error_lines[0]  # the last thing the user reads


def test_hydra_full_error_shows_the_trace(tmp_path):
    missing = str(tmp_path / "nope")
    full = run_entry_point(
        "lvm.detokenize",
        f"shards={missing}",
        f"tokenizer_path={TOKENIZER}",
        cwd=tmp_path,
        env={"HYDRA_FULL_ERROR": "1"},
    )
    assert full.returncode == 1 and "Traceback" in full.stderr and f"{missing}: no shards found" in full.stderr
