"""Fixtures for the data-pipeline tests; the helpers that write inputs live in `inputs.py` so test
modules can import them."""

from tests.data_pipelines.inputs import frame_folder, marked_image, photo, small_corpus  # noqa: F401  (fixtures)
