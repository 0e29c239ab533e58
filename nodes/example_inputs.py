"""The example workflows' input images, put where ComfyUI's Load Image finds them.

The examples name their images by file name alone, as ComfyUI's own templates do (a Load Image
widget value resolves in ComfyUI's input folder). The images ship in ``example_workflows/input/``;
when the pack loads, each one that the input folder lacks is copied there. An existing file of that
name is never replaced. [our addition]
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

EXAMPLE_INPUTS = Path(__file__).resolve().parent.parent / "example_workflows" / "input"


def install_example_inputs(input_dir: str | Path | None = None) -> list[Path]:
    """Copy the example input images missing from ``input_dir`` (ComfyUI's input folder by default)."""
    if input_dir is None:
        import folder_paths

        input_dir = folder_paths.get_input_directory()
    target_dir = Path(input_dir)
    copied = []
    for source in sorted(EXAMPLE_INPUTS.glob("*.png")):
        target = target_dir / source.name
        if target.exists():
            continue
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(source, partial)
            partial.replace(target)
            copied.append(target)
        except OSError as error:  # a read-only input folder must not stop the pack from loading
            logging.warning("P3S: could not copy the example input %s to %s: %s", source.name, target_dir, error)
    if copied:
        logging.info("P3S: example input images copied to %s: %s", target_dir, ", ".join(p.name for p in copied))
    return copied
