"""Reading media as the original LVM prepares it: image files with PIL, video frames with PyAV + OpenCV;
finding input files; recording the files a run skips. Used by every package (tokenizing, data pipelines,
evaluation, generation, the demo page); imports nothing from the rest of `lvm` but `lvm.core`."""
