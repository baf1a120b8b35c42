"""notebooks/scaling_laws.ipynb runs top to bottom on a real sweep (nbclient, python3 kernel), writes a
PNG, and prints the same L(N) exponent as lvm.analysis computes here."""

import warnings

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from lvm.analysis import (
    fit_loss_surface,
    fit_power_law,
    loss_curves,
    params_points,
    plan_compute,
    runs_table,
    surface_points,
)
from tests.conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "scaling_laws.ipynb"


def test_notebook_is_saved_clean():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_notebook_runs_on_a_sweep_and_writes_the_figure(tiny_sweep, tmp_path, monkeypatch):
    figure = tmp_path / "figures" / "scaling.png"
    # The kernel inherits this process's environment.
    monkeypatch.setenv("LVM_SWEEP_DIR", str(tiny_sweep))
    monkeypatch.setenv("LVM_FIGURE_PATH", str(figure))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Started in notebooks/, as Jupyter does; a failing cell raises CellExecutionError with its traceback.
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    stdout = "".join(out.text for out in outputs if out.output_type == "stream" and out.name == "stdout")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3 sizes: the fallback to a pure power law is expected
        points = params_points(runs_table(tiny_sweep))
        fit = fit_power_law(points["params"], points["loss"], offset="auto")
    assert fit.describe("α") in stdout
    # The joint-fit panel and the planner, with the same numbers as lvm.analysis gives here.
    joint = fit_loss_surface(surface_points(loss_curves(tiny_sweep, skip_warmup=True)), n_bootstrap=100)
    assert f"joint: {joint.surface.formula()}" in stdout
    assert f"  alpha: {joint.estimates['alpha']}" in stdout
    plan = plan_compute(joint, 1e20)
    assert f"C = 1e+20: N_opt = {plan.params}" in stdout and f"{plan.model} for" in stdout
    joint_figure = figure.with_name("scaling_joint.png")
    assert f"joint figure: {joint_figure}" in stdout
    with Image.open(joint_figure) as image:
        assert image.format == "PNG" and image.width > 800 and image.height > 600
    assert f"sweep: {tiny_sweep}" in stdout and f"figure: {figure}" in stdout
    assert sum("image/png" in out.get("data", {}) for out in outputs) == 2  # both figures are shown, too
    assert any("tiny_w128" in out.get("data", {}).get("text/plain", "") for out in outputs)  # the runs table

    with Image.open(figure) as image:
        image.verify()
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.width > 1000 and image.height > 400
    assert not list(figure.parent.glob(".*.png"))  # no temporary file left behind
