"""The LLaMA decoder and its size table."""

from lvm.model.config import NUM_VQ_CODES, SIZES, VOCAB_SIZE, ModelConfig
from lvm.model.llama import LLaMA, count_parameters

__all__ = ["LLaMA", "ModelConfig", "SIZES", "NUM_VQ_CODES", "VOCAB_SIZE", "count_parameters"]
