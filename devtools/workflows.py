"""API-format workflows the tests and the demo queue."""

from __future__ import annotations

from typing import Any


def selection_workflow(
    image: str,
    points_json: str,
    clip_vision: str,
    prefix: str = "p3s_select",
    inpaint_method: str = "telea",
    batch: int = 1,
) -> dict[str, Any]:
    """LoadImage -> P3S Points -> P3S RNGR Mask -> P3S Inpaint -> SaveImage (masks saved too).

    With ``batch`` > 1 the image is repeated into a batch (RepeatImageBatch) to exercise point
    sets per image.
    """
    image_ref: list[Any] = ["1", 0]
    prompt: dict[str, Any] = {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "P3SPoints", "inputs": {"points": points_json}},
        "3": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": clip_vision}},
    }
    if batch > 1:
        prompt["9"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": batch}}
        image_ref = ["9", 0]
    prompt.update(
        {
            "4": {
                "class_type": "P3SRngrMask",
                "inputs": {
                    "images": image_ref,
                    "points": ["2", 0],
                    "clip_vision": ["3", 0],
                    "layer": -2,
                    "sigma": 1.0,
                    "dilation": 8,
                    "gate_negatives": True,
                },
            },
            "5": {
                "class_type": "P3SInpaint",
                "inputs": {
                    "images": image_ref,
                    "mask": ["4", 1],
                    "method": inpaint_method,
                    "radius": 5,
                    "fill": 0.5,
                },
            },
            "6": {
                "class_type": "SaveImage",
                "inputs": {"images": ["5", 0], "filename_prefix": f"{prefix}_clean"},
            },
            "7": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 0]}},
            "8": {
                "class_type": "SaveImage",
                "inputs": {"images": ["7", 0], "filename_prefix": f"{prefix}_subject"},
            },
            "10": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 1]}},
            "11": {
                "class_type": "SaveImage",
                "inputs": {"images": ["10", 0], "filename_prefix": f"{prefix}_negative"},
            },
            "12": {
                "class_type": "SaveImage",
                "inputs": {"images": ["4", 2], "filename_prefix": f"{prefix}_heatmap"},
            },
        }
    )
    return prompt
