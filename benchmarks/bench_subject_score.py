"""Time to score one DreamBench subject (prompts x images against its references) with the protocol's
architectures: CLIP ViT-B/32 and DINO ViT-S/16, randomly initialised (same cost as the real weights).

Not a test: prints the seconds of each stage (preprocessing, CLIP images, CLIP texts, DINO) and the
total per subject, then the same divided by the number of images. ``--size tiny`` uses the test
models (a quick check that the script runs).

    python -m benchmarks.bench_subject_score --images 100 --references 4
    python -m benchmarks.bench_subject_score --size tiny --images 8 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _protocol_sized(folder: Path) -> tuple[Path, Path]:
    """Random ViT-B/32 CLIP and ViT-S/16 DINO written as single files (the loader reads their sizes)."""
    from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

    from devtools.tiny_eval_models import write_single_file

    clip = CLIPModel(
        CLIPConfig(
            projection_dim=512,
            text_config={
                "hidden_size": 512,
                "intermediate_size": 2048,
                "num_hidden_layers": 12,
                "num_attention_heads": 8,
            },
            vision_config={
                "hidden_size": 768,
                "intermediate_size": 3072,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "patch_size": 32,
            },
        )
    )
    dino = ViTModel(
        ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
        add_pooling_layer=False,
    )
    return write_single_file(clip, folder / "clip.safetensors"), write_single_file(dino, folder / "dino.safetensors")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["protocol", "tiny"], default="protocol")
    parser.add_argument("--images", type=int, default=100, help="generated images per subject (DreamBench: 25 x 4)")
    parser.add_argument("--references", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from devtools.launch_comfyui import declare_torchvision_ops

    declare_torchvision_ops()
    from devtools.tiny_eval_models import comfy_tokenizer_dir, tiny_clip, tiny_dino, write_single_file
    from p3s_core.scoring import subject_score
    from p3s_core.scoring.backbones import load_clip, load_dino

    with tempfile.TemporaryDirectory() as folder:
        if args.size == "tiny":
            paths = (
                write_single_file(tiny_clip(), Path(folder) / "c.safetensors"),
                write_single_file(tiny_dino(), Path(folder) / "d.safetensors"),
            )
        else:
            paths = _protocol_sized(Path(folder))
        start = time.perf_counter()
        clip, dino = load_clip(paths[0], comfy_tokenizer_dir()).to(args.device), load_dino(paths[1]).to(args.device)
        load_s = time.perf_counter() - start
    size = args.resolution
    images = torch.rand(args.images, size, size, 3, generator=torch.Generator().manual_seed(0))
    references = torch.rand(args.references, size, size, 3, generator=torch.Generator().manual_seed(1))
    prompts = [f"a sks dog number {i}" for i in range(args.images)]
    stages: dict[str, float] = {}

    def timed(name, function):
        def wrapper(*a, **k):
            begin = time.perf_counter()
            result = function(*a, **k)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - begin
            return result

        return wrapper

    subject_score.preprocess_images = timed("preprocess", subject_score.preprocess_images)
    clip.embed_images = timed("clip_images", clip.embed_images)
    clip.embed_texts = timed("clip_texts", clip.embed_texts)
    dino.embed_images = timed("dino_images", dino.embed_images)
    start = time.perf_counter()
    subject_score.score_subject(images, references, prompts, clip, dino)
    total = time.perf_counter() - start
    result = {
        "size": args.size,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "images": args.images,
        "references": args.references,
        "resolution": size,
        "load_s": round(load_s, 3),
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "total_s": round(total, 3),
        "per_image_ms": round(1000 * total / args.images, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
