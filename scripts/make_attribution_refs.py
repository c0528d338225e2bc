#!/usr/bin/env python3
"""Writes Captum's attributions of the sample model under tests/fixtures/captum/, which
tests/all/attribution.rs compares convscope's with (#19):

- `input.npy`: bundled digit 8000 as [1, 1, 28, 28] float32 in [0, 1] (class 3);
- `ixg.npy`: `InputXGradient`;
- `ig.npy`: `IntegratedGradients`, 50 steps, Gauss-Legendre, zero baseline;
- `ig_trapezoid.npy`: the same with 16 steps of `riemann_trapezoid`;
- `noise.npy`: 6 copies of Gaussian noise, sigma 0.15 of the input's range (numpy, seed 0);
- `smoothgrad.npy`: `NoiseTunnel(Saliency)`'s smoothgrad with that noise: the mean of
  `Saliency(abs=True)` over input + noise (NoiseTunnel draws its own noise, so its formula
  is applied to ours); `smoothgrad_sq.npy` and `vargrad.npy` likewise;
- `guided_smoothgrad.npy`: the mean of `GuidedBackprop` magnitudes over the same copies.

Every file holds the class-3 attribution per input value, [1, 28, 28] float32, computed in
float64.

The same attributions, `residual_<name>.npy` ([3, 16, 16]), of the small residual network
with batch norm of scripts/make_cam_refs.py (rebuilt from its seed, checked against the
committed `tests/fixtures/gradcam/residual.onnx` with onnxruntime) on that file's input
`tests/fixtures/gradcam/residual_input.npy`, class 4 (its prediction), with the noise
`residual_noise.npy` (6 copies, seed 0, sigma 0.15 of the input's range).

Run from the repository root (captum 0.9.0, torch 2.15.0, onnxruntime):
    /tmp/torchvenv/bin/python scripts/make_attribution_refs.py
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import peers  # noqa: E402  (the sample model rebuilt in PyTorch, and the bundled digits)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_cam_refs  # noqa: E402  (the residual network, from its seed)

OUT = peers.ROOT / "tests" / "fixtures" / "captum"
CLASS, RESIDUAL_CLASS = 3, 4


def attributions(net, x1, target, prefix):
    """Writes every attribution of `net`'s class `target` at the float32 input `x1`
    ([1, c, h, w]), and the noise SmoothGrad adds, as `<prefix><name>.npy`."""
    from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, Saliency

    x = torch.from_numpy(x1).double()

    def save(name, t):
        np.save(OUT / f"{prefix}{name}.npy", t.detach().numpy()[0].astype(np.float32))

    save("ixg", InputXGradient(net).attribute(x, target=target))
    ig = IntegratedGradients(net)
    save("ig", ig.attribute(x, target=target, n_steps=50, method="gausslegendre"))
    save("ig_trapezoid", ig.attribute(x, target=target, n_steps=16, method="riemann_trapezoid"))

    sigma = 0.15 * float(x1.max() - x1.min())
    noise = np.random.default_rng(0).normal(0.0, sigma, (6, *x1.shape[1:])).astype(np.float32)
    np.save(OUT / f"{prefix}noise.npy", noise)
    # Captum adds the noise in the input's own type; ours are float32 values added in f32.
    noisy = torch.from_numpy((x1 + noise).astype(np.float32)).double()
    grads = torch.cat([Saliency(net).attribute(n[None], target=target, abs=True) for n in noisy])
    save("smoothgrad", grads.mean(0, keepdim=True))
    save("smoothgrad_sq", (grads**2).mean(0, keepdim=True))
    save("vargrad", (grads**2).mean(0, keepdim=True) - grads.mean(0, keepdim=True) ** 2)
    guided = torch.cat([GuidedBackprop(net).attribute(n[None], target=target).abs() for n in noisy])
    save("guided_smoothgrad", guided.mean(0, keepdim=True))


def residual_network(x1):
    """make_cam_refs.py's residual network in float64, checked to be the committed ONNX."""
    import onnxruntime

    net = make_cam_refs.residual().double()
    onnx = str(make_cam_refs.OUT / "residual.onnx")
    want = onnxruntime.InferenceSession(onnx).run(None, {"input": x1})[0]
    got = net(torch.from_numpy(x1).double()).detach().numpy()
    # The ONNX file holds batch norms folded into f32 weights: f32 rounding apart, equal.
    gap = np.abs(got - want).max()
    if gap > 1e-5 * np.abs(want).max():
        sys.exit(f"the rebuilt residual network is not residual.onnx: off by {gap}")
    print(f"residual network: scores {got[0].round(4)}, off residual.onnx by {gap:.2g}")
    return net


def main():
    warnings.filterwarnings("ignore", module="captum")
    OUT.mkdir(parents=True, exist_ok=True)
    x1, _ = peers.load_digits()
    np.save(OUT / "input.npy", x1)
    attributions(peers.torch_model(peers.load_weights()).double(), x1, CLASS, "")
    rx = np.load(make_cam_refs.OUT / "residual_input.npy")
    attributions(residual_network(rx), rx, RESIDUAL_CLASS, "residual_")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
