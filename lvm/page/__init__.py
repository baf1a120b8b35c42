"""The demo page served by `python -m lvm.app`: upload checks, finding a finished demo run and its
prompts, the two prompting modes as generators of growing galleries, and the Gradio layout."""
