"""Tokenizer speed: our encode and decode against the same VQGAN run plainly, and `lvm.tokenize`
end to end (JPEG files → shards) against our pure encode.

    python -m benchmarks.bench_tokenizer                    # LVM tokenizer (256 px, f16, 8192 codes)
    python -m benchmarks.bench_tokenizer --images 64 --batch-size 16 --device cuda

One run, one set of weights (the LVM configuration, randomly initialised, saved in the open-muse
layout) and one set of JPEG files (crops of scikit-image's sample photographs):
- plain reference: the same weights in a fresh VQGANModel, fp32, NCHW, called chunk by chunk as a
  script that knows nothing of inference would (autograd on, no inference mode); a second row runs
  it under `torch.no_grad`, the plain script's best case;
- ours: `lvm.tokenizer.codec` as `lvm.tokenize` runs it: inference mode, channels-last, and bf16
  autocast on GPUs (fp32 on CPU, where bf16 without hardware support is slower);
- end to end: `lvm.tokenize` on the JPEG folder with DataLoader workers (decode + resize), to shards.
  Its time includes starting the workers and, with them alive, the copy-on-write of the pages this
  process writes after forking them: fixed costs that short runs show (8 images gave 83 %, against
  94 % for the same call in a fresh process) and long runs amortise.
Timings are medians over `--repeats` rounds, the variants interleaved within each round so that
background load hits them alike. Targets: our encode >= 1.3x the plain one; end to end >= 85 % of
our pure encode.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from rich.console import Console
from skimage import data as skdata

from lvm.core.devices import resolve_device, resolve_precision
from lvm.tokenize import tokenize
from lvm.tokenizer import VQGANConfig, VQGANModel, load_image, load_vqgan, save_vqgan
from lvm.tokenizer.codec import decode_codes, encode_images, to_channels_last

ROOT = Path(__file__).resolve().parents[1]

ENCODE_TARGET = 1.3
END_TO_END_TARGET = 0.85
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "cat")


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """`n` JPEGs of 320-480 px crops of scikit-image photographs (varied sizes, as a real folder)."""
    rng = np.random.default_rng(seed)
    photos = [getattr(skdata, name)() for name in PHOTOS]
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = (
            int(rng.integers(240, min(480, photo.shape[0]) + 1)),
            int(rng.integers(240, min(480, photo.shape[1]) + 1)),
        )
        top, left = int(rng.integers(0, photo.shape[0] - h + 1)), int(rng.integers(0, photo.shape[1] - w + 1))
        path = folder / f"img_{i:04d}.jpg"
        Image.fromarray(photo[top : top + h, left : left + w]).convert("RGB").save(path, quality=90)
        paths.append(path)
    return paths


def make_tokenizer(folder: Path, images: torch.Tensor, seed: int = 0) -> Path:
    """The LVM VQGAN with random weights whose codebook is spread over the encoder's latents (so
    many codes are in use and a changed code would show), saved in the open-muse layout."""
    torch.manual_seed(seed)
    model = VQGANModel(VQGANConfig()).eval()
    with torch.no_grad():
        latents = model.encode_latents(images[:2])
        model.quantize.embedding.weight.normal_(float(latents.mean()), float(latents.std()))
    save_vqgan(model, folder)
    return folder


def plain_encode(model: VQGANModel, images: torch.Tensor, batch_size: int, grad: bool = False) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.set_grad_enabled(grad):
        return torch.cat(
            [model.get_code(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
        )


def plain_decode(model: VQGANModel, codes: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat(
            [
                model.decode_code(codes[i : i + batch_size].to(device)).clamp(0, 1).cpu()
                for i in range(0, len(codes), batch_size)
            ]
        )


def timed(fn) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="JPEG files, encoded by every encode variant")
    parser.add_argument("--decode-images", type=int, default=8, help="of them, decoded by both decode variants")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=2, help="lvm.tokenize DataLoader workers")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    autocast = resolve_precision("auto", device)
    work = Path(tempfile.mkdtemp(prefix="bench_tokenizer_"))
    try:
        (work / "jpegs").mkdir()
        paths = write_jpegs(work / "jpegs", args.images)
        images = torch.stack([load_image(p, size=256) for p in paths])
        tokenizer_dir = make_tokenizer(work / "vqgan", images)

        plain = load_vqgan(tokenizer_dir, map_location=device).eval()
        ours = to_channels_last(load_vqgan(tokenizer_dir, map_location=device).eval())
        plain_encode(plain, images[:1], 1)  # warm-up of both paths (oneDNN primitive caches)
        encode_images(ours, images[:1], 1, channels_last=True, autocast_dtype=autocast)

        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):

            def e2e_cfg(i: int):
                return compose(
                    "tokenize",
                    overrides=[
                        f"inputs=[{work / 'jpegs'}]",
                        f"output_dir={work / f'shards_{i}'}",
                        f"tokenizer_path={tokenizer_dir}",
                        f"batch_size={args.batch_size}",
                        f"num_workers={args.num_workers}",
                        "progress=false",
                        f"device={device}",
                    ],
                )

            cfgs = [e2e_cfg(i) for i in range(args.repeats)]

        times: dict[str, list[float]] = {
            k: [] for k in ("plain_enc", "no_grad_enc", "our_enc", "plain_dec", "our_dec", "e2e")
        }
        for r in range(args.repeats):
            t, plain_codes = timed(lambda: plain_encode(plain, images, args.batch_size, grad=True))
            times["plain_enc"].append(t)
            t, _ = timed(lambda: plain_encode(plain, images, args.batch_size))
            times["no_grad_enc"].append(t)
            t, our_codes = timed(
                lambda: encode_images(ours, images, args.batch_size, channels_last=True, autocast_dtype=autocast)
            )
            times["our_enc"].append(t)
            decode_codes_in = plain_codes[: args.decode_images]
            t, plain_pixels = timed(lambda codes=decode_codes_in: plain_decode(plain, codes, args.batch_size))
            times["plain_dec"].append(t)
            t, our_pixels = timed(
                lambda codes=decode_codes_in: decode_codes(ours, codes, args.batch_size, autocast_dtype=autocast)
            )
            times["our_dec"].append(t)
            totals = tokenize(cfgs[r], console=Console(quiet=True))
            times["e2e"].append(totals["seconds"] * len(images) / totals["images"])
            print(
                f"round {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()),
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    counts = {k: args.decode_images if k.endswith("_dec") else len(images) for k in times}
    rate = {k: counts[k] / statistics.median(v) for k, v in times.items()}
    same_codes = float((plain_codes == our_codes).double().mean())
    pixel_error = float((plain_pixels - our_pixels).abs().max())
    encode_ratio = rate["our_enc"] / rate["plain_enc"]
    e2e_fraction = rate["e2e"] / rate["our_enc"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"\nLVM VQGAN (256 px, f16, 8192 codes, 74.0 M parameters), {len(images)} images encoded, "
        f"{args.decode_images} decoded, batch {args.batch_size}, {name}, torch {torch.__version__}, "
        f"median of {args.repeats}\n"
    )
    print("| path | images/s | vs plain fp32 |")
    print("|---|---:|---:|")
    print(f"| plain encode (fp32, NCHW, autograd on) | {rate['plain_enc']:.2f} | 1.00x |")
    print(
        f"| plain encode under no_grad | {rate['no_grad_enc']:.2f} | {rate['no_grad_enc'] / rate['plain_enc']:.2f}x |"
    )
    print(
        f"| our encode (inference_mode, channels-last{', bf16' if autocast else ''}) | {rate['our_enc']:.2f} "
        f"| {encode_ratio:.2f}x |"
    )
    print(f"| plain decode (no_grad) | {rate['plain_dec']:.2f} | 1.00x |")
    print(f"| our decode | {rate['our_dec']:.2f} | {rate['our_dec'] / rate['plain_dec']:.2f}x |")
    print(
        f"| `lvm.tokenize` JPEG → shards ({args.num_workers} workers) | {rate['e2e']:.2f} "
        f"| {rate['e2e'] / rate['plain_enc']:.2f}x ({100 * e2e_fraction:.0f} % of our encode) |"
    )
    print(
        f"\ncodes equal to the plain encoder's: {100 * same_codes:.2f} %; decoded pixels max |diff| {pixel_error:.2e}"
    )
    print(f"our encode vs the plain no_grad script: {rate['our_enc'] / rate['no_grad_enc']:.2f}x")
    print(f"end to end: {100 * e2e_fraction:.0f} % of pure encode (target {100 * END_TO_END_TARGET:.0f} %)")
    print(f"bench_tokenizer: {encode_ratio:.2f}x vs plain fp32 encode (target {ENCODE_TARGET}x)")


if __name__ == "__main__":
    main()
