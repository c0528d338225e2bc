#!/usr/bin/env python3
"""convscope's Score-CAM against pytorch-grad-cam's ScoreCAM, side by side in one run (#19):
for each round, pytorch-grad-cam's median of --runs calls, then `convscope bench --cam
scorecam` (its median of --runs) on the same model and input, so the two see the same
machine state. Prints, per model, min / median / max over rounds (ms) and the ratio of the
medians.

Both at batch 16 (pytorch-grad-cam's default, convscope's), 2 threads, the class scores
below any softmax, the CAM layer the last ReLU:
- the sample model (peers.py rebuilds it in PyTorch) on bundled digit 8000, class 3, at
  conv2d_2 (64 channels of 24×24);
- a small ResNet-like network on 224×224 RGB (the one benches/methods.rs builds, with batch
  norms; seed 0; exported to ONNX for convscope): 32 channels of 28×28 at its last ReLU, on
  a random image saved as PNG, which both sides read (pixels / 255).
Before timing, each side's map is checked: convscope's `--raw` map equals pytorch-grad-cam's
map at the layer upsampled with aligned corners and min-max scaled, to 1e-4.

Run from the repository root after `cargo build --release`, in the venv of
scripts/make_cam_refs.py:
    /tmp/torchvenv/bin/python scripts/peers/scorecam.py --rounds 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["TQDM_DISABLE"] = "1"  # pytorch-grad-cam's progress bars, per batch

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402


class ResnetIsh(nn.Module):
    def __init__(self):
        super().__init__()

        def cbr(i, o, s, relu=True):
            layers = [nn.Conv2d(i, o, 3, stride=s, padding=1), nn.BatchNorm2d(o)]
            return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)

        self.stem, self.pool = cbr(3, 16, 2), nn.MaxPool2d(2)
        self.a1, self.a2, self.a_out = cbr(16, 16, 1), cbr(16, 16, 1, False), nn.ReLU()
        self.down = cbr(16, 32, 2)
        self.b1, self.b2, self.b_out = cbr(32, 32, 1), cbr(32, 32, 1, False), nn.ReLU()
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(self.stem(x))
        x = self.a_out(x + self.a2(self.a1(x)))
        x = self.down(x)
        x = self.b_out(x + self.b2(self.b1(x)))
        return self.fc(x.mean((2, 3)))


def resnet_ish_case(tmp):
    """The seed-0 ResnetIsh with random batch-norm statistics, exported to
    `tmp/resnet_ish.onnx`, and a random 224×224 image saved as `tmp/image.png`, as a tensor
    of pixels / 255 (what convscope reads from the PNG)."""
    from PIL import Image

    torch.manual_seed(0)
    resnet = ResnetIsh().eval()
    with torch.no_grad():
        for m in resnet.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    pixels = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp / "image.png")
    image = torch.from_numpy(pixels.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    torch.onnx.export(resnet, (image,), str(tmp / "resnet_ish.onnx"), dynamo=False)
    return resnet, image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--convscope", default="target/release/convscope")
    args = ap.parse_args()

    import torch.nn.functional as F
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    digit, _ = peers.load_digits()
    sample = peers.torch_model(peers.load_weights())
    resnet, image = resnet_ish_case(tmp)
    cases = [
        ("sample model, conv2d_2 (64 × 24×24)", sample, sample.relu_2, torch.from_numpy(digit),
         ["sample"]),
        ("resnet-ish 224×224, last ReLU (32 × 28×28)", resnet, resnet.b_out, image,
         [str(tmp / "resnet_ish.onnx"), str(tmp / "image.png")]),
    ]
    for name, net, layer, x, convscope_args in cases:
        with torch.no_grad():
            target = int(net(x).argmax())
        cam = ScoreCAM(model=net, target_layers=[layer])
        cam.batch_size = 16
        targets = [ClassifierOutputTarget(target)]
        # The check: the map at the layer, upsampled as convscope upsamples.
        acts = []
        hook = layer.register_forward_hook(lambda m, i, o: acts.append(o.detach().numpy()))
        with torch.no_grad():
            net(x)
        hook.remove()
        small = np.maximum(cam.get_cam_image(x, layer, targets, acts[0], None, False), 0)
        up = F.interpolate(torch.from_numpy(small)[None], size=x.shape[2:], mode="bilinear",
                           align_corners=True)[0, 0].numpy()
        want = peers.minmax(up)
        raw = tmp / "raw.npy"
        subprocess.run([args.convscope, "gradcam", *convscope_args, "--variant", "scorecam",
                        "--class", str(target), "--raw", str(raw), "-o", str(tmp / "x.png")],
                       check=True, capture_output=True)
        got = np.load(raw)
        worst = float(np.abs(got - want).max())
        if worst > 1e-4:
            sys.exit(f"{name}: convscope's map differs from pytorch-grad-cam's by {worst}")
        rows = {"pytorch-grad-cam": [], "convscope": []}
        for _ in range(args.rounds):
            rows["pytorch-grad-cam"].append(peers.median_ms(args.runs, lambda: cam(x, targets)))
            out = subprocess.run(
                [args.convscope, "bench", *convscope_args, "--runs", str(args.runs), "--json",
                 "--cam", "scorecam"], capture_output=True, text=True, check=True)
            got = {r["name"]: r["median_ms"] for r in json.loads(out.stdout)}
            rows["convscope"].append(got["Score-CAM"])
        print(f"{name} (maps agree to {worst:.1e})")
        for row, values in rows.items():
            print(f"  {row:18} {min(values):8.1f} {statistics.median(values):8.1f} {max(values):8.1f}")
        ratio = statistics.median(rows["convscope"]) / statistics.median(rows["pytorch-grad-cam"])
        print(f"  convscope / pytorch-grad-cam: {ratio:.2f}")


if __name__ == "__main__":
    main()
