#!/usr/bin/env python3
"""Writes pytorch-grad-cam's class activation maps under tests/fixtures/gradcam/, which
tests/all/cam.rs compares convscope's `gradcam --variant` with (#19), for every variant:
gradcam, gradcam++, xgradcam, hirescam, layercam, scorecam, ablationcam, eigencam.

Two models, in float64:
- the sample model (rebuilt in PyTorch by scripts/peers/peers.py) on bundled digit 8000,
  class 3, at conv2d_2's output (after its ReLU): `sample_<variant>.npy`;
- a small residual network (stem conv-BN-ReLU, a block of two conv-BN with a skip
  connection and a ReLU after the sum, a strided conv-BN-ReLU, global average pool, a
  5-class linear layer; random weights and batch-norm statistics, seed 0), exported to
  `residual.onnx` (batch norms folded by the exporter), on the random input
  `residual_input.npy` ([1, 3, 16, 16]), class 4, at three layers: the last ReLU
  (`residual_last_<variant>.npy`, 8×8), the residual sum before its ReLU
  (`residual_sum_<variant>.npy`, 16×16, negative values: Ablation-CAM's other ablation
  value), and, for class 0, the block's first ReLU (`residual_inner_<variant>.npy`, 16×16: above
  it the sum reads the skip branch, which does not depend on the layer; class 0 is one
  where Ablation-CAM finds positive evidence there, grad-CAM and XGrad-CAM none).

Each map is the library's own `get_cam_image` (its cam weights and weighted sum) at the
layer's resolution, after the ReLU BaseCAM applies and before `scale_cam_image` (min-max
scaling and cv2's resize to the input, which convscope replaces by an upsampling with
aligned corners): [h, w] float32. Eigen-CAM's sign is arbitrary; its map here is the
library's `get_2d_projection_with_sign_correction` (the value of largest magnitude
positive), convscope's convention. Ablation-CAM runs at batch size 1: at larger batches
pytorch-grad-cam lowers the ablation value of a layer with nonzero minimum by another 1e7
for each row of the batch. Score-CAM reads the scores below the softmax, as convscope does.

Run from the repository root (grad-cam 1.5.7, torch 2.15.0, onnx):
    /tmp/torchvenv/bin/pip install grad-cam==1.5.7
    /tmp/torchvenv/bin/python scripts/make_cam_refs.py
"""

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import peers  # noqa: E402  (the sample model rebuilt in PyTorch, and the bundled digits)

OUT = peers.ROOT / "tests" / "fixtures" / "gradcam"
SAMPLE_CLASS, RESIDUAL_CLASS = 3, 4  # the residual network's class: its prediction


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.relu0 = nn.ReLU()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.sum = nn.Identity()  # the residual sum as a module, for a hook to read
        self.relu2 = nn.ReLU()
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn3 = nn.BatchNorm2d(16)
        self.relu3 = nn.ReLU()
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.relu0(self.bn0(self.stem(x)))
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        x = self.relu2(self.sum(x + y))
        x = self.relu3(self.bn3(self.down(x)))
        return self.fc(x.mean((2, 3)))


def residual():
    torch.manual_seed(0)
    net = Residual()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def variants():
    from pytorch_grad_cam import (AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM,
                                  LayerCAM, ScoreCAM, XGradCAM)

    return {
        "gradcam": GradCAM,
        "gradcampp": GradCAMPlusPlus,
        "xgradcam": XGradCAM,
        "hirescam": HiResCAM,
        "layercam": LayerCAM,
        "scorecam": ScoreCAM,
        "ablationcam": lambda model, target_layers: AblationCAM(model, target_layers, batch_size=1),
        "eigencam": EigenCAM,
    }


def layer_map(make, net, layer, x, target):
    """The variant's map at `layer`'s resolution, after BaseCAM's ReLU, unscaled."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    cam = make(model=net, target_layers=[layer])
    x = x.clone().requires_grad_(True)
    targets = [ClassifierOutputTarget(target)]
    outputs = cam.activations_and_grads(x)
    grads = None
    if cam.uses_gradients:
        net.zero_grad()
        sum(t(o) for t, o in zip(targets, outputs)).backward(retain_graph=True)
        grads = cam.activations_and_grads.gradients[0].numpy()
    acts = cam.activations_and_grads.activations[0].numpy()
    if type(cam).__name__ == "EigenCAM":
        image = get_2d_projection_with_sign_correction(acts)
    else:
        image = cam.get_cam_image(x, layer, targets, acts, grads, False)
    cam.activations_and_grads.release()
    return np.maximum(image, 0)[0].astype(np.float32)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    sample = peers.torch_model(peers.load_weights()).double()
    x1, _ = peers.load_digits()
    digit = torch.from_numpy(x1).double()
    res = residual()
    torch.manual_seed(1)
    rx = torch.rand(1, 3, 16, 16)
    np.save(OUT / "residual_input.npy", rx.numpy())
    torch.onnx.export(res, (rx,), str(OUT / "residual.onnx"), dynamo=False,
                      input_names=["input"], output_names=["scores"])
    res = res.double()
    scores = res(rx.double()).detach().numpy()[0]
    if scores.argmax() != RESIDUAL_CLASS:
        sys.exit(f"the residual network predicts {scores.argmax()}, not {RESIDUAL_CLASS}: {scores}")
    cases = [
        ("sample", sample, sample.relu_2, digit, SAMPLE_CLASS),
        ("residual_last", res, res.relu3, rx.double(), RESIDUAL_CLASS),
        ("residual_sum", res, res.sum, rx.double(), RESIDUAL_CLASS),
        ("residual_inner", res, res.relu1, rx.double(), 0),
    ]
    for name, net, layer, x, target in cases:
        for p in net.parameters():
            p.requires_grad_(True)
        for variant, make in variants().items():
            m = layer_map(make, net, layer, x, target)
            np.save(OUT / f"{name}_{variant}.npy", m)
            print(f"{name:14} {variant:12} {m.shape} max {m.max():.4g}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
