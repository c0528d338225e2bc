#!/usr/bin/env python3
"""Writes src/formats/imagenet_classes.txt: ImageNet-1k's 1,000 class names in output
order, one per line, as torchvision names them (the names convscope gives a model of
1,000 outputs whose file names none). Run in a venv with torchvision:
    /tmp/torchvenv/bin/python scripts/make_imagenet_classes.py
"""

import pathlib

from torchvision.models._meta import _IMAGENET_CATEGORIES

out = pathlib.Path(__file__).resolve().parent.parent / "src/formats/imagenet_classes.txt"
assert len(_IMAGENET_CATEGORIES) == 1000 and len(set(_IMAGENET_CATEGORIES)) == 1000
out.write_text("".join(name + "\n" for name in _IMAGENET_CATEGORIES))
print(f"wrote {out}")
