"""The backbones' pixels are the reference implementations' pixels."""

import numpy as np
import pytest
import torch
from PIL import Image

from p3s_core.errors import P3SInputError
from p3s_core.scoring.preprocess import MASK_FILL, masked_reference, preprocess_images
from p3s_core.scoring.protocol import CLIP_PREPROCESS, DINO_PREPROCESS

SIZES = [(300, 225), (225, 301), (512, 512), (97, 130)]  # (height, width): odd excesses, up- and down-scaling


def _images(height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    # values on the 8-bit grid, as images read from PNG are
    return torch.randint(0, 256, (2, height, width, 3), generator=generator).float() / 255.0


def _pil(image):
    return Image.fromarray(np.rint(image.numpy() * 255).astype(np.uint8))


@pytest.mark.parametrize("size", SIZES)
def test_clip_pixels_match_transformers_clip_image_processor(size):
    from devtools.launch_comfyui import declare_torchvision_ops

    declare_torchvision_ops()
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    images = _images(*size)
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=list(CLIP_PREPROCESS.mean),
        image_std=list(CLIP_PREPROCESS.std),
    )
    expected = processor(images=[_pil(i) for i in images], return_tensors="pt")["pixel_values"]
    ours = preprocess_images(images, CLIP_PREPROCESS)
    assert ours.shape == (2, 3, 224, 224)
    assert torch.allclose(ours, expected.float(), atol=1e-5)


@pytest.mark.parametrize("size", SIZES)
def test_dino_pixels_match_torchvision_as_dino_evaluates(size):
    from devtools.launch_comfyui import declare_torchvision_ops

    declare_torchvision_ops()
    from torchvision import transforms

    pipeline = transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    images = _images(*size, seed=1)
    expected = torch.stack([pipeline(_pil(i)) for i in images])
    assert torch.allclose(preprocess_images(images, DINO_PREPROCESS), expected, atol=1e-5)


def test_a_masked_reference_is_the_subject_on_grey_cut_to_a_square():
    image = torch.rand(100, 200, 3)
    mask = torch.zeros(100, 200)
    mask[40:60, 150:190] = 1  # 20 x 40 px subject near the right edge
    cut = masked_reference(image, mask)
    assert cut.shape == (44, 44, 3)  # 40 px * 1.1
    inside = cut[12:32, 2:42]  # the subject, centred
    assert torch.equal(inside, image[40:60, 150:190])
    assert bool((cut[:10] == MASK_FILL).all()) and bool((cut[34:] == MASK_FILL).all())


def test_an_empty_mask_is_refused():
    with pytest.raises(P3SInputError, match="empty"):
        masked_reference(torch.rand(8, 8, 3), torch.zeros(8, 8))
