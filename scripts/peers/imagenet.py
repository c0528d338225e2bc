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
Exports are kept in --dir (default /tmp/convscope_torchvision) and reused. With --occlusion,
also occlusion rows: Captum's Occlusion, batched numpy + ONNX Runtime (peers.occlusion, the
digits rows' reference) and convscope's, each 196 windows of 16x16 at stride 16.
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
    ap.add_argument("--occlusion", action="store_true",
                    help="also time occlusion (16x16 windows, stride 16, 196 windows, batches of 32): "
                         "Captum's Occlusion, and batched ONNX Runtime on a dynamic-batch export; "
                         "one call per round, as each takes seconds")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch
    import torchvision
    import numpy as np
    from captum.attr import GuidedGradCam, LayerGradCam, Occlusion, Saliency

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
        guided_grad_cam = GuidedGradCam(model, last_conv)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        rows = {}
        if args.occlusion:
            # The exported file has batch 1 fixed; batched ONNX Runtime needs one with a free
            # batch axis.
            dynamic = os.path.join(args.dir, f"{name}.dynamic.onnx")
            if not os.path.exists(dynamic):
                with torch.no_grad():
                    torch.onnx.export(model, (x,), dynamic, dynamo=False, input_names=["x"],
                                      dynamic_axes={"x": {0: "n"}})
            batched = ort.InferenceSession(dynamic, options, providers=["CPUExecutionProvider"])

            def ort_probs(images):
                logits = batched.run(None, {"x": images})[0]
                e = np.exp(logits - logits.max(1, keepdims=True))
                return e / e.sum(1, keepdims=True)

            occluder = Occlusion(lambda images: torch.softmax(model(images), 1))

            def captum_occlusion():
                with torch.no_grad():
                    occluder.attribute(x, sliding_window_shapes=(3, 16, 16), strides=(3, 16, 16),
                                       baselines=0.0, target=cls, perturbations_per_eval=32)

        def add(row, ms):
            rows.setdefault(row, []).append(ms)

        for _ in range(args.rounds):
            with torch.no_grad():
                add("PyTorch forward", peers.median_ms(5, lambda: model(x)))
            add("ONNX Runtime forward", peers.median_ms(5, lambda: session.run(None, feed)))
            add("Captum saliency", peers.median_ms(5,
                lambda: saliency.attribute(x.clone().requires_grad_(True), target=cls)))
            add("Captum grad-CAM", peers.median_ms(5, lambda: grad_cam.attribute(x, target=cls)))
            add("Captum guided grad-CAM", peers.median_ms(5,
                lambda: guided_grad_cam.attribute(x.clone().requires_grad_(True), target=cls)))
            if args.occlusion:
                add("Captum occlusion", peers.median_ms(1, captum_occlusion))
                add("ONNX Runtime occlusion", peers.median_ms(
                    1, lambda: peers.occlusion(ort_probs, x.numpy(), cls, 16, 16, fill=0.0, batch=32)))
            out = subprocess.run(
                [args.convscope, "bench", path, "--runs", "5", "--json", "--preprocess", "torch"],
                capture_output=True, text=True, check=True)
            got = {r["name"]: r["median_ms"] for r in json.loads(out.stdout)}
            if args.occlusion:
                add("convscope occlusion",
                    next(ms for row, ms in got.items() if row.startswith("occlusion")))
            add("convscope load", got["load"])
            add("convscope forward", got["forward, batch 1"])
            add("convscope saliency", got["saliency (vanilla)"])
            add("convscope grad-CAM", got["grad-CAM (vanilla)"])
            add("convscope guided grad-CAM", got["guided grad-CAM"])
        print(name)
        for row, values in rows.items():
            print(f"  {row:22} {min(values):8.1f} {statistics.median(values):8.1f} {max(values):8.1f}")


if __name__ == "__main__":
    main()
