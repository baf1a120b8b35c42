"""The basics every part of `lvm` (and `data_pipelines`) uses; imports nothing else from `lvm`."""
