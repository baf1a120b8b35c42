"""Weights in other projects' formats: Hugging Face `LlamaForCausalLM` folders both ways (`hf`) and the
original's JAX/EasyLM parameters in (`easylm`). `python -m lvm.convert` is the command line over both.

Import the submodules themselves (`from lvm.interop.hf import export_hf`); this package imports nothing,
so that `lvm.interop.pretrained` can build on `hf` without a cycle.
"""
