"""Builds the Keras fixtures of tests/all/keras.rs with the real Keras.

Made with Python 3.11, tensorflow-cpu 2.21.0, keras 3.15.1 (Keras 3: `.keras` and legacy
`.h5`), tf-keras 2.21.0 (Keras 2: `.h5`), h5py 3.14.0, numpy 2.4.6:

    python3 -m venv /tmp/kerasvenv
    /tmp/kerasvenv/bin/pip install tensorflow-cpu==2.21.0 keras==3.15.1 tf-keras==2.21.0 h5py
    /tmp/kerasvenv/bin/python scripts/make_keras_fixtures.py [MODEL ...]

Writes tests/fixtures/keras/: for each model `<name>.keras`, `<name>.h5` (Keras 3) and
`<name>.k2.h5` (Keras 2), and per Keras family (`k3`, `k2`) the input fed to Keras
(`<name>.input.npy`, NHWC), its probabilities (`<name>.<family>.probs.npy`) and one input
gradient (`<name>.<family>.grad.npy`): the gradient, with respect to the NHWC input of
sample 0, of the score of its top class *before* the softmax (the final Dense's
activation swapped for linear, or the output of the layer before a final Softmax layer),
as convscope's methods define class scores. `expected.json` records, per model, the
class, whether the input is raw 0..255 pixels (models with Rescaling/Normalization) and
what `model.summary()` printed (per-layer name, class, output shape, params; totals).
Weights are random (seeded), batch-norm statistics included, so nothing is an identity.
"""

import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "keras"
K3, K2 = keras, tf_keras


def leaky(K, slope, name=None):
    if K is K3:
        return K.layers.LeakyReLU(negative_slope=slope, name=name)
    return K.layers.LeakyReLU(alpha=slope, name=name)


def mnist_cnn(K):
    """The article's network, with fewer filters and units."""
    L = K.layers
    return K.Sequential(
        [
            K.Input((28, 28, 1)),
            L.Conv2D(2, 3, activation="relu", name="conv2d"),
            L.Conv2D(4, 3, activation="relu", name="conv2d_1"),
            L.MaxPooling2D(2, name="max_pooling2d"),
            L.Dropout(0.25, name="dropout"),
            L.Flatten(name="flatten"),
            L.Dense(8, activation="relu", name="dense"),
            L.Dropout(0.5, name="dropout_1"),
            L.Dense(10, activation="softmax", name="dense_1"),
        ],
        name="mnist_cnn",
    )


def residual(K):
    """Functional: residual Add, batch norm, a nested Sequential, Concatenate, pooling."""
    L = K.layers
    image = K.Input((10, 10, 1), name="image")
    x = L.Conv2D(4, 3, padding="same", name="stem")(image)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(4, 3, padding="same", activation="relu", name="branch")(x)
    added = L.Add(name="add")([x, y])
    block = K.Sequential(
        [
            K.Input((10, 10, 4)),
            L.Conv2D(3, 1, name="block_conv"),
            L.BatchNormalization(name="block_bn"),
            leaky(K, 0.1, name="block_leaky"),
        ],
        name="block",
    )
    z = block(added)
    x = L.Concatenate(name="concat")([added, z])
    x = L.AveragePooling2D(2, name="avg_pool")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(5, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="residual")


def rgb(K):
    """3-channel input with Rescaling and Normalization in the model."""
    L = K.layers
    image = K.Input((12, 12, 3), name="rgb_image")
    x = L.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(image)
    x = L.Normalization(mean=[0.1, -0.2, 0.05], variance=[0.5, 0.8, 1.2], name="norm")(x)
    x = L.Conv2D(4, 3, activation="relu", name="conv_a")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Conv2D(6, 3, name="conv_b")(x)
    x = L.ReLU(max_value=6.0, name="relu6")(x)
    x = L.Flatten(name="flatten")(x)
    out = L.Dense(4, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="rgb")


def strided(K):
    """padding="same" with strides, zero padding, depthwise/separable/grouped/dilated convs."""
    L = K.layers
    image = K.Input((17, 17, 1), name="image")
    x = L.ZeroPadding2D(((1, 0), (2, 1)), name="pad")(image)
    x = L.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="down")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu", name="dw")(x)
    x = L.SeparableConv2D(6, 3, strides=2, padding="same", activation="relu", name="sep")(x)
    x = L.Conv2D(4, 3, padding="same", dilation_rate=2, groups=2, name="grouped")(x)
    x = L.MaxPooling2D(2, padding="same", name="pool")(x)
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    x = L.Dense(3, name="scores")(x)
    out = L.Softmax(name="softmax")(x)
    return K.Model(image, out, name="strided")


def reshape(K):
    """Flatten into Reshape and Concatenate (not a Dense), and into a Dense behind
    dropout and an activation."""
    L = K.layers
    image = K.Input((6, 6, 2), name="image")
    c = L.Conv2D(3, 3, activation="relu", name="c")(image)
    f = L.Flatten(name="f")(c)
    r = L.Reshape((4, 4, 3), name="r")(f)
    r = L.Conv2D(2, 3, name="c2")(r)
    f2 = L.Flatten(name="f2")(r)
    g = L.GlobalAveragePooling2D(name="gap")(c)
    f3 = L.Flatten(name="f3")(c)
    d = L.Dropout(0.3, name="drop")(f3)
    d = L.Activation("tanh", name="act")(d)
    d = L.Dense(3, name="d")(d)
    x = L.Concatenate(name="cat")([f2, g, d])
    out = L.Dense(4, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="reshape")


def adapted(K):
    """A Normalization adapted to data (its statistics are weights) at the input."""
    L = K.layers
    image = K.Input((8, 8, 3), name="image")
    norm = L.Normalization(name="norm")
    norm.adapt(np.random.default_rng(7).uniform(0, 255, (16, 8, 8, 3)).astype(np.float32))
    x = norm(image)
    x = L.Conv2D(3, 3, activation="relu", name="conv")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(2, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="adapted")


def activations(K):
    """Every activation beyond ReLU Keras names, fused into Conv2D and Dense layers, plus
    the ELU layer (hard_silu in Keras 3 only: Keras 2 has none)."""
    L = K.layers
    hard = "hard_silu" if K is K3 else "hard_sigmoid"
    return K.Sequential(
        [
            K.Input((8, 8, 1)),
            L.Conv2D(3, 3, activation="elu", name="elu"),
            L.Conv2D(3, 3, padding="same", activation="selu", name="selu"),
            L.Conv2D(3, 3, padding="same", activation="gelu", name="gelu"),
            L.Conv2D(3, 3, padding="same", activation="swish", name="swish"),
            L.ELU(alpha=0.5, name="elu_layer"),
            L.Conv2D(3, 3, padding="same", activation=hard, name="hard"),
            L.Flatten(name="flatten"),
            L.Dense(8, activation="softplus", name="softplus"),
            L.Dense(8, activation="softsign", name="softsign"),
            L.Dense(8, activation="hard_sigmoid", name="hard_sigmoid"),
            L.Dense(8, activation="exponential", name="exponential"),
            L.Dense(5, activation="softmax", name="probs"),
        ],
        name="activations",
    )


def squeeze_excite(K):
    """EfficientNet's stem (Rescaling, Normalization, then a per-channel Rescaling as for
    its ImageNet weights) and squeeze-excite gates: a Multiply by a [1, 1, C] tensor (GAP,
    Reshape, two 1x1 convs) and by a [C] vector (GAP, Dense)."""
    L = K.layers
    image = K.Input((12, 12, 3), name="image")
    x = L.Rescaling(1 / 255, name="rescale")(image)
    x = L.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.052, 0.05, 0.051], name="norm")(x)
    x = L.Rescaling([0.9, 1.1, 1.05], offset=0.1, name="rescale_std")(x)
    x = L.Conv2D(6, 3, strides=2, padding="same", activation="swish", name="stem")(x)
    s = L.GlobalAveragePooling2D(name="se_squeeze")(x)
    s = L.Reshape((1, 1, 6), name="se_reshape")(s)
    s = L.Conv2D(2, 1, activation="swish", name="se_reduce")(s)
    s = L.Conv2D(6, 1, activation="sigmoid", name="se_expand")(s)
    x = L.Multiply(name="se_excite")([x, s])
    x = L.Conv2D(4, 3, padding="same", name="project")(x)
    v = L.GlobalAveragePooling2D(name="gate_squeeze")(x)
    v = L.Dense(4, activation="sigmoid", name="gate")(v)
    x = L.Multiply(name="gated")([x, v])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(5, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="squeeze_excite")


def ops_layers(K):
    """Arithmetic written as Python operators and ops on tensors, which Keras 3 saves as
    ops layers and tf-keras as TFOpLambda: hard-swish as MobileNetV3 writes it (Keras 3's
    `x * relu6(x + 3) / 6`, tf-keras's Multiply of x and `relu6(x + 3) * (1 / 6)`), a
    constant on either side (`3.0 - x`, `2.0 / x`), maximum and minimum, and constants
    per channel, per pixel and on a vector."""
    L = K.layers
    ops = keras.ops if K is K3 else tf.math
    image = K.Input((6, 6, 2), name="image")
    x = L.Conv2D(3, 3, padding="same", name="conv")(image)
    if K is K3:
        hs = x * L.ReLU(6.0, name="relu6")(x + 3.0) / 6.0
    else:
        hs = L.Multiply(name="hard_swish")([x, L.ReLU(6.0, name="relu6")(x + 3.0) * (1.0 / 6.0)])
    y = 3.0 - hs
    y = 2.0 / (L.ReLU(name="relu")(y) + 1.0)
    y = ops.maximum(y, 0.4)
    y = ops.minimum(1.5, y)
    y = y * np.array([0.5, -1.0, 2.0], dtype="float32")
    y = y + np.linspace(-1, 1, 6 * 6 * 3).reshape(1, 6, 6, 3).astype("float32")
    y = L.Conv2D(4, 3, strides=2, name="conv2")(y)
    v = L.GlobalAveragePooling2D(name="gap")(y)
    v = v - np.array([0.1, 0.2, -0.3, 0.0], dtype="float32")
    v = v * 2.0
    out = L.Dense(3, activation="softmax", name="probs")(v)
    return K.Model(image, out, name="ops_layers")


def merges(K):
    """Subtract, Average, Maximum and Minimum merges, Multiply and Add of three inputs."""
    L = K.layers
    image = K.Input((8, 8, 1), name="image")
    a = L.Conv2D(3, 3, padding="same", name="a")(image)
    b = L.Conv2D(3, 3, padding="same", name="b")(image)
    c = L.Conv2D(3, 3, padding="same", name="c")(image)
    d = L.Subtract(name="diff")([a, b])
    m = L.Average(name="mean")([a, b, c])
    hi = L.Maximum(name="hi")([d, m, c])
    lo = L.Minimum(name="lo")([a, m])
    p = L.Multiply(name="product")([hi, lo, b])
    x = L.Add(name="sum")([p, d, lo])
    x = L.Conv2D(4, 3, strides=2, name="conv")(x)
    x = L.Flatten(name="flatten")(x)
    out = L.Dense(3, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="merges")


def convnext(K):
    """ConvNeXt's block as keras.applications builds it: LayerNormalization over channels,
    a depthwise 7x7, Dense on every pixel (pointwise) with GELU, LayerScale, a residual
    Add, and the head's LayerNormalization on the pooled vector; then NASNet's
    Cropping2D and UpSampling2D, nearest and bilinear."""
    L = K.layers
    if K is K3:
        from keras.src.applications.convnext import LayerScale
    else:
        from tf_keras.src.applications.convnext import LayerScale
    image = K.Input((12, 12, 3), name="image")
    x = L.Conv2D(8, 2, strides=2, name="stem")(image)
    x = L.LayerNormalization(epsilon=1e-6, name="stem_norm")(x)
    y = L.DepthwiseConv2D(7, padding="same", name="depthwise")(x)
    y = L.LayerNormalization(epsilon=1e-6, name="norm")(y)
    y = L.Dense(32, name="pointwise_up")(y)
    y = L.Activation("gelu", name="gelu")(y)
    y = L.Dense(8, name="pointwise_down")(y)
    y = LayerScale(1e-6, 8, name="layer_scale")(y)
    x = L.Add(name="residual")([x, y])
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.Cropping2D(((1, 2), (0, 1)), name="crop")(x)
    x = L.UpSampling2D(2, name="up_nearest")(x)
    x = L.UpSampling2D((2, 3), interpolation="bilinear", name="up_bilinear")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.LayerNormalization(epsilon=1e-6, name="head_norm")(x)
    out = L.Dense(5, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="convnext")


def decoder(K):
    """Conv2DTranspose as decoders use it (same and valid padding, a kernel smaller than
    its stride, an output padding, an even kernel, a fused activation) after a
    GroupNormalization."""
    L = K.layers
    image = K.Input((5, 4, 3), name="image")
    x = L.Conv2D(6, 3, name="encode")(image)
    x = L.GroupNormalization(groups=3, name="group_norm")(x)
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu", name="up_same")(x)
    x = L.Conv2DTranspose(4, 2, strides=3, name="up_valid")(x)
    x = L.Conv2DTranspose(5, 3, strides=2, padding="same", output_padding=1, name="up_padded")(x)
    x = L.Conv2DTranspose(5, 4, strides=2, padding="same", name="up_even")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(5, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="decoder")


def inception_resnet(K):
    """InceptionResNetV2's block: branches concatenated, a linear 1x1 conv, the shortcut
    plus that branch scaled by keras.applications' CustomScaleLayer, then a ReLU."""
    L = K.layers
    if K is K3:
        from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
    else:
        from tf_keras.src.applications.inception_resnet_v2 import CustomScaleLayer
    image = K.Input((8, 8, 3), name="image")
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="stem")(image)
    a = L.Conv2D(4, 1, activation="relu", name="branch_0")(x)
    b = L.Conv2D(4, 1, activation="relu", name="branch_1a")(x)
    b = L.Conv2D(4, 3, padding="same", activation="relu", name="branch_1b")(b)
    mixed = L.Concatenate(name="mixed")([a, b])
    up = L.Conv2D(6, 1, name="up")(mixed)
    x = CustomScaleLayer(0.17, name="scaled_sum")([x, up])
    x = L.Activation("relu", name="block_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(5, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="inception_resnet")


def augmented(K):
    """The Keras tutorials' model: data augmentation inside it, before the rescaling (active
    only in training), noise and dropout layers, a PReLU per channel of an image and of a
    vector."""
    L = K.layers
    image = K.Input((10, 10, 3), name="image")
    x = L.RandomFlip("horizontal", name="flip")(image)
    x = L.RandomRotation(0.1, name="rotate")(x)
    x = L.RandomZoom(0.1, name="zoom")(x)
    x = L.Rescaling(1.0 / 255, name="rescale")(x)
    x = L.GaussianNoise(0.1, name="noise")(x)
    x = L.Conv2D(6, 3, strides=2, padding="same", name="conv")(x)
    x = L.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = L.GaussianDropout(0.1, name="noisy_drop")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(8, name="hidden")(x)
    x = L.PReLU(name="prelu_vector")(x)
    out = L.Dense(5, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="augmented")


def resized(K):
    """Resizing layers inside the model (TensorFlow's tutorials resize, then rescale, before
    the first conv): a centre crop by odd margins, bilinear up by uneven factors, the
    rescaling after them (folded into the input description), then nearest down."""
    L = K.layers
    image = K.Input((9, 11, 3), name="image")
    x = L.CenterCrop(8, 8, name="crop")(image)
    x = L.Resizing(16, 12, name="up")(x)
    x = L.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(x)
    x = L.Conv2D(4, 3, activation="relu", name="conv")(x)
    x = L.Resizing(5, 7, interpolation="nearest", name="down")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(5, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="resized")


def cropped(K):
    """Crops that resize: RandomCrop, which Keras 3 passes through at inference and tf-keras
    smart-resizes (the centred 9×9 crop of the 9×12 image, bilinear to 6×6), the rescaling
    after it folded into the input description; a CenterCrop larger than its input
    (smart-resized in both: Keras 3's 7×10 map cut to 7×7 then up to 8×8, tf-keras's 4×4
    up to 8×8). The pooling makes either size fit the dense layer. UnitNormalization of
    each pixel's channels and of the pooled vector."""
    L = K.layers
    image = K.Input((9, 12, 3), name="image")
    x = L.RandomCrop(6, 6, name="random_crop")(image)
    x = L.Rescaling(1.0 / 255, name="rescale")(x)
    x = L.Conv2D(4, 3, name="conv")(x)
    x = L.CenterCrop(8, 8, name="grow")(x)
    x = L.UnitNormalization(name="pixel_norm")(x)
    x = L.Conv2D(6, 3, activation="relu", name="conv_1")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.UnitNormalization(name="vector_norm")(x)
    out = L.Dense(5, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="cropped")


def shuffled(K):
    """ShuffleNet's channel shuffle as Keras layers (Reshape to [H, W, G, C/G], Permute,
    Reshape back), then Permutes of an image's axes: height and width swapped before a conv
    of a 3×2 kernel, and channels first before the flatten, so that any wrong order changes
    the numbers."""
    L = K.layers
    image = K.Input((6, 7, 3), name="image")
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="conv")(image)
    x = L.Reshape((6, 7, 2, 3), name="groups")(x)
    x = L.Permute((1, 2, 4, 3), name="shuffle")(x)
    x = L.Reshape((6, 7, 6), name="ungroup")(x)
    x = L.DepthwiseConv2D(3, name="depthwise")(x)
    x = L.Permute((2, 1, 3), name="transpose")(x)
    x = L.Conv2D(4, (3, 2), activation="relu", name="conv_1")(x)
    x = L.Permute((3, 1, 2), name="channels_first")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(5, activation="softmax", name="probs")(x)
    return K.Model(image, out, name="shuffled")


def segmenter(K):
    """A segmentation head: a small U-Net whose last Conv2D has a softmax over the classes
    at each pixel. convscope explains each class by its mean over the pixels of the scores
    below that softmax (`class_scores`)."""
    i = K.Input((12, 10, 3))
    x = K.layers.Conv2D(6, 3, padding="same", activation="relu")(i)
    d = K.layers.MaxPooling2D()(x)
    d = K.layers.Conv2D(8, 3, padding="same", activation="relu")(d)
    u = K.layers.UpSampling2D()(d)
    x = K.layers.Concatenate()([x, u])
    return K.Model(i, K.layers.Conv2D(4, 1, activation="softmax")(x))


def signal(K):
    """A 1-D CNN over a signal of 40 samples and 2 channels, `(L, C)`: Conv1D with same,
    causal and valid padding, a stride and a dilation, a batch norm, a residual Add, max
    and average pools, both global pools and a Flatten (whose order is Keras's, samples
    then channels). convscope takes the signal as a map one row high."""
    L = K.layers
    i = K.Input((40, 2))
    x = L.Conv1D(8, 5, strides=2, padding="same", activation="relu")(i)
    x = L.BatchNormalization()(x)
    x = L.MaxPooling1D(2)(x)
    y = L.Conv1D(8, 3, padding="causal", dilation_rate=2, activation="relu")(x)
    x = L.SpatialDropout1D(0.1)(L.Add()([x, y]))
    x = L.Conv1D(6, 3, padding="valid")(x)
    x = L.AveragePooling1D(2, padding="same")(x)
    pooled = [L.GlobalAveragePooling1D()(x), L.GlobalMaxPooling1D()(x), L.Flatten()(x)]
    return K.Model(i, L.Dense(4, activation="softmax")(L.Concatenate()(pooled)))


def signal_rows(K):
    """A 1-D CNN fed rows of samples, `(L,)`, made a one-channel signal by its first layer
    (`Reshape((L, 1))`), and a Dense's output reshaped to `(L, C)` for a second Conv1D
    between zero padding, upsampling and cropping along the signal."""
    L = K.layers
    i = K.Input((24,))
    x = L.Conv1D(4, 3, padding="same", activation="relu")(L.Reshape((24, 1))(i))
    x = L.Dense(16, activation="relu")(L.Flatten()(x))
    x = L.ZeroPadding1D((1, 2))(L.Reshape((8, 2))(x))
    x = L.Cropping1D((1, 0))(L.UpSampling1D(2)(L.Conv1D(3, 3)(x)))
    return K.Model(i, L.Dense(3, activation="softmax")(L.GlobalMaxPooling1D()(x)))


def unsupported(K):
    L = K.layers
    return K.Sequential(
        [K.Input((4, 4, 2)), L.Reshape((16, 2)), L.LSTM(2, name="memory"), L.Dense(2)],
        name="unsupported",
    )


MODELS = {
    "mnist_cnn": (mnist_cnn, False),
    "residual": (residual, False),
    "rgb": (rgb, True),
    "strided": (strided, False),
    "reshape": (reshape, False),
    "adapted": (adapted, True),
    "activations": (activations, False),
    "squeeze_excite": (squeeze_excite, True),
    "ops_layers": (ops_layers, False),
    "merges": (merges, False),
    "convnext": (convnext, False),
    "decoder": (decoder, False),
    "inception_resnet": (inception_resnet, False),
    "augmented": (augmented, True),
    "resized": (resized, True),
    "cropped": (cropped, True),
    "shuffled": (shuffled, False),
    "segmenter": (segmenter, False),
    "signal": (signal, False),
    "signal_rows": (signal_rows, False),
}


def randomise(model, seed):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        name = getattr(w, "path", w.name)
        shape = tuple(w.shape)
        if "moving_variance" in name or "gamma" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "moving_mean" in name or "beta" in name or "bias" in name:
            value = rng.normal(0.0, 0.2, shape)
        elif "alpha" in name:
            value = rng.uniform(-0.5, 0.5, shape)
        elif "kernel" in name:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            value = rng.normal(0.0, 1.2 / np.sqrt(fan_in), shape)
        else:
            continue
        w.assign(value.astype(np.float32))


def score_model(K, model):
    last = model.layers[-1]
    if isinstance(last, K.layers.Softmax):
        return K.Model(model.inputs, model.layers[-2].output)
    return None


def class_scores(K, model, x):
    """The scores below the model's last softmax: per class, or for a map of them (a
    segmentation's) each class's mean over the pixels."""
    last = model.layers[-1]
    sub = score_model(K, model)
    saved = last.activation if sub is None else None
    if sub is None:
        last.activation = K.activations.linear
    scores = (sub or model)(x, training=False)
    if sub is None:
        last.activation = saved
    return tf.reduce_mean(scores, axis=(1, 2)) if len(scores.shape) == 4 else scores


def scores_gradient(K, model, x, cls):
    xv = tf.Variable(x[:1])
    with tf.GradientTape() as tape:
        s = class_scores(K, model, xv)[0, cls]
    return tape.gradient(s, xv).numpy()[0]


def summary(K, model):
    rows = []
    # Keras 3's summary also lists ops layers (`x + 3.0`), which are operations, not layers.
    for layer in getattr(model, "operations", model.layers):
        shape = layer.output.shape if K is K3 else layer.output_shape
        if isinstance(shape, list):  # Keras 2's InputLayer
            (shape,) = shape
        rows.append(
            {
                "name": layer.name,
                "class": type(layer).__name__,
                "output_shape": [d for d in tuple(shape)[1:]],
                "params": int(layer.count_params()) if isinstance(layer, K.layers.Layer) else 0,
            }
        )
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    return {"layers": rows, "total": total, "trainable": trainable, "non_trainable": total - trainable}


def main(only):
    """Builds every model, or those named in `only` (the others' files and entries stay)."""
    OUT.mkdir(parents=True, exist_ok=True)
    previous = json.loads((OUT / "expected.json").read_text()) if only else {"models": {}}
    expected = {
        "versions": {
            "keras": keras.__version__,
            "tf_keras": tf_keras.__version__,
            "tensorflow": tf.__version__,
            "h5py": h5py.__version__,
            "numpy": np.__version__,
        },
        "models": previous["models"],
    }
    for i, (name, (build, raw)) in enumerate(MODELS.items()):
        if only and name not in only:
            continue
        rng = np.random.default_rng(100 + i)
        entry = {"raw_pixels": raw}
        x = None
        for family, K in (("k3", K3), ("k2", K2)):
            K.utils.set_random_seed(i)
            model = build(K)
            randomise(model, seed=10 + i)
            if x is None:
                shape = (3,) + tuple(model.inputs[0].shape[1:])
                x = rng.uniform(0, 255 if raw else 1, shape).astype(np.float32)
                np.save(OUT / f"{name}.input.npy", x)
            probs = model(x, training=False).numpy()
            if probs.ndim == 4:
                probs = tf.nn.softmax(class_scores(K, model, x)).numpy()
            cls = int(np.argmax(probs[0]))
            grad = scores_gradient(K, model, x, cls)
            np.save(OUT / f"{name}.{family}.probs.npy", probs.astype(np.float32))
            np.save(OUT / f"{name}.{family}.grad.npy", grad.astype(np.float32))
            entry[family] = {"class": cls, "summary": summary(K, model)}
            if K is K3:
                model.save(OUT / f"{name}.keras")
                model.save(OUT / f"{name}.h5")
            else:
                model.save(OUT / f"{name}.k2.h5")
        expected["models"][name] = entry
        print(name, "ok")
    if not only:
        unsupported(K3).save(OUT / "unsupported.keras")
        cyclic()
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


def cyclic():
    """`adapted.keras` with its weights' first layer group linked to the container above
    it (`layers/conv2d/layers` -> `layers`): a loop a reader must not follow forever."""
    import io
    import zipfile

    src = zipfile.ZipFile(OUT / "adapted.keras")
    weights = io.BytesIO(src.read("model.weights.h5"))
    with h5py.File(weights, "r+") as f:
        first = f["layers"][sorted(f["layers"].keys())[0]]
        first["layers"] = f["layers"]
    with zipfile.ZipFile(OUT / "cyclic.keras", "w", zipfile.ZIP_DEFLATED) as out:
        for name in src.namelist():
            data = weights.getvalue() if name == "model.weights.h5" else src.read(name)
            out.writestr(name, data)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
