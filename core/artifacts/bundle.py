"""The model bundle a user downloads: ``model/`` of a run plus a README that runs it.

The README is the run's model card (``core.artifacts.model_card``), so that the bundle is a Hugging
Face Hub repository as it is; a run from before the card gets the short README below.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from core.artifacts.card import MODEL_CARD_FILE
from core.storage import RunFiles, read_json

# Five lines that need torch, torchvision and pillow, and none of Transfer Lab's code.
SNIPPET = """\
import json, torch, torchvision.transforms as T, PIL.Image
p, labels = (json.load(open(f)) for f in ("preprocess.json", "labels.json"))
model = torch.export.load("model.pt2").module()
x = T.Compose([T.Resize(p["resize"]), T.CenterCrop(p["crop"]), T.ToTensor(), T.Normalize(p["mean"], p["std"])])(PIL.Image.open("photo.jpg").convert("RGB"))
print(labels[model(x[None]).argmax()])
"""
# What the snippet leaves out, and the model was trained with.
PREPARATION = """\
In training, photos were turned upright by their EXIF orientation, transparent pixels were
composited on white and 16-bit images scaled to 8 bits (by their brightest pixel). The
snippet's `.convert("RGB")` does none of this: for such images, apply
`PIL.ImageOps.exif_transpose`, flatten alpha onto white and scale to 8 bits first, or the
model will see different pixels.
"""


def readme(run_dir: Path) -> str:
    files = RunFiles(Path(run_dir))
    plan = read_json(files.plan_file, {})
    labels = read_json(files.model_dir / "labels.json", [])
    return (
        f"# Transfer Lab model: {plan.get('backbone', '?')}, case {plan.get('case', '?')}\n\n"
        f"Classes: {', '.join(labels)}.\n\n"
        "`model.pt2` is a `torch.export` program: float32 images `[N, 3, crop, crop]` in, logits out.\n"
        "`preprocess.json` says how to prepare an image, `labels.json` names the outputs.\n\n"
        "```python\n" + SNIPPET + "```\n\n" + PREPARATION
    )


def model_bundle(run_dir: Path) -> bytes:
    """A zip of the run's exported model and a README; raises FileNotFoundError without one."""
    model_dir = RunFiles(Path(run_dir)).model_dir
    files = sorted(p for p in model_dir.iterdir() if p.is_file()) if model_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{run_dir} has no exported model: did the run finish?")
    folder = bundle_folder(run_dir)  # unzipping makes one folder, not loose files beside others
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, f"{folder}/{path.name}")
        card = model_dir / MODEL_CARD_FILE
        archive.writestr(
            f"{folder}/README.md", card.read_text(encoding="utf-8") if card.is_file() else readme(run_dir)
        )
    return buffer.getvalue()


def bundle_folder(run_dir: Path) -> str:
    """The bundle's one top-level folder: ``transfer-lab-<run id>``."""
    return f"transfer-lab-{Path(run_dir).resolve().name}"
