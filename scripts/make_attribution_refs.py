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
float64. Run from the repository root (captum 0.9.0, torch 2.15.0):
    /tmp/torchvenv/bin/python scripts/make_attribution_refs.py
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import peers  # noqa: E402  (the sample model rebuilt in PyTorch, and the bundled digits)

OUT = peers.ROOT / "tests" / "fixtures" / "captum"
CLASS = 3


def main():
    from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, Saliency

    warnings.filterwarnings("ignore", module="captum")
    OUT.mkdir(parents=True, exist_ok=True)
    net = peers.torch_model(peers.load_weights()).double()
    x1, _ = peers.load_digits()
    x = torch.from_numpy(x1).double()

    def save(name, t):
        np.save(OUT / f"{name}.npy", t.detach().numpy()[0].astype(np.float32))

    np.save(OUT / "input.npy", x1)
    save("ixg", InputXGradient(net).attribute(x, target=CLASS))
    ig = IntegratedGradients(net)
    save("ig", ig.attribute(x, target=CLASS, n_steps=50, method="gausslegendre"))
    save("ig_trapezoid", ig.attribute(x, target=CLASS, n_steps=16, method="riemann_trapezoid"))

    sigma = 0.15 * float(x1.max() - x1.min())
    noise = np.random.default_rng(0).normal(0.0, sigma, (6, 1, 28, 28)).astype(np.float32)
    np.save(OUT / "noise.npy", noise)
    # Captum adds the noise in the input's own type; ours are float32 values added in f32.
    noisy = torch.from_numpy((x1 + noise).astype(np.float32)).double()
    grads = torch.cat([Saliency(net).attribute(n[None], target=CLASS, abs=True) for n in noisy])
    save("smoothgrad", grads.mean(0, keepdim=True))
    save("smoothgrad_sq", (grads**2).mean(0, keepdim=True))
    save("vargrad", (grads**2).mean(0, keepdim=True) - grads.mean(0, keepdim=True) ** 2)
    guided = torch.cat([GuidedBackprop(net).attribute(n[None], target=CLASS).abs() for n in noisy])
    save("guided_smoothgrad", guided.mean(0, keepdim=True))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
