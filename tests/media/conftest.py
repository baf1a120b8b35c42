"""The data-pipeline tests' input fixtures, for the media tests that read the same kinds of files."""

from tests.data_pipelines.inputs import marked_image, photo  # noqa: F401  (fixtures)
