#!/usr/bin/env python3
"""Writes the ONNX importer's test fixtures under tests/fixtures/onnx/.

Each fixture is a small .onnx file built with onnx.helper in the shape a real exporter
gives (PyTorch's torch.onnx names and NCHW input, tf2onnx's NHWC input wrapped in
Transposes, a residual block, the remaining ops at opset 21, today's exporters' patterns
at opset 18), its input `<name>.input.npy`
and ONNX Runtime's output `<name>.output.npy` (plus `<name>.<value>.npy` for an
intermediate value where one is worth checking, characters other than letters, digits
and `_` in its name written as `_`).
The sample model's weights are exported the same way to compute ONNX Runtime's
probabilities for it (`sample_model.*.npy`); that .onnx is 4.8 MB, so it is not committed:
the test builds the same file in Rust and compares against these numbers.

Two fixtures (keras_gray, keras_rgb) are real Keras models converted by tf2onnx; they
need tensorflow-cpu and tf2onnx, and are skipped (left as they are) without them.

Run from the repository root:
    python3 -m venv /tmp/onnxvenv
    /tmp/onnxvenv/bin/pip install onnx onnxruntime numpy safetensors tensorflow-cpu tf2onnx
    /tmp/onnxvenv/bin/python scripts/make_onnx_fixtures.py
Versions used for the committed files: onnx 1.23.2, onnxruntime 1.32.0, numpy 2.4.6,
safetensors 0.8.0, tensorflow-cpu 2.21.0 (Keras 3.15.1), tf2onnx 1.17.0, Python 3.11.7.
"""

import json
import os
import re

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

OUT = "tests/fixtures/onnx"
RNG = np.random.default_rng(20261126)
# IR versions the exporters of each opset write (ONNX's versioning table).
IR_FOR_OPSET = {9: 4, 11: 6, 13: 7, 17: 8, 18: 8, 20: 9, 21: 10}


def weight(name, *shape, scale=0.5):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def floats(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.float32), name)


def model(name, nodes, inputs, output, initializers, opset):
    graph = helper.make_graph(nodes, name, inputs, [output], initializers)
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="convscope-fixtures",
        ir_version=IR_FOR_OPSET[opset],
    )
    onnx.checker.check_model(m, full_check=True)
    return m


def run(m, x, extra=()):
    """ONNX Runtime's output, and the values named in `extra` (by making them outputs of a
    copy of the model; the committed file keeps its one output)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    for value in extra:
        probe.graph.output.append(helper.make_empty_tensor_value_info(value))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    results = sess.run(None, {m.graph.input[0].name: x})
    return results[0], dict(zip(extra, results[1:]))


def save(name, m, x, extra=()):
    os.makedirs(OUT, exist_ok=True)
    out, values = run(m, x, extra)
    if m is not None:
        onnx.save(m, f"{OUT}/{name}.onnx")
    np.save(f"{OUT}/{name}.input.npy", x)
    np.save(f"{OUT}/{name}.output.npy", out)
    for value, v in values.items():
        np.save(f"{OUT}/{name}.{re.sub('[^A-Za-z0-9_]', '_', value)}.npy", v)
    size = os.path.getsize(f"{OUT}/{name}.onnx") if m is not None else 0
    print(f"{name}: {size} bytes, output {out.shape}, sum {out.sum():.6f}")


def image_input(name, *shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def torch_chain():
    """What torch.onnx.export writes for Conv-ReLU-MaxPool-Flatten-Linear-ReLU-Linear-Softmax
    (node and value names as PyTorch 2 spells them), opset 17, dynamic batch."""
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "conv1.weight", "conv1.bias"], ["/conv1/Conv_output_0"],
          name="/conv1/Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1],
          dilations=[1, 1], group=1),
        n("Relu", ["/conv1/Conv_output_0"], ["/relu/Relu_output_0"], name="/relu/Relu"),
        n("MaxPool", ["/relu/Relu_output_0"], ["/pool/MaxPool_output_0"], name="/pool/MaxPool",
          kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=0),
        n("Flatten", ["/pool/MaxPool_output_0"], ["/Flatten_output_0"], name="/Flatten", axis=1),
        n("Gemm", ["/Flatten_output_0", "fc1.weight", "fc1.bias"], ["/fc1/Gemm_output_0"],
          name="/fc1/Gemm", alpha=1.0, beta=1.0, transB=1),
        n("Relu", ["/fc1/Gemm_output_0"], ["/relu_1/Relu_output_0"], name="/relu_1/Relu"),
        n("Gemm", ["/relu_1/Relu_output_0", "fc2.weight", "fc2.bias"], ["/fc2/Gemm_output_0"],
          name="/fc2/Gemm", alpha=1.0, beta=1.0, transB=1),
        n("Softmax", ["/fc2/Gemm_output_0"], ["output"], name="/Softmax", axis=1),
    ]
    inits = [
        weight("conv1.weight", 4, 1, 3, 3),
        weight("conv1.bias", 4, scale=0.1),
        weight("fc1.weight", 16, 4 * 6 * 6, scale=0.2),
        weight("fc1.bias", 16, scale=0.1),
        weight("fc2.weight", 10, 16),
        weight("fc2.bias", 10, scale=0.1),
    ]
    m = model("main_graph", nodes, [image_input("input", "batch_size", 1, 12, 12)],
              image_input("output", "batch_size", 10), inits, 17)
    x = RNG.random((2, 1, 12, 12), dtype=np.float32)
    save("torch_chain", m, x, extra=["/relu/Relu_output_0"])


def keras_nhwc():
    """What tf2onnx writes for a Keras Sequential model (Rescaling, two Conv2D with ReLU,
    Flatten, Dense with softmax) at opset 13: NHWC input with an `unk__` batch, every Conv
    wrapped in Transposes, Flatten as a Reshape of the NHWC value, Dense as MatMul + Add."""
    n = helper.make_node
    p = "sequential"
    nodes = [
        n("Mul", ["input_1", "rescale"], [f"{p}/rescaling/mul:0"], name=f"{p}/rescaling/mul"),
        n("Transpose", [f"{p}/rescaling/mul:0"], [f"{p}/conv2d/BiasAdd__6:0"],
          name=f"{p}/conv2d/BiasAdd__6", perm=[0, 3, 1, 2]),
        n("Conv", [f"{p}/conv2d/BiasAdd__6:0", "conv_k", "conv_b"], [f"{p}/conv2d/BiasAdd:0"],
          name=f"{p}/conv2d/BiasAdd", kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1],
          auto_pad="SAME_UPPER", group=1),
        n("Relu", [f"{p}/conv2d/BiasAdd:0"], [f"{p}/conv2d/Relu:0"], name=f"{p}/conv2d/Relu"),
        n("Transpose", [f"{p}/conv2d/Relu:0"], [f"{p}/conv2d/Relu__9:0"],
          name=f"{p}/conv2d/Relu__9", perm=[0, 2, 3, 1]),
        n("Transpose", [f"{p}/conv2d/Relu__9:0"], [f"{p}/conv2d_1/BiasAdd__12:0"],
          name=f"{p}/conv2d_1/BiasAdd__12", perm=[0, 3, 1, 2]),
        n("Conv", [f"{p}/conv2d_1/BiasAdd__12:0", "conv1_k", "conv1_b"],
          [f"{p}/conv2d_1/BiasAdd:0"], name=f"{p}/conv2d_1/BiasAdd", kernel_shape=[3, 3],
          strides=[2, 2], pads=[0, 0, 0, 0], dilations=[1, 1], group=1),
        n("Relu", [f"{p}/conv2d_1/BiasAdd:0"], [f"{p}/conv2d_1/Relu:0"],
          name=f"{p}/conv2d_1/Relu"),
        n("Transpose", [f"{p}/conv2d_1/Relu:0"], [f"{p}/conv2d_1/Relu__15:0"],
          name=f"{p}/conv2d_1/Relu__15", perm=[0, 2, 3, 1]),
        n("Reshape", [f"{p}/conv2d_1/Relu__15:0", "const_fold_opt__20"],
          [f"{p}/flatten/Reshape:0"], name=f"{p}/flatten/Reshape"),
        n("MatMul", [f"{p}/flatten/Reshape:0", "dense_k"], [f"{p}/dense/MatMul:0"],
          name=f"{p}/dense/MatMul"),
        n("Add", [f"{p}/dense/MatMul:0", "dense_b"], [f"{p}/dense/BiasAdd:0"],
          name=f"{p}/dense/BiasAdd"),
        n("Softmax", [f"{p}/dense/BiasAdd:0"], ["dense"], name=f"{p}/dense/Softmax"),
    ]
    inits = [
        floats("rescale", 1.0 / 255.0),
        weight("conv_k", 4, 1, 3, 3),
        weight("conv_b", 4, scale=0.1),
        weight("conv1_k", 3, 4, 3, 3),
        weight("conv1_b", 3, scale=0.1),
        ints("const_fold_opt__20", [-1, 5 * 5 * 3]),
        weight("dense_k", 5 * 5 * 3, 10),
        weight("dense_b", 10, scale=0.1),
    ]
    m = model("tf2onnx", nodes, [image_input("input_1", "unk__24", 12, 12, 1)],
              image_input("dense", "unk__25", 10), inits, 13)
    x = (RNG.random((2, 12, 12, 1), dtype=np.float32) * 255).astype(np.float32)
    save("keras_nhwc", m, x, extra=[f"{p}/conv2d_1/Relu__15:0"])


def residual():
    """A 3-channel residual block at opset 11: normalisation by Sub/Div constants, Conv +
    BatchNormalization + Relu twice with an Add of the skip branch, a 1x1 conv branch
    joined by Concat, GlobalAveragePool, Squeeze with an axes attribute, Gemm with
    alpha/beta, Softmax with opset 11's default axis."""
    n = helper.make_node
    nodes = [
        n("Sub", ["image", "mean"], ["centred"], name="normalise/sub"),
        n("Div", ["centred", "std"], ["normalised"], name="normalise/div"),
        n("Conv", ["normalised", "stem.w", "stem.b"], ["stem"], name="stem/conv",
          kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Relu", ["stem"], ["stem_relu"], name="stem/relu"),
        n("Conv", ["stem_relu", "block.conv1.w"], ["b1"], name="block/conv1",
          kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["b1", "bn1.g", "bn1.b", "bn1.m", "bn1.v"], ["b1n"],
          name="block/bn1", epsilon=1e-3),
        n("Relu", ["b1n"], ["b1r"], name="block/relu1"),
        n("Conv", ["b1r", "block.conv2.w"], ["b2"], name="block/conv2", kernel_shape=[3, 3],
          pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["b2", "bn2.g", "bn2.b", "bn2.m", "bn2.v"], ["b2n"],
          name="block/bn2"),
        n("Add", ["b2n", "stem_relu"], ["sum"], name="block/add"),
        n("Relu", ["sum"], ["block_out"], name="block/relu2"),
        n("Conv", ["block_out", "side.w", "side.b"], ["side"], name="side/conv",
          kernel_shape=[1, 1], strides=[2, 2]),
        n("MaxPool", ["block_out"], ["pooled"], name="pool", kernel_shape=[2, 2],
          strides=[2, 2]),
        n("Concat", ["pooled", "side"], ["joined"], name="join", axis=1),
        n("GlobalAveragePool", ["joined"], ["gap"], name="gap"),
        n("Squeeze", ["gap"], ["features"], name="squeeze", axes=[2, 3]),
        n("Gemm", ["features", "head.w", "head.b"], ["logits"], name="head", alpha=0.5,
          beta=2.0, transB=1),
        n("Softmax", ["logits"], ["probs"], name="softmax"),
    ]

    def bn(prefix, c):
        return [
            numpy_helper.from_array(RNG.uniform(0.5, 1.5, c).astype(np.float32), f"{prefix}.g"),
            weight(f"{prefix}.b", c, scale=0.1),
            weight(f"{prefix}.m", c, scale=0.1),
            numpy_helper.from_array(RNG.uniform(0.5, 1.5, c).astype(np.float32), f"{prefix}.v"),
        ]

    inits = [
        floats("mean", np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)),
        floats("std", np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)),
        weight("stem.w", 4, 3, 3, 3, scale=0.3),
        weight("stem.b", 4, scale=0.1),
        weight("block.conv1.w", 4, 4, 3, 3, scale=0.3),
        *bn("bn1", 4),
        weight("block.conv2.w", 4, 4, 3, 3, scale=0.3),
        *bn("bn2", 4),
        weight("side.w", 2, 4, 1, 1),
        weight("side.b", 2, scale=0.1),
        weight("head.w", 5, 6),
        weight("head.b", 5, scale=0.1),
    ]
    m = model("residual", nodes, [image_input("image", "N", 3, 8, 8)],
              image_input("probs", "N", 5), inits, 11)
    x = RNG.random((2, 3, 8, 8), dtype=np.float32)
    save("residual", m, x, extra=["block_out", "joined"])


def ops21():
    """The remaining ops at opset 21: Pad, depthwise Conv with dilations, strides and
    uneven pads, Clip with min/max inputs (ReLU6), AveragePool counting padding, a Conv
    without bias padded SAME_LOWER, LeakyRelu, Identity, Dropout, Sigmoid times its input (two computed operands),
    MaxPool with a ceil_mode that changes nothing, PyTorch's Shape-Gather-Unsqueeze-Concat
    flatten, Unsqueeze/Squeeze with axes inputs, MatMul + Add, Tanh, a constant on the left
    of a Sub, Gemm without transposes, Softmax over the last axis."""
    n = helper.make_node
    nodes = [
        n("Pad", ["x", "pads", "pad_value"], ["padded"], name="pad", mode="constant"),
        n("Conv", ["padded", "dw.w", "dw.b"], ["dw"], name="depthwise", group=3,
          kernel_shape=[3, 3], dilations=[2, 2], strides=[2, 2], pads=[2, 2, 1, 1]),
        n("Clip", ["dw", "zero", "six"], ["dw6"], name="relu6"),
        n("AveragePool", ["dw6"], ["avg"], name="avgpool", kernel_shape=[2, 2],
          strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
        n("Conv", ["avg", "pw.w"], ["pw"], name="same_lower", kernel_shape=[2, 2],
          auto_pad="SAME_LOWER"),
        n("LeakyRelu", ["pw"], ["pwl"], name="leaky", alpha=0.2),
        n("Identity", ["pwl"], ["same"], name="identity"),
        n("Dropout", ["same"], ["dropped"], name="dropout"),
        n("Sigmoid", ["dropped"], ["gate"], name="gate"),
        n("Mul", ["dropped", "gate"], ["swish"], name="swish"),
        n("MaxPool", ["swish"], ["mp"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2],
          ceil_mode=1),
        n("Shape", ["mp"], ["shape"], name="shape"),
        n("Constant", [], ["zero_index"], name="const_zero",
          value=numpy_helper.from_array(np.array(0, dtype=np.int64))),
        n("Gather", ["shape", "zero_index"], ["batch"], name="gather", axis=0),
        n("Unsqueeze", ["batch", "axis0"], ["batch1"], name="unsqueeze_batch"),
        n("Constant", [], ["minus_one"], name="const_minus_one", value_ints=[-1]),
        n("Concat", ["batch1", "minus_one"], ["target"], name="concat_shape", axis=0),
        n("Reshape", ["mp", "target"], ["flat"], name="flatten"),
        n("Unsqueeze", ["flat", "axis2"], ["flat3"], name="unsqueeze"),
        n("Squeeze", ["flat3", "axis2"], ["flat2"], name="squeeze"),
        n("MatMul", ["flat2", "fc.w"], ["fc"], name="fc/MatMul"),
        n("Add", ["fc", "fc.b"], ["fcb"], name="fc/Add"),
        n("Tanh", ["fcb"], ["fct"], name="fc/Tanh"),
        n("Sub", ["one", "fct"], ["flipped"], name="flip"),
        n("Gemm", ["flipped", "out.w", "out.b"], ["logits"], name="out"),
        n("Softmax", ["logits"], ["probs"], name="softmax"),
    ]
    inits = [
        ints("pads", [0, 0, 1, 2, 0, 0, 2, 1]),
        floats("pad_value", 0.5),
        weight("dw.w", 6, 1, 3, 3),
        weight("dw.b", 6, scale=0.5),
        floats("zero", 0.0),
        floats("six", 6.0),
        weight("pw.w", 4, 6, 2, 2),
        ints("axis0", [0]),
        ints("axis2", [2]),
        weight("fc.w", 4 * 4 * 4, 8),
        weight("fc.b", 8, scale=0.1),
        floats("one", [1.0]),
        weight("out.w", 8, 3),
        weight("out.b", 3, scale=0.1),
    ]
    m = model("ops21", nodes, [image_input("x", "batch", 3, 11, 11)],
              image_input("probs", "batch", 3), inits, 21)
    x = RNG.random((2, 3, 11, 11), dtype=np.float32)
    save("ops21", m, x, extra=["swish"])


def keras_chain(tf, channels):
    """Rescaling, Conv2D+ReLU, BatchNormalization, MaxPooling2D, Conv2D+ReLU6, Flatten,
    Dropout, Dense+softmax."""
    layers = tf.keras.layers
    return tf.keras.Sequential([
        tf.keras.Input((10, 10, channels)),
        layers.Rescaling(1 / 255.0),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(),
        layers.Conv2D(4, 3, activation="relu6"),
        layers.Flatten(),
        layers.Dropout(0.3),
        layers.Dense(5, activation="softmax"),
    ])


def keras_dag(tf):
    """A functional model: Conv2D, BatchNormalization, ReLU, a 1x1 branch joined by Add
    and Concatenate, ZeroPadding2D, DepthwiseConv2D, GlobalAveragePooling2D, Dense."""
    layers = tf.keras.layers
    inp = tf.keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inp)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    y = layers.Conv2D(4, 1)(x)
    x = layers.Add()([x, y])
    x = layers.Concatenate()([x, y])
    x = layers.ZeroPadding2D(1)(x)
    x = layers.DepthwiseConv2D(3, activation="tanh")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(3, activation="softmax")(x)
    return tf.keras.Model(inp, out)


def keras_resized(tf):
    """TensorFlow's resizing in a model, as tf2onnx writes it: bilinear up by uneven
    factors (`half_pixel`), nearest down (`tf_half_pixel_for_nn`, nearest `floor`)."""
    layers = tf.keras.layers
    inp = tf.keras.Input((9, 11, 3))
    x = layers.Rescaling(1 / 255)(inp)
    x = layers.Resizing(16, 12)(x)
    x = layers.Conv2D(4, 3, activation="relu")(x)
    x = layers.Resizing(5, 7, interpolation="nearest")(x)
    x = layers.Flatten()(x)
    out = layers.Dense(3, activation="softmax")(x)
    return tf.keras.Model(inp, out)


def keras_resized_fixture():
    keras_export("keras_resized", 9, keras_resized)


def keras_export(name, seed, build):
    """A real Keras model, as `build(tf)` makes it, exported by tf2onnx (opset 13), with
    random weights (biases and batch-norm statistics too, so that no layer is optimised
    away). Needs tensorflow-cpu and tf2onnx; skipped without them."""
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError:
        print(f"{name}: skipped (no tensorflow/tf2onnx)")
        return
    tf.keras.utils.set_random_seed(7)
    # Its own generator, so that the other fixtures do not depend on whether this runs.
    rng = np.random.default_rng(seed)
    m = build(tf)
    for layer in m.layers:
        weights = layer.get_weights()
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            c = weights[0].shape
            weights = [rng.uniform(0.5, 1.5, c), rng.standard_normal(c) * 0.1,
                       rng.standard_normal(c) * 0.1, rng.uniform(0.5, 1.5, c)]
        else:
            weights = [rng.standard_normal(w.shape) * 0.3 for w in weights]
        layer.set_weights([w.astype(np.float32) for w in weights])
    shape = (None, *m.input_shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32, name="input"),)
    # tf2onnx's from_keras does not know Keras 3; a traced function converts the same.
    fn = tf.function(lambda x: m(x, training=False))
    onnx_model, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=13)
    x = (rng.random((2, *shape[1:])) * 255).astype(np.float32)
    keras_out = m(x, training=False).numpy()
    os.makedirs(OUT, exist_ok=True)
    onnx.save(onnx_model, f"{OUT}/{name}.onnx")
    out, _ = run(onnx_model, x)
    assert np.allclose(out, keras_out, rtol=1e-4, atol=1e-6), "tf2onnx changed the numbers"
    np.save(f"{OUT}/{name}.input.npy", x)
    np.save(f"{OUT}/{name}.output.npy", out)
    print(f"{name}: {os.path.getsize(f'{OUT}/{name}.onnx')} bytes, tensorflow {tf.__version__}, "
          f"tf2onnx {tf2onnx.__version__}, nodes {[n.op_type for n in onnx_model.graph.node]}")


def activations():
    """Every activation beyond ReLU at opset 20: Elu, Selu, HardSwish, Gelu (exact and tanh)
    after convs, Softplus, Softsign, HardSigmoid, Exp after Gemms, and GELU the way exports
    before opset 20 spell it (Div, Erf, Add, Mul, Mul). Seeded on its own, so it can be
    rebuilt alone (`make_onnx_fixtures.py activations`)."""
    rng = np.random.default_rng(20)
    w = lambda name, *shape, scale=0.6: numpy_helper.from_array(
        (rng.standard_normal(shape) * scale).astype(np.float32), name)
    n = helper.make_node
    conv = lambda i, x, y: n("Conv", [x, f"c{i}.w", f"c{i}.b"], [y], name=f"conv{i}",
                             kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    gemm = lambda i, x, y: n("Gemm", [x, f"g{i}.w", f"g{i}.b"], [y], name=f"gemm{i}", transB=1)
    nodes = [
        conv(1, "x", "c1"), n("Elu", ["c1"], ["elu"], name="elu", alpha=0.7),
        conv(2, "elu", "c2"), n("Selu", ["c2"], ["selu"], name="selu"),
        conv(3, "selu", "c3"), n("HardSwish", ["c3"], ["hswish"], name="hard_swish"),
        conv(4, "hswish", "c4"), n("Gelu", ["c4"], ["gelu"], name="gelu"),
        conv(5, "gelu", "c5"), n("Gelu", ["c5"], ["gelu_tanh"], name="gelu_tanh",
                                 approximate="tanh"),
        n("Flatten", ["gelu_tanh"], ["flat"], name="flatten"),
        gemm(1, "flat", "g1"), n("Softplus", ["g1"], ["softplus"], name="softplus"),
        gemm(2, "softplus", "g2"), n("Softsign", ["g2"], ["softsign"], name="softsign"),
        gemm(3, "softsign", "g3"),
        n("HardSigmoid", ["g3"], ["hsig"], name="hard_sigmoid", alpha=0.3, beta=0.4),
        gemm(4, "hsig", "g4"), n("Exp", ["g4"], ["exp"], name="exp"),
        gemm(5, "exp", "g5"),
        n("Div", ["g5", "sqrt2"], ["g5_scaled"], name="gelu_old/Div"),
        n("Erf", ["g5_scaled"], ["erf"], name="gelu_old/Erf"),
        n("Add", ["erf", "one"], ["erf1"], name="gelu_old/Add"),
        n("Mul", ["g5", "erf1"], ["gelu2x"], name="gelu_old/Mul"),
        n("Mul", ["gelu2x", "half"], ["gelu_old"], name="gelu_old/Mul_1"),
        gemm(6, "gelu_old", "logits"),
        n("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    inits = [w("c1.w", 3, 1, 3, 3), w("c1.b", 3, scale=0.2)]
    for i in range(2, 6):
        inits += [w(f"c{i}.w", 3, 3, 3, 3, scale=0.4), w(f"c{i}.b", 3, scale=0.2)]
    sizes = [3 * 6 * 6, 8, 8, 8, 8, 8, 4]
    for i in range(1, 7):
        inits += [w(f"g{i}.w", sizes[i], sizes[i - 1], scale=0.5 if i > 1 else 0.15),
                  w(f"g{i}.b", sizes[i], scale=0.2)]
    inits += [floats("sqrt2", 2.0 ** 0.5), floats("one", 1.0), floats("half", 0.5)]
    m = model("activations", nodes, [image_input("x", "batch", 1, 6, 6)],
              image_input("probs", "batch", 4), inits, 20)
    x = (rng.random((2, 1, 6, 6), dtype=np.float32) * 2 - 1).astype(np.float32)
    save("activations", m, x, extra=["gelu_tanh", "exp"])


def export18():
    """The patterns of today's exporters at opset 18: PRelu with a slope per channel (as
    PyTorch writes nn.PReLU), a Pad with -inf before a MaxPool (how a
    ceil-mode or same max pool is written), ReduceMean over the spatial axes with its axes
    as an input (the dynamo exporter's global average pool) feeding a squeeze-excite gate
    multiplied into the feature map (two computed operands), a Concat of one input
    (DenseNet's first dense layer), ReduceMax and ReduceSum without kept dims. Seeded on its
    own (`make_onnx_fixtures.py export18`)."""
    rng = np.random.default_rng(18)
    weight = lambda name, *shape, scale=0.5: numpy_helper.from_array(
        (rng.standard_normal(shape) * scale).astype(np.float32), name)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="conv1", kernel_shape=[3, 3],
          pads=[1, 1, 1, 1]),
        n("PRelu", ["c1", "slope"], ["a"], name="prelu"),
        n("Pad", ["a", "pool_pads", "minus_inf"], ["padded"], name="pad", mode="constant"),
        n("MaxPool", ["padded"], ["p"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        n("ReduceMean", ["p", "hw"], ["squeezed"], name="se/mean", keepdims=1),
        n("Conv", ["squeezed", "se1.w", "se1.b"], ["s1"], name="se/fc1"),
        n("Relu", ["s1"], ["s1r"], name="se/relu"),
        n("Conv", ["s1r", "se2.w", "se2.b"], ["s2"], name="se/fc2"),
        n("Sigmoid", ["s2"], ["gate"], name="se/gate"),
        n("Mul", ["p", "gate"], ["excited"], name="se/scale"),
        n("Concat", ["excited"], ["joined"], name="concat_one", axis=1),
        n("ReduceMax", ["joined", "hw_negative"], ["peak"], name="peak", keepdims=0),
        n("ReduceSum", ["joined", "hw"], ["total"], name="total", keepdims=0),
        n("Add", ["peak", "total"], ["both"], name="both"),
        n("Gemm", ["both", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        n("Softmax", ["logits"], ["probs"], name="softmax"),
    ]
    inits = [
        weight("c1.w", 4, 3, 3, 3),
        weight("c1.b", 4, scale=0.1),
        numpy_helper.from_array(np.array([0.25, -0.5, 0.1, 1.5], np.float32).reshape(4, 1, 1),
                                "slope"),
        ints("pool_pads", [0, 0, 0, 0, 0, 0, 1, 1]),
        floats("minus_inf", -np.inf),
        ints("hw", [2, 3]),
        ints("hw_negative", [-1, -2]),
        weight("se1.w", 2, 4, 1, 1),
        weight("se1.b", 2, scale=0.1),
        weight("se2.w", 4, 2, 1, 1),
        weight("se2.b", 4, scale=0.1),
        weight("fc.w", 3, 4, scale=0.2),
        weight("fc.b", 3, scale=0.1),
    ]
    m = model("export18", nodes, [image_input("x", "batch", 3, 9, 9)],
              image_input("probs", "batch", 3), inits, 18)
    x = rng.random((2, 3, 9, 9), dtype=np.float32)
    save("export18", m, x, extra=["excited"])


def shape_ops():
    """What exporters write around shapes, and its few uses on computed values, at opset
    17: `F.normalize` over the pixels (ReduceL2, Clip, Expand of a computed value to the
    Shape of another, Div), an Expand that changes nothing (`expand_as` of the same
    shape), Pow by 2, Sqrt and Reciprocal of computed values, and two Reshape targets
    folded from shape arithmetic: Where(Equal(t, 0), Shape(x)[0:2], t) (a 0 kept from the
    input's shape) and Concat(ConstantOfShape, ReduceProd(Shape(x)[1:])) passed through
    Greater, Neg, Abs, Where and a Gather by a Range. Seeded on its own."""
    rng = np.random.default_rng(1717)
    weight = lambda name, *shape, scale=0.5: numpy_helper.from_array(
        (rng.standard_normal(shape) * scale).astype(np.float32), name)
    n = helper.make_node
    minus_one = numpy_helper.from_array(np.array([-1], np.int64), "fill")
    nodes = [
        n("Conv", ["x", "c.w", "c.b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Shape", ["c"], ["c_shape"], name="c_shape"),
        n("Expand", ["c", "c_shape"], ["c_same"], name="expand_same"),
        n("ReduceL2", ["c"], ["norm"], name="norm", axes=[2, 3], keepdims=1),
        n("Clip", ["norm", "eps"], ["norm_safe"], name="clip"),
        n("Expand", ["norm_safe", "c_shape"], ["norm_wide"], name="expand_norm"),
        n("Div", ["c_same", "norm_wide"], ["d"], name="normalize"),
        n("Pow", ["d", "two"], ["d2"], name="square"),
        n("Add", ["d2", "one"], ["d2p1"], name="plus_one"),
        n("Sqrt", ["d2p1"], ["root"], name="root"),
        n("Reciprocal", ["root"], ["inv"], name="inverse"),
        n("Mul", ["d", "inv"], ["y0"], name="soft_sign"),
        # Target one: [0, -1] with the 0 replaced by the batch size.
        n("Shape", ["y0"], ["y_shape"], name="y_shape"),
        n("Gather", ["y_shape", "first_two"], ["y_n_c"], name="y_n_c", axis=0),
        n("Equal", ["raw_target", "zero"], ["is_zero"], name="is_zero"),
        n("Where", ["is_zero", "y_n_c", "raw_target"], ["target1"], name="target1"),
        n("Reshape", ["y0", "target1"], ["flat1"], name="flat1"),
        # Target two: [-1, C·H·W].
        n("Slice", ["y_shape", "one_i", "four_i"], ["chw"], name="chw"),
        n("ReduceProd", ["chw"], ["features"], name="features", keepdims=1),
        n("ConstantOfShape", ["one_i"], ["minus"], name="minus", value=minus_one),
        n("Concat", ["minus", "features"], ["t2"], name="t2", axis=0),
        n("Greater", ["t2", "zero"], ["positive"], name="positive"),
        n("Abs", ["t2"], ["t2_abs"], name="t2_abs"),
        n("Neg", ["t2_abs"], ["t2_neg"], name="t2_neg"),
        n("Where", ["positive", "t2", "t2_neg"], ["t2_signed"], name="t2_signed"),
        n("Range", ["zero_s", "two_s", "one_s"], ["order"], name="order"),
        n("Gather", ["t2_signed", "order"], ["target2"], name="target2", axis=0),
        n("Reshape", ["y0", "target2"], ["flat2"], name="flat2"),
        n("Add", ["flat1", "flat2"], ["flat"], name="both"),
        n("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        n("Softmax", ["logits"], ["probs"], name="softmax"),
    ]
    inits = [
        weight("c.w", 4, 2, 3, 3),
        weight("c.b", 4, scale=0.1),
        floats("eps", 1e-6),
        floats("two", 2.0),
        floats("one", 1.0),
        ints("first_two", [0, 1]),
        ints("raw_target", [0, -1]),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        ints("one_i", [1]),
        ints("four_i", [4]),
        numpy_helper.from_array(np.array(0, np.int64), "zero_s"),
        numpy_helper.from_array(np.array(2, np.int64), "two_s"),
        numpy_helper.from_array(np.array(1, np.int64), "one_s"),
        weight("fc.w", 3, 144, scale=0.3),
        weight("fc.b", 3, scale=0.1),
    ]
    m = model("shape_ops", nodes, [image_input("x", "batch", 2, 6, 6)],
              image_input("probs", "batch", 3), inits, 17)
    x = rng.random((2, 2, 6, 6), dtype=np.float32)
    save("shape_ops", m, x, extra=["d"])


def upsample9():
    """Upsample at opset 9 (Resize's predecessor, which older exporters wrote), nearest and
    linear, by 2 × 3, and the ops that took attributes then where they take inputs now:
    Pad (pads, value), Slice (starts, ends, axes), Clip (min, max). Seeded on its own."""
    rng = np.random.default_rng(9)
    weight = lambda name, *shape, scale=0.5: numpy_helper.from_array(
        (rng.standard_normal(shape) * scale).astype(np.float32), name)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "c.w", "c.b"], ["c0"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Pad", ["c0"], ["padded"], name="pad", pads=[0, 0, 1, 0, 0, 0, 0, 2], value=0.5),
        n("Slice", ["padded"], ["sliced"], name="slice", starts=[1], ends=[3], axes=[1]),
        n("Clip", ["sliced"], ["c"], name="clip", min=-0.5, max=0.8),
        n("Upsample", ["c", "scales"], ["near"], name="nearest", mode="nearest"),
        n("Upsample", ["c", "scales"], ["lin"], name="linear", mode="linear"),
        n("Mul", ["near", "lin"], ["both"], name="both"),
        n("Conv", ["both", "c2.w"], ["c2"], name="conv2", kernel_shape=[3, 3]),
        n("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        n("Flatten", ["g"], ["f"], name="flatten"),
        n("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        n("Softmax", ["logits"], ["probs"], name="softmax"),
    ]
    inits = [
        weight("c.w", 3, 2, 3, 3),
        weight("c.b", 3, scale=0.1),
        floats("scales", [1.0, 1.0, 2.0, 3.0]),
        weight("c2.w", 4, 2, 3, 3),
        weight("fc.w", 3, 4),
        weight("fc.b", 3, scale=0.1),
    ]
    m = model("upsample9", nodes, [image_input("x", "batch", 2, 5, 4)],
              image_input("probs", "batch", 3), inits, 9)
    x = rng.random((2, 2, 5, 4), dtype=np.float32)
    save("upsample9", m, x, extra=["both", "near", "lin", "c"])


def quantized():
    """A float CNN quantized by onnxruntime's `quantize_static` in its QDQ form: weights
    per output channel behind DequantizeLinear, activations uint8 through
    QuantizeLinear/DequantizeLinear pairs (the ReLU and the ReLU6 folded into their clamps),
    a residual Add, global pooling, a Linear and its softmax (its probabilities rounded too,
    which convscope leaves out); compared with ONNX Runtime running the QDQ graph as written
    (optimizations off: the quantization's own rounding, not an int8 kernel's), up to the
    softmax."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    rng = np.random.default_rng(20261207)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu1"),
        n("Conv", ["r1", "w2", "b2"], ["c2"], name="depthwise", group=6, strides=[2, 2],
          pads=[1, 1, 1, 1]),
        n("Clip", ["c2", "zero", "six"], ["r2"], name="relu6"),
        n("Conv", ["r2", "w3", "b3"], ["c3"], name="pointwise"),
        n("Add", ["c3", "r2"], ["sum"], name="residual"),
        n("GlobalAveragePool", ["sum"], ["pooled"], name="pool"),
        n("Flatten", ["pooled"], ["flat"], name="flatten"),
        n("Gemm", ["flat", "w4", "b4"], ["logits"], name="fc", transB=1),
        n("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    inits = [weight("w1", 6, 3, 3, 3), weight("b1", 6, scale=0.1),
             weight("w2", 6, 1, 3, 3), weight("b2", 6, scale=0.1),
             weight("w3", 6, 6, 1, 1), weight("b3", 6, scale=0.1),
             weight("w4", 4, 6), weight("b4", 4, scale=0.1),
             floats("zero", 0.0), floats("six", 6.0)]
    m = model("quantized", nodes, [image_input("x", "N", 3, 8, 8)],
              image_input("probs", "N", 4), inits, 13)

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rng.random((1, 3, 8, 8), dtype=np.float32)}
                                 for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    float_path, path = f"{OUT}/quantized.float.onnx", f"{OUT}/quantized.onnx"
    onnx.save(m, float_path)
    # uint8 throughout, weights asymmetric (a zero point per channel): the zero points and
    # the unsigned range are exercised (the default, int8, is the same with other numbers).
    quantize_static(float_path, path, Calibration(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QUInt8, extra_options={"WeightSymmetric": False})
    os.remove(float_path)
    x = rng.random((2, 3, 8, 8), dtype=np.float32)
    # The quantizer rounds the probabilities too; convscope shows the softmax's own.
    probe = onnx.load(path)
    softmax = [node for node in probe.graph.node if node.op_type == "Softmax"][0].output[0]
    probe.graph.output[0].name = softmax
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": x})[0]
    np.save(f"{OUT}/quantized.input.npy", x)
    np.save(f"{OUT}/quantized.output.npy", out)
    print(f"quantized: {os.path.getsize(path)} bytes, output {out.shape}, sum {out.sum():.6f}")


def sample_model():
    """The bundled sample model as PyTorch would export it, run on random inputs."""
    path = "sample_models/mnist_cnn.safetensors"
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    graph = json.loads(header["__metadata__"]["convscope.model"])["graph"]
    assert [n["name"] for n in graph["nodes"]] == [
        "conv2d_1", "conv2d_2", "max_pooling2d_1", "dropout_1", "flatten_1", "dense_1",
        "dropout_2", "preds"], "the sample model's layers changed; update this export"
    w = load_file(path)
    n = helper.make_node
    nodes = [
        n("Conv", ["input_1", "conv2d_1.kernel", "conv2d_1.bias"], ["c1"], name="conv2d_1"),
        n("Relu", ["c1"], ["r1"], name="relu_1"),
        n("Conv", ["r1", "conv2d_2.kernel", "conv2d_2.bias"], ["c2"], name="conv2d_2"),
        n("Relu", ["c2"], ["r2"], name="relu_2"),
        n("MaxPool", ["r2"], ["p"], name="max_pooling2d_1", kernel_shape=[2, 2],
          strides=[2, 2]),
        n("Flatten", ["p"], ["f"], name="flatten_1"),
        # Gemm reads B as [out, in] with transB=1, as PyTorch's Linear stores it.
        n("Gemm", ["f", "dense_1.kernel.t", "dense_1.bias"], ["d1"], name="dense_1", transB=1),
        n("Relu", ["d1"], ["r3"], name="relu_3"),
        n("Gemm", ["r3", "preds.kernel.t", "preds.bias"], ["logits"], name="preds", transB=1),
        n("Softmax", ["logits"], ["probs"], name="softmax"),
    ]
    inits = [numpy_helper.from_array(w[k], k) for k in
             ["conv2d_1.kernel", "conv2d_1.bias", "conv2d_2.kernel", "conv2d_2.bias",
              "dense_1.bias", "preds.bias"]]
    inits += [numpy_helper.from_array(np.ascontiguousarray(w[k].T), f"{k}.t")
              for k in ["dense_1.kernel", "preds.kernel"]]
    m = model("mnist_cnn", nodes, [image_input("input_1", "N", 1, 28, 28)],
              image_input("probs", "N", 10), inits, 17)
    x = RNG.random((3, 1, 28, 28), dtype=np.float32)
    out, _ = run(m, x)
    np.save(f"{OUT}/sample_model.input.npy", x)
    np.save(f"{OUT}/sample_model.output.npy", out)
    print(f"sample_model: output {out.shape}, sum {out.sum():.6f}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:]:
        # Named fixtures only, e.g. `activations` (those with their own seed rebuild alone).
        for name in sys.argv[1:]:
            globals()[name]()
        sys.exit()
    torch_chain()
    keras_nhwc()
    residual()
    ops21()
    activations()
    export18()
    shape_ops()
    upsample9()
    keras_export("keras_gray", 1, lambda tf: keras_chain(tf, 1))
    keras_export("keras_rgb", 3, lambda tf: keras_chain(tf, 3))
    keras_export("keras_dag", 8, keras_dag)
    keras_resized_fixture()
    quantized()
    sample_model()
