#!/usr/bin/env python3
"""Times the speed issue's rows (issue #6) for the peers on THIS machine: PyTorch + Captum,
TensorFlow + tf-keras-vis and ONNX Runtime, on the sample model's weights and digit 8000.

    python3 -m venv /tmp/peersvenv
    /tmp/peersvenv/bin/pip install -r scripts/peers/requirements.txt
    cargo build --release
    /tmp/peersvenv/bin/python scripts/peers/peers.py --json /tmp/peers.json
    cargo run --release --example speed -- --peers /tmp/peers.json

Each framework runs in its own child process (so their thread pools never compete), on both
cores. Before timing a row a child checks that one call gives convscope's output for it (the
probabilities from `convscope predict`, the maps its commands write with --raw) to 1e-5; a
mismatch stops the run. Activation maximisation is not compared (the start noise and
tf-keras-vis's regularisers differ), only its work matches. Every row is the median of
several timed calls after a warm-up, as examples/speed.rs does, with its row names.

Semantics follow convscope's (src/methods/*.rs): class scores below the softmax, |gradient|
maxed over channels and min-max scaled, grad-CAM on conv2d_2's (post-ReLU) output upsampled
bilinearly with aligned corners, guided grad-CAM as guided backprop times that, occlusion
watching the softmax probability with a 0.5 grey square in batches of 64 (Captum's Occlusion
for PyTorch; for TF and ORT batched model calls of occluded copies, aggregated as convscope
does), activation maximisation over 200 steps for 10 classes as one batch with an L6 norm and
total variation (weights 10) and RMSProp (decay 0.95) on RMS-normalised gradients (PyTorch:
a plain loop with actmax.rs's losses; TF: tf-keras-vis's ActivationMaximization).
"Process start to first result" for a peer is a fresh interpreter importing its framework,
building the model from the weights file and classifying the digit once (convscope's row,
in examples/speed.rs, runs the whole `convscope saliency sample` command).

Versions used for the figures committed with it: Python 3.11.7 and requirements.txt here.
"""

import argparse
import gzip
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "sample_models" / "mnist_cnn.safetensors"
DIGITS = ROOT / "data" / "mnist_digits.bin.gz"
DIGIT_PNG = ROOT / "sample_models" / "digits" / "08000_3.png"
DIGIT, CLASS, BATCH = 8000, 3, 64
THREADS = 2
FRAMEWORKS = {"PyTorch": "torch", "TF": "tf", "ORT": "ort"}
# The graph this script rebuilds by hand: (node, op) in order, checked against the file.
GRAPH = [
    ("conv2d_1", "conv2d"),
    ("conv2d_2", "conv2d"),
    ("max_pooling2d_1", "max_pool"),
    ("dropout_1", "dropout"),
    ("flatten_1", "flatten"),
    ("dense_1", "dense"),
    ("dropout_2", "dropout"),
    ("preds", "dense"),
]
ROWS = [
    "forward batch 1",
    "forward batch 64",
    "saliency vanilla",
    "saliency guided",
    "saliency relu",
    "grad-CAM conv2d_2",
    "guided grad-CAM",
    "occlusion 4x4 stride 4",
    "occlusion 4x4 stride 1",
    "activation max 10 classes x 200 steps",
    "process start to first result",
]


# ---------------------------------------------------------------- shared, numpy only


def median_ms(runs, f):
    """Median wall time in ms of `runs` calls after `runs // 5 + 1` warm-up calls (a tenth
    as many under --quick)."""
    if os.environ.get("PEERS_QUICK"):
        runs = max(1, runs // 10)
    for _ in range(runs // 5 + 1):
        f()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def load_weights():
    """The sample model's weights (conv OIHW, dense [in, out]) after checking its graph."""
    from safetensors.numpy import load_file

    raw = WEIGHTS.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8 : 8 + header_len])["__metadata__"]
    nodes = json.loads(meta["convscope.model"])["graph"]["nodes"]
    found = [(n["name"], n["type"]) for n in nodes]
    if found != GRAPH:
        sys.exit(f"{WEIGHTS}: graph {found} is not the one this script rebuilds")
    return load_file(str(WEIGHTS))


def load_digits():
    """Bundled digits 8000 and 8000..8063 as [n, 1, 28, 28] float32 in [0, 1], the inputs
    examples/speed.rs uses, after checking digit 8000 against the PNG `convscope predict`
    reads (the format is src/digits.rs's)."""
    raw = gzip.decompress(DIGITS.read_bytes())
    if raw[:8] != b"CSDIGIT1":
        sys.exit(f"{DIGITS}: bad header")
    n = sum(struct.unpack("<II", raw[8:16]))
    start = 16 + n + DIGIT * 784
    pixels = np.frombuffer(raw[start : start + BATCH * 784], dtype=np.uint8).reshape(BATCH, 784)
    from PIL import Image

    png = np.asarray(Image.open(DIGIT_PNG).convert("L"))
    if not np.array_equal(png.reshape(-1), pixels[0]):
        sys.exit(f"{DIGIT_PNG} is not bundled digit {DIGIT}")
    x64 = (pixels.astype(np.float32) / 255.0).reshape(BATCH, 1, 28, 28)
    return x64[:1].copy(), x64


def minmax(m):
    """keras-vis's min-max scaling, as convscope's Map::normalised."""
    return (m - m.min()) / (m.max() - m.min() + 1e-7)


def window_starts(length, size, stride):
    """convscope's occlusion windows: 0, s, 2s, ... until one reaches the edge."""
    starts = [0]
    while starts[-1] + size < length and starts[-1] + stride < length:
        starts.append(starts[-1] + stride)
    return starts


def occlusion(predict, x, cls, size, stride, fill=0.5, batch=BATCH):
    """convscope's occlusion on a [1, 1, H, W] image with `predict` (NCHW batch -> softmax
    probabilities): per pixel the mean probability over the windows covering it, its drop,
    its argmax class, and per-class argmax counts."""
    h, w = x.shape[2:]
    original = predict(x)[0]
    positions = [(y, xx) for y in window_starts(h, size, stride) for xx in window_starts(w, size, stride)]
    k = original.shape[0]
    sums = np.zeros((h, w, k), np.float32)
    covers = np.zeros((h, w, 1), np.float32)
    counts = np.zeros(k, np.int64)
    for first in range(0, len(positions), batch):
        chunk = positions[first : first + batch]
        copies = np.repeat(x, len(chunk), axis=0)
        for i, (y, xx) in enumerate(chunk):
            copies[i, :, y : y + size, xx : xx + size] = fill
        probs = predict(copies)
        np.add.at(counts, probs.argmax(1), 1)
        for p, (y, xx) in zip(probs, chunk):
            sums[y : y + size, xx : xx + size] += p
            covers[y : y + size, xx : xx + size] += 1
    mean = sums / np.maximum(covers, 1)
    return original[cls] - mean[..., cls], mean.argmax(-1), counts


# Largest difference from convscope's output (probabilities, probability drops, maps scaled
# to [0, 1]) allowed before a row is timed; float32 rounding gives ~1e-6.
TOLERANCE = 1e-5


def run_rows(peer, jobs, expected):
    """Times each `(row, runs, f)` job after checking that one call of `f` gives convscope's
    output for that row (where `expected` has it); a mismatch stops the run."""
    rows = {}
    for row, runs, f in jobs:
        if row in expected:
            diff = float(np.abs(np.squeeze(np.asarray(f(), np.float64)) - expected[row]).max())
            ok = diff <= TOLERANCE
            verdict = "ok" if ok else "FAIL"
            print(f"check {peer:<7} {row:<24} max |peer - convscope| = {diff:.1e} {verdict}", file=sys.stderr)
            if not ok:
                sys.exit(f"{peer} disagrees with convscope on '{row}': not timing it")
        rows[row] = median_ms(runs, f)
    return rows


# ---------------------------------------------------------------- PyTorch + Captum


def torch_model(weights):
    import torch
    from torch import nn

    class Net(nn.Module):
        """The sample model, returning class scores below the softmax. Every ReLU is its own
        module, so Captum's guided backprop and deconvolution can hook them."""

        def __init__(self):
            super().__init__()
            self.conv2d_1 = nn.Conv2d(1, 32, 3)
            self.relu_1 = nn.ReLU()
            self.conv2d_2 = nn.Conv2d(32, 64, 3)
            self.relu_2 = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.dense_1 = nn.Linear(9216, 128)
            self.relu_3 = nn.ReLU()
            self.preds = nn.Linear(128, 10)

        def forward(self, x):
            x = self.pool(self.relu_2(self.conv2d_2(self.relu_1(self.conv2d_1(x)))))
            return self.preds(self.relu_3(self.dense_1(x.flatten(1))))

    net = Net().eval()
    with torch.no_grad():
        for name in ["conv2d_1", "conv2d_2"]:
            getattr(net, name).weight.copy_(torch.from_numpy(weights[f"{name}.kernel"]))
            getattr(net, name).bias.copy_(torch.from_numpy(weights[f"{name}.bias"]))
        for name in ["dense_1", "preds"]:
            getattr(net, name).weight.copy_(torch.from_numpy(weights[f"{name}.kernel"].T.copy()))
            getattr(net, name).bias.copy_(torch.from_numpy(weights[f"{name}.bias"]))
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def torch_actmax(net, classes, steps=200, lp_weight=10.0, tv_weight=10.0, seed=0):
    """convscope's activation maximisation (src/methods/actmax.rs) as a plain loop, all
    classes as one batch but each its own problem; returns the best inputs and losses."""
    import torch

    rows = len(classes)
    gen = torch.Generator().manual_seed(seed)
    x = 0.5 + 0.05 * torch.randn(rows, 1, 28, 28, generator=gen)
    n = x[0].numel()
    index = torch.arange(rows)
    target = torch.tensor(classes)
    cache = torch.zeros_like(x)
    best_loss = torch.full((rows,), float("inf"))
    best = x.clone()
    for step in range(steps + 1):
        x.requires_grad_(True)
        scores = net(x)
        norm = x.abs().pow(6).flatten(1).sum(1).pow(1 / 6)
        corner = x[..., :-1, :-1]
        tv = ((corner - x[..., 1:, :-1]) ** 2 + (corner - x[..., :-1, 1:]) ** 2).flatten(1).sum(1)
        loss = -scores[index, target] + lp_weight * norm / n + tv_weight * tv / n
        (grad,) = torch.autograd.grad(loss.sum(), x) if step < steps else (None,)
        with torch.no_grad():
            x = x.detach()
            better = loss < best_loss
            best_loss = torch.where(better, loss, best_loss)
            best[better] = x[better]
            if grad is None:
                break
            rms = grad.pow(2).flatten(1).mean(1).sqrt().view(-1, 1, 1, 1)
            g = grad / (rms + 1e-7)
            cache = 0.95 * cache + 0.05 * g * g
            x = x - g / (cache + 1e-7).sqrt()
    return best, best_loss


def bench_torch(weights, x1, x64, expected):
    import torch
    import torch.nn.functional as F
    from captum.attr import Deconvolution, GuidedBackprop, LayerGradCam, Occlusion, Saliency

    torch.set_num_threads(THREADS)
    warnings.filterwarnings("ignore", module="captum")  # "setting backward hooks", per call
    net = torch_model(weights)
    t1, t64 = torch.from_numpy(x1), torch.from_numpy(x64)

    def predict(x):
        with torch.inference_mode():
            return torch.softmax(net(x), 1).numpy()

    def abs_max(attr):
        return attr.detach().abs().amax(1)[0].numpy()

    rules = {"vanilla": Saliency(net), "guided": GuidedBackprop(net), "relu": Deconvolution(net)}
    layer_grad_cam = LayerGradCam(net, net.relu_2)

    def grad_cam():
        cam = layer_grad_cam.attribute(t1, target=CLASS, relu_attributions=True).detach()
        return minmax(
            F.interpolate(cam, size=x1.shape[2:], mode="bilinear", align_corners=True)[0, 0].numpy()
        )

    # Captum's GuidedGradCam is these two attributions multiplied, but it upsamples without
    # aligning corners; this is the same work with convscope's (and tf-keras-vis's) upsampling.
    def guided_grad_cam():
        return minmax(abs_max(rules["guided"].attribute(t1, target=CLASS)) * grad_cam())

    occluder = Occlusion(lambda x: torch.softmax(net(x), 1))

    def occlude(stride):
        with torch.no_grad():
            attr = occluder.attribute(
                t1,
                sliding_window_shapes=(1, 4, 4),
                strides=(1, stride, stride),
                baselines=0.5,
                target=CLASS,
                perturbations_per_eval=BATCH,
            )
        return attr[0, 0].numpy()

    jobs = [
        ("forward batch 1", 200, lambda: predict(t1)),
        ("forward batch 64", 30, lambda: predict(t64)),
        *[
            (f"saliency {rule}", 200, lambda m=method: minmax(abs_max(m.attribute(t1, target=CLASS))))
            for rule, method in rules.items()
        ],
        ("grad-CAM conv2d_2", 200, grad_cam),
        ("guided grad-CAM", 200, guided_grad_cam),
        ("occlusion 4x4 stride 4", 30, lambda: occlude(4)),
        ("occlusion 4x4 stride 1", 10, lambda: occlude(1)),
        ("activation max 10 classes x 200 steps", 3, lambda: torch_actmax(net, list(range(10)))),
    ]
    return run_rows("PyTorch", jobs, expected)


# ---------------------------------------------------------------- TF + tf-keras-vis


def tf_setup():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # tf-keras-vis passes a one-input model a list of one input; Keras 3 says so per call.
    warnings.filterwarnings("ignore", message="The structure of `inputs`")

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    return tf


def keras_model(tf, weights):
    """The sample model in Keras (channels last): conv kernels OIHW -> HWIO, dense_1's rows
    from convscope's channels-first flatten order (C, H, W) to Keras's (H, W, C)."""
    layers = tf.keras.layers
    # Functional, not Sequential: tf-keras-vis reads `output_names`, which Keras 3 gives
    # functional models only.
    inputs = tf.keras.Input((28, 28, 1), name="input_1")
    x = layers.Conv2D(32, 3, activation="relu", name="conv2d_1")(inputs)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2d_2")(x)
    x = layers.Flatten(name="flatten_1")(layers.MaxPooling2D(2, name="max_pooling2d_1")(x))
    x = layers.Dense(128, activation="relu", name="dense_1")(x)
    model = tf.keras.Model(inputs, layers.Dense(10, activation="softmax", name="preds")(x))
    dense_1 = weights["dense_1.kernel"].reshape(64, 12, 12, 128).transpose(1, 2, 0, 3).reshape(9216, 128)
    for name in ["conv2d_1", "conv2d_2"]:
        model.get_layer(name).set_weights(
            [weights[f"{name}.kernel"].transpose(2, 3, 1, 0), weights[f"{name}.bias"]]
        )
    model.get_layer("dense_1").set_weights([dense_1, weights["dense_1.bias"]])
    model.get_layer("preds").set_weights([weights["preds.kernel"], weights["preds.bias"]])
    return model


def bench_tf(weights, x1, x64, expected):
    tf = tf_setup()
    from tf_keras_vis.activation_maximization import ActivationMaximization
    from tf_keras_vis.activation_maximization.regularizers import Norm, TotalVariation2D
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.model_modifiers import GuidedBackpropagation, ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    class Deconvnet(GuidedBackpropagation):
        """convscope's "relu" rule (deconvnet): the gradient through a ReLU is g·[g>0]."""

        def _get_guided_activation(self, activation):
            @tf.custom_gradient
            def rectified(x):
                return activation(x), lambda dy: tf.cast(dy > 0, dy.dtype) * dy

            return rectified

    model = keras_model(tf, weights)
    nhwc1, nhwc64 = x1.transpose(0, 2, 3, 1), x64.transpose(0, 2, 3, 1)
    call = tf.function(lambda x: model(x, training=False))

    def predict(x):
        return call(tf.constant(x)).numpy()

    def predict_nchw(x):
        return predict(x.transpose(0, 2, 3, 1))

    score = CategoricalScore([CLASS])
    modifiers = {"vanilla": [], "guided": [GuidedBackpropagation()], "relu": [Deconvnet()]}
    saliencies = {
        rule: Saliency(model, model_modifier=[ReplaceToLinear(), *m]) for rule, m in modifiers.items()
    }
    gradcam = Gradcam(model, model_modifier=ReplaceToLinear())

    def grad_cam():
        return gradcam(score, nhwc1, penultimate_layer="conv2d_2")

    def guided_grad_cam():
        return minmax(saliencies["guided"](score, nhwc1, normalize_map=False) * grad_cam())

    maximiser = ActivationMaximization(model, model_modifier=ReplaceToLinear())
    start = np.random.default_rng(0).normal(0.5, 0.05, (10, 28, 28, 1)).astype(np.float32)

    def rms_normalised(grads):
        return grads / (tf.sqrt(tf.reduce_mean(tf.square(grads), axis=[1, 2, 3], keepdims=True)) + 1e-7)

    def actmax():
        return maximiser(
            CategoricalScore(list(range(10))),
            seed_input=start,
            input_range=(0.0, 1.0),
            input_modifiers=[],
            regularizers=[TotalVariation2D(weight=10.0), Norm(weight=10.0, p=6)],
            steps=200,
            optimizer=tf.keras.optimizers.RMSprop(learning_rate=1.0, rho=0.95, epsilon=1e-7),
            gradient_modifier=rms_normalised,
        )

    jobs = [
        ("forward batch 1", 200, lambda: predict(nhwc1)),
        ("forward batch 64", 30, lambda: predict(nhwc64)),
        *[
            (f"saliency {rule}", 200, lambda s=saliency: s(score, nhwc1))
            for rule, saliency in saliencies.items()
        ],
        ("grad-CAM conv2d_2", 200, grad_cam),
        ("guided grad-CAM", 200, guided_grad_cam),
        ("occlusion 4x4 stride 4", 30, lambda: occlusion(predict_nchw, x1, CLASS, 4, 4)[0]),
        ("occlusion 4x4 stride 1", 10, lambda: occlusion(predict_nchw, x1, CLASS, 4, 1)[0]),
        ("activation max 10 classes x 200 steps", 3, actmax),
    ]
    return run_rows("TF", jobs, expected)


# ---------------------------------------------------------------- ONNX Runtime


def onnx_bytes(weights):
    """The sample model as an ONNX graph (NCHW, so dense_1 takes the flatten as it is)."""
    from onnx import TensorProto, helper, numpy_helper

    init = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    nodes = [
        helper.make_node("Conv", ["input_1", "conv2d_1.kernel", "conv2d_1.bias"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2d_2.kernel", "conv2d_2.bias"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "dense_1.kernel", "dense_1.bias"], ["d1"]),
        helper.make_node("Relu", ["d1"], ["r3"]),
        helper.make_node("Gemm", ["r3", "preds.kernel", "preds.bias"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mnist_cnn",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["n", 1, 28, 28])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 10])],
        init,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def ort_session(model):
    """An ONNX Runtime session on two threads for `model`, a .onnx file's path or bytes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def bench_ort(weights, x1, x64, expected):
    session = ort_session(onnx_bytes(weights))

    def predict(x):
        return session.run(None, {"input_1": x})[0]

    jobs = [
        ("forward batch 1", 200, lambda: predict(x1)),
        ("forward batch 64", 30, lambda: predict(x64)),
        ("occlusion 4x4 stride 4", 30, lambda: occlusion(predict, x1, CLASS, 4, 4)[0]),
        ("occlusion 4x4 stride 1", 10, lambda: occlusion(predict, x1, CLASS, 4, 1)[0]),
    ]
    return run_rows("ORT", jobs, expected)


# ---------------------------------------------------------------- start-up


def first_result(framework, launched, onnx_file):
    """Child side of the start-up row: build the model (ONNX Runtime: load the .onnx file, as
    its users do), classify the digit, report the time since the parent launched this process."""
    x1, _ = load_digits()
    if framework == "torch":
        import torch

        torch.set_num_threads(THREADS)
        with torch.inference_mode():
            torch.softmax(torch_model(load_weights())(torch.from_numpy(x1)), 1).numpy()
    elif framework == "tf":
        tf = tf_setup()
        keras_model(tf, load_weights())(x1.transpose(0, 2, 3, 1), training=False).numpy()
    else:
        ort_session(onnx_file).run(None, {"input_1": x1})
    print(json.dumps((time.time() - launched) * 1e3))


def start_ms(framework, folder, runs=5):
    """Median of `runs` fresh processes' start to first result."""
    onnx_file = folder / "mnist_cnn.onnx"
    if framework == "ort" and not onnx_file.exists():
        onnx_file.write_bytes(onnx_bytes(load_weights()))
    times = []
    for _ in range(runs):
        launched = time.time()
        out = subprocess.run(
            [sys.executable, __file__, "--first-result", framework, "--launched", repr(launched)]
            + ["--onnx", str(onnx_file)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        times.append(json.loads(out.strip().splitlines()[-1]))
    return statistics.median(times)


# ---------------------------------------------------------------- driver


def convscope_outputs(binary, folder):
    """convscope's output for each row a peer is checked on, from the release binary: the
    probabilities, and the .npy maps its commands write with --raw."""

    def run(*args):
        command = [str(binary), *args[:1], "sample", str(DIGIT_PNG), *args[1:]]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    probs = np.zeros(10)
    for entry in json.loads(run("predict", "--json", "-k", "10"))[0]["top"]:
        probs[entry["index"]] = entry["probability"]
    outputs = {"forward batch 1": probs}
    commands = {
        **{f"saliency {rule}": ["saliency", "--modifier", rule] for rule in ["vanilla", "guided", "relu"]},
        "grad-CAM conv2d_2": ["gradcam", "--layer", "conv2d_2"],
        "guided grad-CAM": ["guided-gradcam"],
        **{
            f"occlusion 4x4 stride {s}": ["occlusion", "--size", "4", "--stride", str(s), "--drop"]
            for s in [4, 1]
        },
    }
    for row, command in commands.items():
        npy = folder / f"{len(outputs)}.npy"
        run(*command, "--class", str(CLASS), "--raw", str(npy), "--output", str(npy.with_suffix(".png")))
        outputs[row] = np.load(npy).astype(np.float64)
    return outputs


def machine():
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    flags = next(
        (line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []
    )
    simd = ", ".join(
        f"{name} {flag in flags}"
        for name, flag in [("AVX2", "avx2"), ("FMA", "fma"), ("AVX-512F", "avx512f")]
    )
    return f"{cpu}, {os.cpu_count()} cores, {simd}, {THREADS} threads per peer, Python {platform.python_version()}"


def versions():
    from importlib.metadata import version

    return {
        p: version(p) for p in ["torch", "captum", "tensorflow-cpu", "keras", "tf-keras-vis", "onnxruntime"]
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here, for `speed --peers`")
    parser.add_argument("--convscope", type=Path, default=ROOT / "target" / "release" / "convscope")
    parser.add_argument("--only", choices=FRAMEWORKS, action="append", help="time only these peers")
    parser.add_argument("--quick", action="store_true", help="a tenth of the runs, to try the script")
    parser.add_argument("--bench", choices=FRAMEWORKS.values(), help=argparse.SUPPRESS)
    parser.add_argument("--expected", help=argparse.SUPPRESS)
    parser.add_argument("--first-result", choices=FRAMEWORKS.values(), help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.first_result:
        first_result(args.first_result, args.launched, args.onnx)
        return
    if args.bench:
        weights, (x1, x64) = load_weights(), load_digits()
        bench = {"torch": bench_torch, "tf": bench_tf, "ort": bench_ort}[args.bench]
        expected = dict(np.load(args.expected))
        print(json.dumps(bench(weights, x1, x64, expected)))
        return

    if args.quick:
        os.environ["PEERS_QUICK"] = "1"  # inherited by the children
    if not args.convscope.exists():
        sys.exit(f"{args.convscope} is missing: run `cargo build --release` first")
    rows = {row: {} for row in ROWS}
    # Peers' threads spin and wait on each other: under load their figures swing far more
    # than convscope's, so the run records how busy the machine was.
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as folder:
        expected = Path(folder) / "convscope.npz"
        np.savez(expected, **convscope_outputs(args.convscope, Path(folder)))
        for peer in args.only or FRAMEWORKS:
            framework = FRAMEWORKS[peer]
            print(f"timing {peer}...", file=sys.stderr)
            out = subprocess.run(
                [sys.executable, __file__, "--bench", framework, "--expected", str(expected)],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            ).stdout
            for row, ms in json.loads(out.strip().splitlines()[-1]).items():
                rows[row][peer] = ms
            rows["process start to first result"][peer] = start_ms(framework, Path(folder))

    load.append(os.getloadavg()[0])
    result = {"machine": machine(), "load_average": load, "versions": versions(), "rows": rows}
    print(
        f"machine: {result['machine']}\nload average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f}\n"
    )
    peers = args.only or list(FRAMEWORKS)
    print("| row (median ms) | " + " | ".join(peers) + " |")
    print("|---|" + "---:|" * len(peers))
    for row, figures in rows.items():
        print(f"| {row} | " + " | ".join(f"{figures[p]:.3f}" if p in figures else "" for p in peers) + " |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
