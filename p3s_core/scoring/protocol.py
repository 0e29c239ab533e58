"""The scoring protocol, pinned in one place so that numbers compare (our addition; the paper states
only the metric names, DESIGN 1.8).

Reference implementation followed: DreamBench++ (``yuangpeng/dreambench_plus``,
``dreambench_plus/metrics/clip_score.py`` and ``dino_score.py``), the most complete public code of
DreamBooth's DreamBench metrics (DreamBooth released none):

* **CLIP-I / CLIP-T**: CLIP ViT-B/32 (``openai/clip-vit-base-patch32``), images through the
  ``CLIPProcessor`` of ``transformers`` (PIL): shortest side to 224 px, bicubic, centre crop
  224 x 224 (top-left offset rounded down), OpenAI's mean and std; the projected embeddings
  (``visual_projection`` / ``text_projection``); texts padded, at most 77 tokens.
* **DINO**: DINO v1 ViT-S/16 (``facebook/dino-vits16``), the CLS token of the last layer after the
  final LayerNorm; images through torchvision (PIL): shortest side to 256 px, bicubic, centre crop
  224 x 224 (offset rounded to nearest), ImageNet mean and std. DreamBench++ loads DINO from
  ``torch.hub`` (``facebookresearch/dino``); we load the same weights from the ``transformers``
  conversion with the original LayerNorm epsilon (1e-6; the converted configs say 1e-12, one
  source of the "official vs HuggingFace" difference DreamBench++ notes).
* **Scores**: plain cosine in [-1, 1]. DreamBench++ prints 100 x cosine; CLIPScore (Hessel et al.)
  is 2.5 x max(cosine, 0); DreamBooth and the P3S paper's Table I give plain cosines (CLIP-T about
  0.24-0.30). CLIP-I and DINO are the mean over all (generated, reference) pairs, CLIP-T the mean
  over generated images of the cosine with their prompt, the identifier word removed.

Where other papers differ: DreamBooth's DINO is ViT-S/16 (ours); DreamBench++ defaults to
ViT-S/8 (``dino_vits8``); the P3S paper reports "DINOv2" (ViT-S/14 with another preprocessing).
These give different numbers for the same images: compare a paper's figures only with its own
backbone. Images given as floats are rounded to 8 bits before the PIL resize, as a PNG saved and
read back would be.
"""

from __future__ import annotations

from dataclasses import dataclass

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Resize the shortest side to ``resize`` (bicubic, PIL), centre crop ``crop`` x ``crop``, normalise.

    ``crop_offset``: ``"floor"`` as ``transformers``' ``center_crop`` places the crop,
    ``"round"`` as torchvision's ``CenterCrop`` (Python's ``round`` of half the excess).
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_offset: str
    reference: str


@dataclass(frozen=True)
class Backbone:
    """One protocol backbone: its name, the files users put in the model folder and where to get them."""

    key: str
    label: str
    hf_repo: str
    file_name: str
    url: str
    preprocess: Preprocess


CLIP_PREPROCESS = Preprocess(
    resize=224,
    crop=224,
    mean=OPENAI_CLIP_MEAN,
    std=OPENAI_CLIP_STD,
    crop_offset="floor",
    reference="transformers CLIPProcessor (PIL), as DreamBench++ clip_score.py",
)
DINO_PREPROCESS = Preprocess(
    resize=256,
    crop=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    crop_offset="round",
    reference="torchvision Resize(256, bicubic) + CenterCrop(224), as DreamBench++ dino_score.py",
)

CLIP_B32 = Backbone(
    key="clip",
    label="CLIP ViT-B/32",
    hf_repo="openai/clip-vit-base-patch32",
    file_name="clip-vit-base-patch32.safetensors",
    # The repository's safetensors conversion, pinned by commit (main has only .bin/.h5/.msgpack).
    url="https://huggingface.co/openai/clip-vit-base-patch32/resolve/"
    "d15b5f29721ca72dac15f8526b284be910de18be/model.safetensors",
    preprocess=CLIP_PREPROCESS,
)
DINO_S16 = Backbone(
    key="dino",
    label="DINO ViT-S/16",
    hf_repo="facebook/dino-vits16",
    file_name="dino-vits16.safetensors",
    url="https://huggingface.co/facebook/dino-vits16/resolve/a7a4d161f5c0bd70478c05ca5777ec7cd8848021/model.safetensors",
    preprocess=DINO_PREPROCESS,
)
BACKBONES = (CLIP_B32, DINO_S16)

EVAL_FOLDER = "p3s_eval"
"""The ComfyUI model folder (``models/p3s_eval``) that holds the two backbones."""
WEIGHT_EXTENSIONS = (".safetensors", ".bin")

# The architectures of the two protocol backbones: a loaded model with other sizes is labelled
# "not the protocol's backbone" in every report.
CLIP_B32_SHAPE = {"vision_hidden": 768, "vision_layers": 12, "patch": 32, "image": 224, "text_hidden": 512}
DINO_S16_SHAPE = {"hidden": 384, "layers": 12, "patch": 16, "image": 224}
DINO_LAYER_NORM_EPS = 1e-6
"""facebookresearch/dino's ``partial(nn.LayerNorm, eps=1e-6)``, used whatever a config file says."""
CLIP_MAX_TOKENS = 77
HEAD_DIM = 64
"""Attention head width of every CLIP and DINO ViT: the number of heads of a single-file model is its
width / 64 (a state dict does not record it)."""
CLIP_T_SCALE = 1.0
"""CLIP-T is the plain cosine (CLIPScore's 2.5 x max(cos, 0) is not used)."""
