"""Tiny models and files for the evaluation tests: a random LlamaForCausalLM saved by transformers
(the independent reference for losses), the tiny 32-px VQGAN (64 codes per image), small PNGs and
videos whose frame t is uniformly gray at level `frame_level(t)`."""

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlamaConfig, LlamaForCausalLM

from lvm.interop.pretrained import load_model
from lvm.tokenizer.checkpoint import load_vqgan

VOCAB = 72  # the tiny VQGAN's 64 codes + 8 reserved ids
MAX_SEQ_LEN = 320  # 5 images of 64 tokens
TOKENS_PER_IMAGE = 64


def save_tiny_hf_llama(folder: Path, max_seq_len: int = MAX_SEQ_LEN, seed: int = 0) -> Path:
    """A random LlamaForCausalLM (fp32) with the tiny LLaMA's dimensions, saved by transformers. A wide
    init (std 0.3) makes its predictions far from uniform, so a wrong target position shows."""
    torch.manual_seed(seed)
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=max_seq_len,
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            tie_word_embeddings=False,
            initializer_range=0.3,
        )
    )
    hf.save_pretrained(folder)
    return folder


def hf_target_loss(hf: LlamaForCausalLM, input_codes: np.ndarray, target_codes: np.ndarray) -> float:
    """transformers' own loss of the sequence [input | target] with the input positions masked (-100)."""
    ids = torch.as_tensor(np.concatenate([input_codes, target_codes]), dtype=torch.long)[None]
    labels = ids.clone()
    labels[:, : len(input_codes)] = -100
    with torch.no_grad():
        return float(hf(input_ids=ids, labels=labels).loss)


def frame_level(t: int) -> int:
    return 10 + 8 * t


def write_png(path: Path, seed: int, size: tuple[int, int] = (40, 48)) -> Path:
    """A smooth random RGB picture (height, width = size), so its codes vary."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    coarse.resize(size[::-1], Image.BILINEAR).save(path)
    return path


def write_frame_folder(folder: Path, n_frames: int) -> Path:
    """frame_<t>.png (t not zero-padded, so natural order matters), uniformly gray at frame_level(t)."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(n_frames):
        Image.fromarray(np.full((24, 20, 3), frame_level(t), dtype=np.uint8)).save(folder / f"frame_{t}.png")
    return folder


def write_video(path: Path, n_frames: int) -> Path:
    """An mpeg4 video (48×64) whose frame t is uniformly gray at frame_level(t), written with PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = 64, 48, "yuv420p", 2_000_000
        for t in range(n_frames):
            frame = np.full((48, 64, 3), frame_level(t), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def hf_lm_dir(tmp_path_factory) -> Path:
    return save_tiny_hf_llama(tmp_path_factory.mktemp("hf_llama"))


@pytest.fixture(scope="session")
def lm(hf_lm_dir):
    return load_model(hf_lm_dir)


@pytest.fixture(scope="session")
def hf_lm(hf_lm_dir) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(hf_lm_dir).eval()


@pytest.fixture(scope="session")
def vqgan(vqgan_dir):
    return load_vqgan(vqgan_dir)
