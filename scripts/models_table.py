#!/usr/bin/env python3
"""Regenerates the README's table of real models (issue #15): which torchvision and
keras.applications models convscope loads, by which export route, and how closely its
probabilities and input gradients match the framework's.

For every model the weights are redrawn (seeded) so the signal survives: conv and dense
kernels He-normal over fan-in, biases N(0, 0.05); BatchNorm gamma 1 + N(0, 0.1), beta
N(0, 0.1), and its running statistics measured on a batch of four random images (one
training-mode pass, so every layer sees normalised activations, as a trained model does);
torchvision's conv-BatchNorm pairs then folded in float64 (as the exporters would fold
them in float32: see fold_batch_norms);
LayerNorm likewise; weights left near zero by their initialiser (ConvNeXt's layer scale)
N(0.2, 0.05); finally the classifier is rescaled so the logits on the test image have a
standard deviation of 2 (torchvision's default init leaves MobileNet's logits near 1e-9).
The input is a fixed random RGB image (seed 0) at the model's size, written as an 8-bit
PNG, so convscope and the framework see the same pixels; 1000 ImageNet classes always.

Per model and route the table says either
    ✓ P / G / G64   loaded; P = max |probability difference| over the 1000 classes,
               G = max |saliency map difference|, G64 the same with both sides computing
               in float64 (convscope `--precision f64`; the framework's model cast to
               float64, the same float32 weights);
    ✗ text     the one-line error convscope printed (full text in --log);
    export ✗   the framework's exporter failed (not convscope's fault).
convscope's saliency (`saliency --raw`) is max over channels of |d score / d input|,
min-max scaled to [0, 1] with eps 1e-7, where the input is the tensor after the input
preparation (range, mean, std; for Keras files after the Rescaling/Normalization layers
it folds into that preparation) and the score is the top class's score below a final
softmax. The framework side computes exactly that (torch autograd / tf.GradientTape on
the logits), so G is the gradient difference relative to the gradient's maximum.
The "floor" column is how far the framework's own saliency moves under rounding: the
largest difference between its float32 map and (a) the same model in float64, (b) its
float32 maps for the input moved by 1e-6 of its largest value (two seeded draws). Units
on a kink (a ReLU at 0, near-equal values in a max pool) flip under such rounding and the
gradient jumps over their receptive field; a G of the floor's order is rounding, not a bug.
A "†" marks a route where the exported file itself (run by ONNX Runtime) differs from the
framework by more than 1e-3 in probability: then the exporter, not convscope, is off.

Routes: torch: `dynamo` (torch.onnx.export(model, (x,), path), the default dynamo
exporter, weights in path + ".data"), `legacy` (dynamo=False), `legacy13` (dynamo=False,
opset_version=13). keras: `keras` (model.save("m.keras")), `h5` (model.save("m.h5"),
Keras 3's legacy h5), `tf2onnx` (tf2onnx.convert.from_keras, default opset).

Each model runs in its own process (bounded memory), one at a time; exported files live
in a temporary directory that is removed afterwards.

Virtual environments (Python 3.11):
    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch torchvision onnx onnxruntime onnxscript numpy
    python3 -m venv /tmp/kerasvenv
    /tmp/kerasvenv/bin/pip install tensorflow-cpu==2.21.0 keras tf-keras h5py tf2onnx onnx onnxruntime numpy
Versions used: torch 2.15.0, torchvision 0.29.2, onnx 1.23.2, onnxruntime 1.32.0,
onnxscript 0.7.2, numpy 2.4.6; tensorflow-cpu 2.21.0, keras 3.15.1, tf-keras 2.21.0,
h5py 3.14.0, tf2onnx 1.17.0.

Run from the repository root (after `cargo build --release`):
    python3 scripts/models_table.py --out /tmp/models_table.md --log /tmp/models_table.log
which runs both families, each under its own venv (--torch-python, --keras-python;
defaults /tmp/torchvenv/bin/python and /tmp/kerasvenv/bin/python). Subsets:
    --family torch|keras|all   --only resnet18,MobileNetV2   --routes dynamo,legacy,keras
    --convscope PATH (default target/release/convscope)   --keep DIR (keep the exports)
All models and routes take about an hour on two cores.
"""

import argparse
import copy
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name -> (image side, preparation)
TORCH_MODELS = {
    "resnet18": 128,
    "resnet50": 128,
    "mobilenet_v2": 128,
    "mobilenet_v3_small": 128,
    "efficientnet_b0": 128,
    "densenet121": 128,
    "squeezenet1_1": 128,
    "shufflenet_v2_x1_0": 128,
    "googlenet": 128,
    # Their adaptive pools are identities only at 224 (6×6 and 7×7 feature maps).
    "vgg11_bn": 224,
    "regnet_y_400mf": 128,
    "convnext_tiny": 128,
    "mnasnet0_5": 128,
    "alexnet": 224,
}
TORCH_ROUTES = ["dynamo", "legacy", "legacy13"]

# keras.applications name -> (side, preparation outside the model: the --preprocess mode,
# or "raw" for a model that rescales 0..255 pixels itself).
KERAS_MODELS = {
    "MobileNetV2": (128, "tf"),
    "MobileNetV3Small": (128, "raw"),
    "ResNet50": (128, "caffe"),
    "EfficientNetB0": (128, "raw"),
    "DenseNet121": (128, "torch"),
    "Xception": (128, "tf"),
    "InceptionV3": (128, "tf"),
    "NASNetMobile": (128, "tf"),
    "VGG16": (128, "caffe"),
    "ConvNeXtTiny": (128, "raw"),
    # Added in session 32: the other architectures keras.applications offers.
    "ResNet50V2": (128, "tf"),
    "MobileNet": (128, "tf"),
    "MobileNetV3Large": (128, "raw"),
    "InceptionResNetV2": (128, "tf"),
    "EfficientNetV2B0": (128, "raw"),
    "NASNetLarge": (128, "tf"),
}
KERAS_ROUTES = ["keras", "h5", "tf2onnx"]

PREP = {  # mode -> (range, mean, std, bgr), as convscope's --preprocess defines them
    "torch": ((0.0, 1.0), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False),
    "tf": ((-1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False),
    "caffe": ((0.0, 255.0), (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), True),
    "raw": ((0.0, 255.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False),
}
SEED = 0
CONVSCOPE_TIMEOUT = 900


# ----------------------------------------------------------------------------- shared


def write_png(path, rgb):
    """An 8-bit RGB PNG of an HxWx3 uint8 array (no PIL needed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))


def test_image(side, seed=SEED):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def prepare(img, mode):
    """HxWx3 uint8 -> HxWx3 float32 model input, as convscope prepares it."""
    import numpy as np

    (lo, hi), mean, std, bgr = PREP[mode]
    p = img.astype(np.float32) / np.float32(255.0)
    if bgr:
        p = p[..., ::-1]
    x = np.float32(lo) + p * np.float32(hi - lo)
    return ((x - np.array(mean, np.float32)) / np.array(std, np.float32)).astype(np.float32)


def perturbed(x):
    """The input moved by 1e-6 of its largest magnitude (two seeded draws): float32
    rounding of that order flips units that sit on a kink (a ReLU at 0, two near-equal
    values in a max pool), and the gradient jumps with them."""
    import numpy as np

    scale = 1e-6 * float(np.abs(x).max())
    for s in (1, 2):
        noise = np.random.default_rng(s).standard_normal(x.shape)
        yield (x + scale * noise).astype(np.float32)


def saliency_map(grad_hwc):
    """convscope's saliency: max over channels of |g|, min-max scaled with eps 1e-7."""
    import numpy as np

    m = np.abs(grad_hwc.astype(np.float64)).max(axis=-1)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo + 1e-7)


def one_line(stderr):
    lines = [l.strip() for l in stderr.strip().splitlines() if l.strip()]
    errs = [l for l in lines if "error" in l.lower()]
    line = (errs or lines or ["(no message)"])[0]
    for prefix in ("convscope: error: ", "Error: "):
        if line.startswith(prefix):
            line = line[len(prefix):]
    return line


def run_convscope(exe, args, log):
    cmd = [exe] + args
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVSCOPE_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.append({"cmd": cmd, "error": f"timed out after {CONVSCOPE_TIMEOUT} s"})
        return None, f"timed out after {CONVSCOPE_TIMEOUT} s"
    secs = time.time() - t
    if p.returncode != 0:
        log.append({"cmd": cmd, "rc": p.returncode, "stderr": p.stderr, "secs": secs})
        return None, one_line(p.stderr)
    return p, None


def check_convscope(exe, model_path, image, flags, ref_probs, ref_maps, cls, work, log):
    """Runs predict and saliency (in float32 and, where the framework's float64 map is in
    `ref_maps`, with `--precision f64`); returns the result dict of one route."""
    import numpy as np

    out = {}
    p, err = run_convscope(exe, ["predict", model_path, image, "--json", "-k", "1000"] + flags, log)
    if err:
        out["error"] = err.replace(model_path + ": ", "").replace(model_path, os.path.basename(model_path))
        return out
    top = json.loads(p.stdout)[0]["top"]
    probs = np.zeros(len(ref_probs))
    for t in top:
        probs[t["index"]] = t["probability"]
    out["prob_diff"] = float(np.abs(probs - ref_probs).max())
    out["top1"] = int(top[0]["index"])
    for precision, key in (("f32", "grad_diff"), ("f64", "grad_diff64")):
        ref_map = ref_maps.get(precision)
        if ref_map is None:
            continue
        npy = os.path.join(work, f"saliency_{precision}.npy")
        args = ["saliency", model_path, image, "--class", str(cls), "--raw", npy]
        _, err = run_convscope(exe, args + ["--precision", precision] + flags, log)
        if err:
            out["saliency_error"] = err.replace(model_path + ": ", "").replace(model_path, os.path.basename(model_path))
            return out
        got = np.load(npy).astype(np.float64).reshape(ref_map.shape)
        out[key] = float(np.abs(got - ref_map).max())
    return out


def ort_probs(path, x_feed, softmax):
    """ONNX Runtime's probabilities for the exported file (None if it cannot run it)."""
    import numpy as np

    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        y = s.run(None, {s.get_inputs()[0].name: x_feed})[0].astype(np.float64).reshape(-1)
        if softmax:
            y = np.exp(y - y.max())
            y /= y.sum()
        return y
    except Exception as e:  # noqa: BLE001
        msg = " ".join(str(e).split()).replace(path, os.path.basename(path))
        return msg.split(" failed:", 1)[-1][:400]


def ort_note(result, path, x_feed, ref_probs, softmax):
    import numpy as np

    y = ort_probs(path, x_feed, softmax)
    if isinstance(y, str):
        result["ort"] = "onnxruntime: " + y
    else:
        d = float(np.abs(y - ref_probs).max())
        result["ort_diff"] = d


def export_error(e):
    msg = f"{type(e).__name__}: {e}".strip().splitlines()
    return (msg[0] if msg else type(e).__name__)[:300]


# ----------------------------------------------------------------------------- torch


def torch_model(name):
    import numpy as np
    import torch
    import torchvision

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    kwargs = {"weights": None}
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=False)
    model = getattr(torchvision.models, name)(**kwargs)
    side = TORCH_MODELS[name]
    g = torch.Generator().manual_seed(SEED)
    nn = torch.nn
    done = set()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                done.add(id(m.weight))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
                    done.add(id(m.bias))
            elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                if m.weight is not None:
                    m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                    done.update((id(m.weight), id(m.bias)))
                if isinstance(m, nn.BatchNorm2d):
                    m.momentum = None  # cumulative average: one pass sets the statistics
                    m.reset_running_stats()
        for p in model.parameters():
            if id(p) not in done and p.abs().max() < 1e-5:  # ConvNeXt's layer scale
                p.copy_(0.2 + 0.05 * torch.randn(p.shape, generator=g))
        # Running statistics from a batch of four random images, the test image first.
        imgs = [test_image(side, SEED + i) for i in range(4)]
        batch = torch.from_numpy(np.stack([prepare(im, "torch") for im in imgs])).permute(0, 3, 1, 2)
        model.train()
        model(batch.contiguous())
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
        # Logits with a standard deviation of 2 on the test image.
        last = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
        logits = model(batch[:1].contiguous())
        s = 2.0 / max(float(logits.std()), 1e-12)
        last.weight.mul_(s)
        if last.bias is not None:
            last.bias.mul_(s)
    return fold_batch_norms(model), side


def fold_batch_norms(model):
    """The model with each BatchNorm that follows a conv folded into it, in float64 and
    then rounded to float32 once. Both exporters fold those pairs in float32 otherwise, so
    the file would hold other weights than the module; with the folding done here, the
    file, the module and the module in float64 share their float32 weights, and convscope
    and the framework are compared on one function. Models torch.fx cannot trace stay."""
    from torch.fx.experimental.optimization import fuse

    try:
        folded = fuse(copy.deepcopy(model).double(), inplace=True).float()
    except Exception:  # noqa: BLE001
        return model
    return folded.eval()


def torch_worker(name, routes, exe, work):
    import numpy as np
    import torch

    torch.set_num_threads(2)
    model, side = torch_model(name)
    img = test_image(side)
    image = os.path.join(work, "input.png")
    write_png(image, img)
    x_np = np.ascontiguousarray(prepare(img, "torch").transpose(2, 0, 1)[None])
    x = torch.from_numpy(x_np).requires_grad_(True)
    logits = model(x)
    ref_probs = torch.softmax(logits.double(), 1)[0].detach().numpy()
    cls = int(ref_probs.argmax())
    (grad,) = torch.autograd.grad(logits[0, cls], x)
    ref_map = saliency_map(grad[0].permute(1, 2, 0).numpy())
    # The same in float64: how much float32 rounding alone moves the map (ReLU-like units
    # whose input sits near a kink flip under rounding and move the gradient).
    x64 = torch.from_numpy(x_np).double().requires_grad_(True)
    model64 = copy.deepcopy(model).double()
    (grad64,) = torch.autograd.grad(model64(x64)[0, cls], x64)
    del model64
    ref_map64 = saliency_map(grad64[0].permute(1, 2, 0).numpy())
    floor = float(np.abs(ref_map64 - ref_map).max())
    for xp in perturbed(x_np):
        xt = torch.from_numpy(xp).requires_grad_(True)
        (gp,) = torch.autograd.grad(model(xt)[0, cls], xt)
        floor = max(floor, float(np.abs(saliency_map(gp[0].permute(1, 2, 0).numpy()) - ref_map).max()))
    info = {
        "side": side,
        "class": cls,
        "top_prob": float(ref_probs[cls]),
        "logit_std": float(logits.std()),
        "f32_floor": floor,
    }
    flags = ["--preprocess", "torch"]
    results, log = {}, []
    x0 = torch.from_numpy(x_np)
    for route in routes:
        d = os.path.join(work, route)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"{name}.onnx")
        t = time.time()
        try:
            with torch.no_grad():
                if route == "dynamo":
                    torch.onnx.export(model, (x0,), path)
                elif route == "legacy":
                    torch.onnx.export(model, (x0,), path, dynamo=False)
                elif route == "legacy13":
                    torch.onnx.export(model, (x0,), path, dynamo=False, opset_version=13)
        except Exception as e:  # noqa: BLE001
            export_failed(results, route, e, log, d)
            continue
        r = {"export_secs": round(time.time() - t, 1)}
        ort_note(r, path, x_np, ref_probs, softmax=True)
        ref_maps = {"f32": ref_map, "f64": ref_map64}
        r.update(check_convscope(exe, path, image, flags, ref_probs, ref_maps, cls, d, log))
        finish_route(results, route, r, log, d)
    return info, results, log


def export_failed(results, route, e, log, d):
    """Records a route whose export raised, with its traceback, and removes its folder."""
    results[route] = {"export_error": export_error(e)}
    log.append({"route": route, "export_traceback": traceback.format_exc()})
    shutil.rmtree(d, ignore_errors=True)


def finish_route(results, route, r, log, d):
    """Records a route's result, tags its log entries and removes its work folder."""
    for entry in log:
        entry.setdefault("route", route)
    results[route] = r
    shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------- keras


def keras_model(name):
    import numpy as np

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(SEED)
    side, mode = KERAS_MODELS[name]
    model = getattr(keras.applications, name)(weights=None, input_shape=(side, side, 3))
    rng = np.random.default_rng(SEED)
    bns = []
    for layer in model.layers:
        cls = layer.__class__.__name__
        for w in layer.weights:
            wname = w.name.split("/")[-1]
            shape = tuple(w.shape)
            if cls in ("Normalization", "Rescaling"):
                continue
            if wname in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                fan_in = int(np.prod(shape[:-1]))
                if wname == "depthwise_kernel":
                    fan_in = int(np.prod(shape[:2]))  # (kh, kw, in, multiplier)
                w.assign(rng.normal(0, math.sqrt(2.0 / fan_in), shape).astype("float32"))
            elif wname == "bias":
                w.assign(rng.normal(0, 0.05, shape).astype("float32"))
            elif wname == "gamma" and cls in ("BatchNormalization", "LayerNormalization"):
                w.assign((1 + rng.normal(0, 0.1, shape)).astype("float32"))
            elif wname == "beta":
                w.assign(rng.normal(0, 0.1, shape).astype("float32"))
            elif w.trainable and float(np.abs(np.asarray(w)).max()) < 1e-5:
                w.assign(rng.normal(0.2, 0.05, shape).astype("float32"))  # layer scale
        if cls == "BatchNormalization":
            bns.append((layer, layer.momentum))
            layer.momentum = 0.0
    imgs = [test_image(side, SEED + i) for i in range(4)]
    batch = np.stack([prepare(im, mode) for im in imgs])
    model(batch, training=True)  # momentum 0: the moving statistics become this batch's
    for layer, momentum in bns:
        layer.momentum = momentum
    # Logits (below the final softmax) with a standard deviation of 2 on the test image.
    head = model.layers[-1]
    softmax = head.activation
    head.activation = keras.activations.linear
    logits = np.asarray(model(batch[:1]))
    last = [l for l in model.layers if l.__class__.__name__ in ("Dense", "Conv2D")][-1]
    s = 2.0 / max(float(logits.std()), 1e-12)
    last.kernel.assign(np.asarray(last.kernel) * s)
    if last.use_bias:
        last.bias.assign(np.asarray(last.bias) * s)
    head.activation = softmax
    return model, side, mode


def folded_factor(model, x):
    """d(folded input)/d(model input) per channel: the Rescaling/Normalization layers at
    the input that convscope folds into its input preparation (gradients are taken
    after them)."""
    import numpy as np

    chain, rescaled, normalised = [], False, False
    for layer in model.layers[1:]:
        cls = layer.__class__.__name__
        if cls == "Rescaling" and not rescaled and not normalised:
            rescaled = True
        elif cls == "Normalization" and not normalised:
            normalised = True
        else:
            break
        chain.append(layer)
    if not chain:
        return np.ones(3, np.float32), []

    def f(v):
        y = v
        for layer in chain:
            y = layer(y)
        return np.asarray(y).reshape(-1, 3)[0]

    zero = f(np.zeros((1, 1, 1, 3), np.float32))
    one = f(np.ones((1, 1, 1, 3), np.float32))
    return (one - zero).astype(np.float64), [l.name for l in chain]


def keras_f32_floor(name, model, x_np, cls, grad):
    """Max saliency difference between the float32 gradient and the same model's in
    float64 (how much float32 rounding alone moves the map), and that float64 gradient."""
    import numpy as np
    import keras
    import tensorflow as tf

    side, _ = KERAS_MODELS[name]
    keras.config.set_dtype_policy("float64")
    try:
        m64 = getattr(keras.applications, name)(weights=None, input_shape=(side, side, 3))
    finally:
        keras.config.set_dtype_policy("float32")
    m64.set_weights(model.get_weights())
    m64.layers[-1].activation = keras.activations.linear
    x = tf.constant(x_np.astype(np.float64))
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = m64(x)[0, cls]
    g64 = tape.gradient(score, x).numpy()[0]
    del m64
    ref = saliency_map(grad)
    floor = float(np.abs(saliency_map(g64) - ref).max())
    head = model.layers[-1]
    softmax = head.activation
    head.activation = keras.activations.linear
    try:
        for xp in perturbed(x_np):
            xt = tf.constant(xp)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                score = model(xt)[0, cls]
            gp = tape.gradient(score, xt).numpy()[0]
            floor = max(floor, float(np.abs(saliency_map(gp) - ref).max()))
    finally:
        head.activation = softmax
    return floor, g64.astype(np.float64)


def keras_worker(name, routes, exe, work):
    import numpy as np

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model, side, mode = keras_model(name)
    img = test_image(side)
    image = os.path.join(work, "input.png")
    write_png(image, img)
    x_np = prepare(img, mode)[None]
    ref_probs = np.asarray(model(x_np), np.float64)[0]
    cls = int(ref_probs.argmax())
    head = model.layers[-1]
    softmax = head.activation
    head.activation = keras.activations.linear
    x = tf.constant(x_np)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = model(x)[0, cls]
    grad = tape.gradient(score, x).numpy()[0].astype(np.float64)
    head.activation = softmax
    factor, folded = folded_factor(model, x_np)
    try:
        floor, grad64 = keras_f32_floor(name, model, x_np, cls, grad)
    except Exception:  # noqa: BLE001  (a layer without a float64 kernel)
        floor, grad64 = None, None
    info = {
        "side": side,
        "class": cls,
        "top_prob": float(ref_probs[cls]),
        "preparation": mode,
        "folded": folded,
        "fold_factor": [float(v) for v in factor],
        "f32_floor": floor,
    }
    # convscope differentiates a Keras file after the layers it folds into the input
    # preparation; the ONNX graph keeps those layers as ops.
    maps = {"native": {"f32": saliency_map(grad / factor)}, "onnx": {"f32": saliency_map(grad)}}
    if grad64 is not None:
        maps["native"]["f64"] = saliency_map(grad64 / factor)
        maps["onnx"]["f64"] = saliency_map(grad64)
    pre = [] if mode == "raw" else ["--preprocess", mode]
    results, log = {}, []
    for route in routes:
        d = os.path.join(work, route)
        os.makedirs(d, exist_ok=True)
        t = time.time()
        try:
            if route == "keras":
                path = os.path.join(d, f"{name}.keras")
                model.save(path)
            elif route == "h5":
                path = os.path.join(d, f"{name}.h5")
                model.save(path)
            elif route == "tf2onnx":
                import tf2onnx

                path = os.path.join(d, f"{name}.onnx")
                tf2onnx.convert.from_keras(model, output_path=path)
        except Exception as e:  # noqa: BLE001
            export_failed(results, route, e, log, d)
            continue
        r = {"export_secs": round(time.time() - t, 1)}
        if route == "tf2onnx":
            ort_note(r, path, x_np, ref_probs, softmax=False)
            flags = ["--input-range", "0,255"] if mode == "raw" else pre
            ref_maps = maps["onnx"]
        else:
            flags, ref_maps = pre, maps["native"]
        r.update(check_convscope(exe, path, image, flags, ref_probs, ref_maps, cls, d, log))
        finish_route(results, route, r, log, d)
    return info, results, log


# ----------------------------------------------------------------------------- driver


def worker_main(args):
    work = tempfile.mkdtemp(prefix=f"models_table_{args.worker}_", dir=args.tmp)
    try:
        fn = torch_worker if args.family == "torch" else keras_worker
        info, results, log = fn(args.worker, args.routes, args.convscope, work)
        out = {"model": args.worker, "info": info, "results": results, "log": log}
    except Exception as e:  # noqa: BLE001
        out = {
            "model": args.worker,
            "fatal": export_error(e),
            "log": [{"fatal_traceback": traceback.format_exc()}],
        }
    finally:
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            shutil.copytree(work, os.path.join(args.keep, args.worker), dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    with open(args.result, "w") as f:
        json.dump(out, f)


def fmt(v):
    if v == 0:
        return "0"
    return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")


def cell(r):
    if "export_error" in r:
        return "export ✗ " + r["export_error"]
    mark = " †" if r.get("ort_diff", 0) > 1e-3 or "ort" in r else ""
    if "error" in r:
        return "✗ " + short(r["error"]) + mark
    p = fmt(r["prob_diff"])
    if "grad_diff" not in r:
        return f"✓ {p} / ✗ saliency: " + short(r.get("saliency_error", "?")) + mark
    g64 = f" / {fmt(r['grad_diff64'])}" if "grad_diff64" in r else ""
    return f"✓ {p} / {fmt(r['grad_diff'])}{g64}{mark}"


def short(err):
    """The error without the list of what is supported (the log keeps it)."""
    for cut in (" (supported: ", "; supported ops: "):
        if cut in err:
            err = err.split(cut)[0]
    return err


def esc(s):
    return s.replace("|", "\\|").replace("\n", " ")


def table(family, routes, rows):
    heads = {
        "dynamo": "ONNX, dynamo (default)",
        "legacy": "ONNX, dynamo=False",
        "legacy13": "ONNX, dynamo=False, opset 13",
        "keras": ".keras",
        "h5": ".h5",
        "tf2onnx": "tf2onnx",
    }
    title = "torchvision" if family == "torch" else "keras.applications"
    lines = [
        f"| {title} | size | floor | " + " | ".join(heads[r] for r in routes) + " |",
        "|---|---|---|" + "---|" * len(routes),
    ]
    notes = []
    for row in rows:
        name = row["model"]
        if "fatal" in row:
            lines.append(f"| {name} | | | " + " | ".join(["✗ script: " + esc(row["fatal"])] * len(routes)) + " |")
            continue
        info = row["info"]
        side = info["side"]
        cells = [esc(cell(row["results"].get(r, {"error": "not run"}))) for r in routes]
        floor = fmt(info["f32_floor"]) if info.get("f32_floor") is not None else ""
        lines.append(f"| {name} | {side} | {floor} | " + " | ".join(cells) + " |")
        for r in routes:
            res = row["results"].get(r, {})
            if res.get("ort_diff", 0) > 1e-3:
                notes.append(f"† {name}, {heads[r]}: ONNX Runtime differs from the framework by {fmt(res['ort_diff'])}")
            if "ort" in res:
                notes.append(f"† {name}, {heads[r]}: {res['ort']}")
            if "top1" in res and res["top1"] != info["class"]:
                notes.append(f"{name}, {heads[r]}: convscope's top class {res['top1']}, the framework's {info['class']}")
    return "\n".join(lines), notes


def driver(args):
    families = ["torch", "keras"] if args.family == "all" else [args.family]
    only = set(args.only.split(",")) if args.only else None
    exe = os.path.abspath(args.convscope)
    tmp = tempfile.mkdtemp(prefix="models_table_")
    logf = open(args.log, "w") if args.log else None
    out_parts = []
    all_notes = []
    try:
        for family in families:
            models = TORCH_MODELS if family == "torch" else KERAS_MODELS
            known = TORCH_ROUTES if family == "torch" else KERAS_ROUTES
            routes = [r for r in (args.routes.split(",") if args.routes else known) if r in known]
            names = [m for m in models if only is None or m in only]
            if not names or not routes:
                continue
            python = args.torch_python if family == "torch" else args.keras_python
            rows = []
            for name in names:
                res = os.path.join(tmp, f"{name}.json")
                cmd = [python, os.path.abspath(__file__), "--family", family, "--worker", name,
                       "--result", res, "--routes", ",".join(routes), "--convscope", exe, "--tmp", tmp]
                if args.keep:
                    cmd += ["--keep", os.path.abspath(args.keep)]
                t = time.time()
                print(f"[{time.strftime('%H:%M:%S')}] {family} {name} …", file=sys.stderr, flush=True)
                p = subprocess.run(cmd, capture_output=True, text=True)
                if os.path.exists(res):
                    with open(res) as f:
                        row = json.load(f)
                else:
                    tail = (p.stderr or "").strip().splitlines()[-1:] or [f"exit {p.returncode}"]
                    row = {"model": name, "fatal": f"worker died (exit {p.returncode}): {tail[0][:200]}",
                           "log": [{"worker_stderr": p.stderr[-5000:]}]}
                row["secs"] = round(time.time() - t, 1)
                rows.append(row)
                summary = {r: cell(v) for r, v in row.get("results", {}).items()}
                print(f"    {row['secs']} s {row.get('fatal', '')} {json.dumps(summary, ensure_ascii=False)}",
                      file=sys.stderr, flush=True)
                if logf:
                    logf.write(f"==== {family} {name} ({row['secs']} s) info={json.dumps(row.get('info'))}\n")
                    for r, v in row.get("results", {}).items():
                        logf.write(f"  {r}: {json.dumps(v, ensure_ascii=False)}\n")
                    for e in row.get("log", []):
                        if "cmd" in e:
                            logf.write(f"  [{e.get('route')}] $ {' '.join(e['cmd'])}\n")
                            logf.write("    " + (e.get("stderr") or e.get("error", "")).strip().replace("\n", "\n    ") + "\n")
                        else:
                            for k, v in e.items():
                                logf.write(f"  [{k}] " + str(v).strip().replace("\n", "\n    ") + "\n")
                    logf.flush()
            text, notes = table(family, routes, rows)
            out_parts.append(text)
            all_notes += notes
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if logf:
            logf.close()
    legend = ("Cells: ✓ max |Δ probability| / max |Δ saliency| (input gradient, relative to its "
              "maximum) in float32 / the same with both sides in float64 (convscope's "
              "`--precision f64` against the framework's model in float64), ✗ convscope's error, export ✗ the exporter's. floor: max |Δ saliency| "
              "of the framework against itself in float64 and for the input moved by 1e-6 of its "
              "largest value; a saliency difference of that order is rounding, not a bug.")
    doc = "\n\n".join(out_parts) + "\n\n" + legend + "\n"
    if all_notes:
        doc += "\n" + "\n".join(f"- {n}" for n in all_notes) + "\n"
    if args.out and args.out != "-":
        with open(args.out, "w") as f:
            f.write(doc)
    else:
        sys.stdout.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["torch", "keras", "all"], default="all")
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--routes", help="comma-separated routes: " + ",".join(TORCH_ROUTES + KERAS_ROUTES))
    ap.add_argument("--out", help="write the Markdown table here (default: stdout)")
    ap.add_argument("--log", help="write every convscope error, in full, here")
    ap.add_argument("--convscope", default=os.path.join(ROOT, "target", "release", "convscope"))
    ap.add_argument("--torch-python", default="/tmp/torchvenv/bin/python")
    ap.add_argument("--keras-python", default="/tmp/kerasvenv/bin/python")
    ap.add_argument("--keep", help="copy each model's work directory (exports, image) here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.routes = args.routes.split(",")
        worker_main(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
