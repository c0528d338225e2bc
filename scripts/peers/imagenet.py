#!/usr/bin/env python3
"""convscope against PyTorch + Captum and ONNX Runtime on ImageNet-size torchvision models
(issue #16's rows), side by side in one run: for each round, the peers' medians of five
calls, then `convscope bench` on the same exported file (its medians of five), so the two
see the same machine state. Prints, per model and row, min / median / max over rounds (ms).

Random-weight models (weights=None), one 224×224 input, 2 threads everywhere. convscope
runs saliency and grad-CAM on a random image of its own (the cost does not depend on the
pixels); grad-CAM's layer is the last conv on both sides.

Run from the repository root after `cargo build --release`, in the venv of
scripts/models_table.py plus Captum:
    /tmp/torchvenv/bin/pip install captum==0.9.0
    /tmp/torchvenv/bin/python scripts/peers/imagenet.py --models resnet50,mobilenet_v2 --rounds 3
Exports are kept in --dir (default /tmp/convscope_torchvision) and reused.
"""

import argparse
import json
import os
import statistics
import subprocess

import peers  # the shared timing helper (this folder is on the path when run)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet50,mobilenet_v2,efficientnet_b0,densenet121,vgg11_bn")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--convscope", default="target/release/convscope")
    ap.add_argument("--dir", default="/tmp/convscope_torchvision")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch
    import torchvision
    from captum.attr import LayerGradCam, Saliency

    torch.set_num_threads(2)
    os.makedirs(args.dir, exist_ok=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        path = os.path.join(args.dir, f"{name}.onnx")
        x = torch.rand(1, 3, 224, 224)
        if not os.path.exists(path):
            with torch.no_grad():
                torch.onnx.export(model, (x,), path, dynamo=False)
        cls = int(model(x).argmax())
        saliency = Saliency(model)
        last_conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        grad_cam = LayerGradCam(model, last_conv)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        rows = {}

        def add(row, ms):
            rows.setdefault(row, []).append(ms)

        for _ in range(args.rounds):
            with torch.no_grad():
                add("PyTorch forward", peers.median_ms(5, lambda: model(x)))
            add("ONNX Runtime forward", peers.median_ms(5, lambda: session.run(None, feed)))
            add("Captum saliency", peers.median_ms(5,
                lambda: saliency.attribute(x.clone().requires_grad_(True), target=cls)))
            add("Captum grad-CAM", peers.median_ms(5, lambda: grad_cam.attribute(x, target=cls)))
            out = subprocess.run(
                [args.convscope, "bench", path, "--runs", "5", "--json", "--preprocess", "torch"],
                capture_output=True, text=True, check=True)
            got = {r["name"]: r["median_ms"] for r in json.loads(out.stdout)}
            add("convscope load", got["load"])
            add("convscope forward", got["forward, batch 1"])
            add("convscope saliency", got["saliency (vanilla)"])
            add("convscope grad-CAM", got["grad-CAM (vanilla)"])
        print(name)
        for row, values in rows.items():
            print(f"  {row:22} {min(values):8.1f} {statistics.median(values):8.1f} {max(values):8.1f}")


if __name__ == "__main__":
    main()
