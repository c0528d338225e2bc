#!/usr/bin/env python3
"""convscope's SmoothGrad and Integrated Gradients against Captum's, side by side in one run
(#19): for each round, Captum's median of --runs calls of each, then `convscope bench
--attributions` (its median of --runs, in-process) on the same model and input, so the two
see the same machine state. Prints, per model and method, min / median / max over rounds
(ms) and the ratio of the medians.

The work, as convscope's defaults and Captum's names for them, 2 threads, the class scores
below any softmax, the predicted class:
- SmoothGrad: `NoiseTunnel(Saliency)` (abs=True), nt_type="smoothgrad", nt_samples=50,
  nt_samples_batch_size=16, stdevs 0.15 of the input's range;
- Integrated Gradients: `IntegratedGradients`, n_steps=50, method="gausslegendre", zero
  baseline, internal_batch_size=16;
on the sample model (peers.py rebuilds it in PyTorch) with bundled digit 8000, and on
scorecam.py's ResNet-like network on a random 224×224 RGB image (exported to ONNX and saved
as PNG for convscope).
Before timing, each side's attribution is checked, both in float64 (convscope's
`--precision f64`; in float32 each side's Integrated Gradients on the 224×224 network is
7e-4 of the maximum from the float64 value): convscope's `--raw` values equal Captum's to
1e-4 of their largest magnitude (SmoothGrad with noise 0, since the two draw different
noise: its averaging of the copies' magnitudes; tests/all/attribution.rs checks it with the
same noise). The timed calls are float32 on both sides.

Run from the repository root after `cargo build --release`, in the venv of
scripts/make_attribution_refs.py:
    /tmp/torchvenv/bin/python scripts/peers/attributions.py --rounds 3
"""

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
import scorecam  # noqa: E402

SAMPLES = STEPS = 50
BATCH = 16
LEVEL = 0.15
ROWS = {"SmoothGrad": f"SmoothGrad, {SAMPLES} samples",
        "Integrated Gradients": f"Integrated Gradients, {STEPS} steps"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--convscope", default="target/release/convscope")
    args = ap.parse_args()

    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    warnings.filterwarnings("ignore", module="captum")
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    digit, _ = peers.load_digits()
    sample = peers.torch_model(peers.load_weights())
    resnet, image = scorecam.resnet_ish_case(tmp)
    cases = [
        ("sample model, 28×28", sample, torch.from_numpy(digit), ["sample"]),
        ("resnet-ish 224×224", resnet, image,
         [str(tmp / "resnet_ish.onnx"), str(tmp / "image.png")]),
    ]
    for name, net, x, convscope_args in cases:
        with torch.no_grad():
            target = int(net(x).argmax())
        sigma = LEVEL * float(x.max() - x.min())
        smooth, ig = NoiseTunnel(Saliency(net)), IntegratedGradients(net)

        def smoothgrad(smooth=smooth, x=x, stdevs=sigma):
            return smooth.attribute(x, nt_type="smoothgrad", nt_samples=SAMPLES,
                                    nt_samples_batch_size=BATCH, stdevs=stdevs, target=target)

        def integrated(ig=ig, x=x):
            return ig.attribute(x, target=target, n_steps=STEPS, method="gausslegendre",
                                internal_batch_size=BATCH)

        net64, x64 = copy.deepcopy(net).double(), x.double()
        worst = 0.0
        for command, options, want in [
            ("smoothgrad", ["--noise", "0"], smoothgrad(NoiseTunnel(Saliency(net64)), x64, 0.0)),
            ("integrated-gradients", [], integrated(IntegratedGradients(net64), x64)),
        ]:
            raw = tmp / "raw.npy"
            subprocess.run([args.convscope, command, *convscope_args, *options, "--class",
                            str(target), "--precision", "f64", "--raw", str(raw),
                            "-o", str(tmp / "x.png")], check=True, capture_output=True)
            want = want.detach().numpy()[0]
            error = float(np.abs(np.load(raw) - want).max() / np.abs(want).max())
            if error > 1e-4:
                sys.exit(f"{name}: convscope's {command} differs from Captum's by {error} of max")
            worst = max(worst, error)
        rows = {(side, method): [] for method in ROWS for side in ["Captum", "convscope"]}
        for _ in range(args.rounds):
            rows["Captum", "SmoothGrad"].append(peers.median_ms(args.runs, smoothgrad))
            rows["Captum", "Integrated Gradients"].append(peers.median_ms(args.runs, integrated))
            out = subprocess.run(
                [args.convscope, "bench", *convscope_args, "--runs", str(args.runs), "--json",
                 "--attributions"], capture_output=True, text=True, check=True)
            got = {r["name"]: r["median_ms"] for r in json.loads(out.stdout)}
            for method, row in ROWS.items():
                rows["convscope", method].append(got[row])
        print(f"{name}, class {target} (float64 attributions agree to {worst:.1e} of max)")
        for method in ROWS:
            for side in ["Captum", "convscope"]:
                values = rows[side, method]
                print(f"  {method:20} {side:9} {min(values):8.1f} "
                      f"{statistics.median(values):8.1f} {max(values):8.1f}")
            ratio = (statistics.median(rows["convscope", method])
                     / statistics.median(rows["Captum", method]))
            print(f"  {method:20} convscope / Captum: {ratio:.2f}")


if __name__ == "__main__":
    main()
