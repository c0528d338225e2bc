"""Random-weight torchvision and Keras models for scripts/loading/measure.sh.

    python export.py torch OUT_DIR   # vgg11_bn, alexnet, resnet50 (TorchScript exporter,
                                     # inline weights) and resnet50_dynamo (dynamo
                                     # exporter: external data, m.onnx + m.onnx.data)
    python export.py keras OUT_DIR   # VGG16 as .keras and .h5 (tensorflow + keras 3)
"""

import os
import sys


def torch_models(out):
    import torch
    import torchvision

    torch.manual_seed(0)
    x = (torch.randn(1, 3, 224, 224),)
    for name in ["vgg11_bn", "alexnet", "resnet50"]:
        m = getattr(torchvision.models, name)(weights=None).eval()
        torch.onnx.export(m, x, os.path.join(out, f"{name}.onnx"), dynamo=False)
    m = torchvision.models.resnet50(weights=None).eval()
    torch.onnx.export(m, x, os.path.join(out, "resnet50_dynamo.onnx"))


def keras_models(out):
    import keras

    m = keras.applications.VGG16(weights=None)
    m.save(os.path.join(out, "vgg16.keras"))
    m.save(os.path.join(out, "vgg16.h5"))


if __name__ == "__main__":
    kind, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    {"torch": torch_models, "keras": keras_models}[kind](out)
