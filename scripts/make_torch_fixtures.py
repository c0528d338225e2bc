#!/usr/bin/env python3
"""Writes the PyTorch-exported ONNX fixtures under tests/fixtures/torch/.

Each fixture is a small PyTorch module with one of the op patterns of torchvision's CNNs
(ceil-mode pools, ShuffleNet's channel split and shuffle, ConvNeXt's channels-last
LayerNorm and Linear, squeeze-excite gates, EfficientNet's SiLU blocks, upsampling, group/instance norm, transposed
convolutions) or of what people build on them (CBAM's attention, the official ConvNeXt's
channels-first LayerNorm written out, L2-normalised features and reductions that drop their
axes, GCNet's and non-local blocks' products of computed values, EdgeNeXt's position table
and Linear over tokens, attention that unbinds q, k and v from before the batch axis,
attention on values whose batch axis folds in the heads or patches, windows and strided
slices of computed values, `torch.einsum`, MViTv2's heads pooled as images, assignments
to slices, `nn.MultiheadAttention`'s tokens with the batch second), exported by each of
PyTorch's routes:

- `default`: `torch.onnx.export(model, (x,), path)`, the dynamo exporter (weights in
  `path + ".data"` when it chooses so);
- `legacy`: `dynamo=False` at its default opset;
- `opset13`: `dynamo=False, opset_version=13`.

Fixtures in `DYNAMIC` are also exported with an open batch size (`dynamic`: `dynamo=False`
with `dynamic_axes` on the batch), where the exporter computes reshape targets such as
`[B·heads, N, d]` from `Shape` at run time.

Beside them: `<name>.input.npy` (NCHW float32, 2 samples), `<name>.probs.npy` (the
module's softmax output) and `<name>.grad.npy`: the gradient, with respect to the input of
sample 0, of its top class's score *before* the softmax, as convscope's methods define
class scores. Weights are random (seeded) with batch-norm statistics away from the
identity, so nothing is trivially zero.

Run from the repository root (versions used for the committed files: torch 2.15.0,
onnx 1.23.2, onnxscript 0.7.2, numpy 2.4.6, Python 3.11.7):
    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch onnx onnxscript numpy
    /tmp/torchvenv/bin/python scripts/make_torch_fixtures.py [NAME ...]
"""

import math
import os
import pathlib
import sys
import warnings

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "torch"
ROUTES = {
    "default": {},
    "legacy": {"dynamo": False},
    "opset13": {"dynamo": False, "opset_version": 13},
}


def randomise(module, seed):
    """Seeded weights, with batch-norm statistics that are not an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d)):
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return module.eval()


class Classifier(nn.Module):
    """A fixture: `logits(x)`, the class scores, under a softmax."""

    def forward(self, x):
        return F.softmax(self.logits(x), dim=1)


class Head(nn.Module):
    """Global average pool and Linear: the scores most fixtures end with."""

    def __init__(self, channels, classes=5):
        super().__init__()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class Pools(Classifier):
    """GoogLeNet's and SqueezeNet's ceil-mode pools: max with a partial last window, average
    with and without counting padding."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        self.max = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.avg_in = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.avg_out = nn.AvgPool2d(2, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.max_pad = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.head = Head(6)

    def logits(self, x):
        x = self.max(F.relu(self.conv(x)))
        x = self.avg_out(self.avg_in(x)) + 0.0
        return self.head(self.max_pad(x))


def channel_shuffle(x, groups):
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(n, c, h, w)


class Shuffle(Classifier):
    """ShuffleNetV2's units: a stride-2 unit (two branches, concatenated) and a stride-1
    unit (the channels split in half, one half transformed), each followed by the
    shuffle."""

    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        half = c // 2

        def branch(cin, stride):
            return nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(),
            )

        self.down_left, self.down_right = branch(c, 2), branch(c, 2)
        self.unit = branch(half, 1)
        self.head = Head(c)

    def logits(self, x):
        x = F.relu(self.stem(x))
        x = channel_shuffle(torch.cat((self.down_left(x), self.down_right(x)), 1), 2)
        keep, change = x.chunk(2, dim=1)
        x = channel_shuffle(torch.cat((keep, self.unit(change)), 1), 2)
        return self.head(x)


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt LayerNorm2d: LayerNorm over channels, by permuting."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXt(Classifier):
    """torchvision's ConvNeXt: a patchify stem with LayerNorm2d, one block (depthwise 7×7,
    channels-last LayerNorm, Linear, GELU, Linear, layer scale, residual), and the head
    (LayerNorm2d after pooling, Flatten, Linear)."""

    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 4, stride=4), LayerNorm2d(c, eps=1e-6))
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.up, self.down = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, c).view(c, 1, 1))
        self.head_norm = LayerNorm2d(c, eps=1e-6)
        self.fc = nn.Linear(c, 5)

    def logits(self, x):
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.down(F.gelu(self.up(self.norm(y)))).permute(0, 3, 1, 2)
        x = x + self.scale * y
        x = self.head_norm(F.adaptive_avg_pool2d(x, 1))
        return self.fc(torch.flatten(x, 1))


class Upsample(Classifier):
    """Decoder-style resampling: nearest ×2 (PyTorch's default mode), bilinear ×2 with
    and without aligned corners, and bilinear to a size that is not a multiple."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, stride=2), nn.Conv2d(4, 4, 3)
        self.head = Head(4)

    def logits(self, x):
        x = F.interpolate(F.relu(self.a(x)), scale_factor=2.0)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear")
        x = F.interpolate(self.b(x), scale_factor=2.0, mode="bilinear", align_corners=True)
        x = F.interpolate(x, size=(17, 23), mode="bilinear")
        return self.head(x)


class Norms(Classifier):
    """Group and instance normalisation, as style-transfer and detection backbones use
    them."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 6, 3)
        self.group = nn.GroupNorm(4, 8)
        self.instance = nn.InstanceNorm2d(6, affine=True)
        self.head = Head(6)

    def logits(self, x):
        x = F.relu(self.group(self.a(x)))
        return self.head(F.relu(self.instance(self.b(x))))


class Decoder(Classifier):
    """Transposed convolutions: stride 2 with padding and output padding, and grouped with
    dilation."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, stride=2)
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1)
        self.grouped = nn.ConvTranspose2d(4, 6, 2, stride=1, groups=2, dilation=2)
        self.head = Head(6)

    def logits(self, x):
        return self.head(self.grouped(F.relu(self.up(F.relu(self.a(x))))))


class Attention(Classifier):
    """CBAM (Woo et al. 2018): channel attention from the average- and max-pooled
    channels through a shared MLP, then spatial attention from the mean and max over the
    channels (`torch.mean(x, dim=1, keepdim=True)`, `torch.amax`), concatenated, a 7×7
    conv and a sigmoid, multiplied back."""

    def __init__(self, c=8):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.mlp = nn.Sequential(nn.Conv2d(c, 2, 1), nn.ReLU(), nn.Conv2d(2, c, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)
        self.head = Head(c)

    def logits(self, x):
        x = F.relu(self.conv(x))
        avg, peak = F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(peak))
        pooled = torch.cat([torch.mean(x, dim=1, keepdim=True), torch.amax(x, dim=1, keepdim=True)], 1)
        x = x * torch.sigmoid(self.spatial(pooled))
        return self.head(x)


class ChannelsFirstLayerNorm(nn.Module):
    """The official ConvNeXt's `LayerNorm(data_format="channels_first")`, as its code
    writes it (facebookresearch/ConvNeXt, models/convnext.py)."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(c) * 0.5 + 0.75)
        self.bias = nn.Parameter(torch.randn(c) * 0.1)
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class OfficialConvNeXt(Classifier):
    """The official ConvNeXt's stem and downsampling layers: a patchify conv and the
    channels-first LayerNorm; one block (depthwise 7×7, the norm, 1×1 convs around a GELU,
    residual); the norm again after pooling."""

    def __init__(self, c=8):
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, c, 4, stride=4), ChannelsFirstLayerNorm(c)
        self.dw, self.norm = nn.Conv2d(c, c, 7, padding=3, groups=c), ChannelsFirstLayerNorm(c)
        self.up, self.down = nn.Conv2d(c, 4 * c, 1), nn.Conv2d(4 * c, c, 1)
        self.head_norm = ChannelsFirstLayerNorm(c)
        self.fc = nn.Linear(c, 5)

    def logits(self, x):
        x = self.stem_norm(self.stem(x))
        x = x + self.down(F.gelu(self.up(self.norm(self.dw(x)))))
        x = self.head_norm(F.adaptive_avg_pool2d(x, 1))
        return self.fc(torch.flatten(x, 1))


class Normalised(Classifier):
    """Features L2-normalised over the channels (`F.normalize`, an embedding's last step),
    then reductions that drop their axes: a sum over the last axis of a `[C, L]` value,
    and the mean and minimum over the channels of an image."""

    def __init__(self, c=6):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3)
        self.fc = nn.Linear(c + 36, 5)

    def logits(self, x):
        x = F.normalize(torch.tanh(self.conv(x)), dim=1)
        pooled = x.flatten(2).sum(-1)
        spread = x.mean(dim=1) - torch.amin(x, dim=1)
        return self.fc(torch.cat([pooled, spread.flatten(1)], 1))


class MBConv(Classifier):
    """EfficientNet's block: a stem conv, BatchNorm and SiLU; the MBConv expansion (1×1,
    SiLU), depthwise 5×5 (SiLU), a squeeze-and-excitation gate (SiLU, then a sigmoid that
    scales the channels) and the projection, with its residual. The exporters write each
    SiLU as `x · Sigmoid(x)`."""

    def __init__(self, c=8, e=24):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.SiLU())
        self.expand = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.SiLU())
        self.depthwise = nn.Sequential(
            nn.Conv2d(e, e, 5, padding=2, groups=e, bias=False), nn.BatchNorm2d(e), nn.SiLU())
        self.squeeze = nn.Conv2d(e, 4, 1)
        self.excite = nn.Conv2d(4, e, 1)
        self.project = nn.Sequential(nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))
        self.head = Head(c)

    def logits(self, x):
        x = self.stem(x)
        y = self.depthwise(self.expand(x))
        gate = torch.sigmoid(self.excite(F.silu(self.squeeze(y.mean((2, 3), keepdim=True)))))
        return self.head(x + self.project(y * gate))


class Context(Classifier):
    """Products of two computed values: GCNet's global-context block (a 1×1 conv scores
    each pixel, a softmax over the pixels, the features `[B, 1, C, HW]` times those weights
    `[B, 1, HW, 1]`, then a bottleneck MLP with a LayerNorm added to every pixel) and a
    non-local block (Wang et al. 2018: `softmax(θᵀφ)` over the pixels, scaled, times `g`,
    back to a map through a 1×1 conv, residual)."""

    def __init__(self, c=8, inner=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.score = nn.Conv2d(c, 1, 1)
        self.squeeze, self.norm, self.excite = nn.Conv2d(c, inner, 1), nn.LayerNorm([inner, 1, 1]), nn.Conv2d(inner, c, 1)
        self.theta, self.phi, self.g = nn.Conv2d(c, inner, 1), nn.Conv2d(c, inner, 1), nn.Conv2d(c, inner, 1)
        self.out = nn.Conv2d(inner, c, 1)
        self.head = Head(c)

    def logits(self, x):
        x = F.relu(self.conv(x))
        b, c, h, w = x.shape
        weights = self.score(x).view(b, 1, h * w).softmax(dim=-1).unsqueeze(-1)
        context = (x.view(b, c, h * w).unsqueeze(1) @ weights).view(b, c, 1, 1)
        x = x + self.excite(F.relu(self.norm(self.squeeze(context))))
        theta = self.theta(x).view(b, -1, h * w).permute(0, 2, 1)
        phi = self.phi(x).view(b, -1, h * w)
        g = self.g(x).view(b, -1, h * w).permute(0, 2, 1)
        attention = (theta @ phi * 0.5).softmax(dim=-1)
        y = (attention @ g).permute(0, 2, 1).reshape(b, -1, h, w)
        return self.head(x + self.out(y))


class Positions(Classifier):
    """EdgeNeXt's Fourier position table (timm's `PositionalEncodingFourier`: running
    counts of a mask's ones down the rows and across the columns, `cumsum`, scaled to a
    turn, divided by powers of a temperature, sines and cosines interleaved), projected by
    a 1×1 conv and added to the features; then a Linear over the tokens
    `x.reshape(B, C, HW).permute(0, 2, 1)`, back to a map and added."""

    def __init__(self, c=8, hidden=6, temperature=10000):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.hidden, self.temperature = hidden, temperature
        self.project = nn.Conv2d(2 * hidden, c, 1)
        self.linear = nn.Linear(c, c)
        self.head = Head(c)

    def table(self, b, h, w):
        not_mask = ~torch.zeros(b, h, w).bool()
        turn = 2 * math.pi
        y = not_mask.cumsum(1, dtype=torch.float32) / (not_mask.shape[1] + 1e-6) * turn
        x = not_mask.cumsum(2, dtype=torch.float32) / (not_mask.shape[2] + 1e-6) * turn
        dim = torch.arange(self.hidden, dtype=torch.int64).float()
        dim = self.temperature ** (2 * torch.div(dim, 2, rounding_mode="floor") / self.hidden)
        px, py = x[:, :, :, None] / dim, y[:, :, :, None] / dim
        px = torch.stack((px[:, :, :, 0::2].sin(), px[:, :, :, 1::2].cos()), dim=4).flatten(3)
        py = torch.stack((py[:, :, :, 0::2].sin(), py[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)

    def logits(self, x):
        x = F.relu(self.conv(x))
        b, c, h, w = x.shape
        x = x + self.project(self.table(b, h, w))
        tokens = x.reshape(b, c, h * w).permute(0, 2, 1)
        x = x + self.linear(tokens).permute(0, 2, 1).reshape(b, c, h, w)
        return self.head(x)


class Unbind(Classifier):
    """Attention whose q, k and v come from one Linear over the tokens, reshaped and
    permuted so that the q/k/v axis comes before the batch axis, then `unbind(0)`:
    EdgeNeXt's cross-covariance attention (`permute(2, 0, 3, 4, 1)`, L2-normalised q and k,
    a learned temperature per head, attention across the channels) and timm's multi-head
    self-attention (`permute(2, 0, 3, 1, 4)`, attention across the tokens), each followed
    by a Linear projection and added to its input. A learned class token goes before the
    patch tokens (ViT's `cat([cls_token.expand(B, -1, -1), x], dim=1)`) and is scored by a
    Linear of its own (`tokens[:, 0]`), the others as a map."""

    def __init__(self, c=8, heads=2):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.heads = heads
        self.xca_qkv, self.xca_proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.temperature = nn.Parameter(torch.rand(heads, 1, 1) + 0.5)
        self.mhsa_qkv, self.mhsa_proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.head, self.first = Head(c), nn.Linear(c, 5)
        self.class_token = nn.Parameter(torch.randn(1, 1, c))

    def xca(self, x):
        b, n, c = x.shape
        qkv = self.xca_qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 4, 1)
        q, k, v = qkv.unbind(0)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.xca_proj((attention @ v).permute(0, 3, 1, 2).reshape(b, n, c))

    def mhsa(self, x):
        b, n, c = x.shape
        qkv = self.mhsa_qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attention = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(dim=-1)
        return self.mhsa_proj((attention @ v).transpose(1, 2).reshape(b, n, c))

    def logits(self, x):
        x = F.relu(self.conv(x))
        b, c, h, w = x.shape
        tokens = x.reshape(b, c, h * w).permute(0, 2, 1)
        tokens = torch.cat([self.class_token.expand(b, -1, -1), tokens], dim=1)
        tokens = tokens + self.xca(tokens)
        tokens = tokens + self.mhsa(tokens)
        # The class token scored on its own, as ViT scores it, beside the map of the others.
        image = tokens[:, 1:].permute(0, 2, 1).reshape(b, c, h, w)
        return self.head(image) + self.first(tokens[:, 0])


class Folded(Classifier):
    """Values whose batch axis folds in another axis (`[B·heads, …]`). MobileViT's
    unfolding of a map into patches (`[B·C·nh, ph, nw, pw]`, then `[B·P, N, C]`) and back,
    around a transformer layer on the patches: `F.scaled_dot_product_attention` (which the
    dynamo exporter writes with the heads folded into the batch), and LeViT's BatchNorm1d
    of the tokens flattened with the batch. Then BoTNet's attention over the map's pixels
    (`[B·heads, HW, d]`) with relative position logits: a product with a table, padded,
    flattened, padded, reshaped, sliced and expanded back to the pixels' grid."""

    def __init__(self, c=8, heads=2, side=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.heads, self.patch, self.written_out = heads, 2, False
        self.norm = nn.LayerNorm(c)
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.tokens_norm = nn.BatchNorm1d(c)
        self.pixels_qkv = nn.Conv2d(c, 3 * c, 1)
        self.width_table = nn.Parameter(torch.randn(2 * side - 1, c // heads) * 0.3)
        self.height_table = nn.Parameter(torch.randn(2 * side - 1, c // heads) * 0.3)
        self.head = Head(c)

    def transformer(self, x):
        bp, n, c = x.shape
        qkv = self.qkv(self.norm(x)).reshape(bp, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.written_out:
            # Opset 13 predates SDPA's export: the same, with the heads folded as SDPA's
            # decomposition folds them.
            q, k, v = (t.reshape(bp * self.heads, n, c // self.heads) for t in (q, k, v))
            weights = (q @ k.transpose(-1, -2) * (c // self.heads) ** -0.5).softmax(dim=-1)
            attended = (weights @ v).reshape(bp, self.heads, n, c // self.heads)
        else:
            attended = F.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(1, 2).reshape(bp, n, c)
        x = x + self.proj(attended)
        return self.tokens_norm(x.flatten(0, 1)).reshape(bp, n, c)

    def patches(self, x):
        b, c, h, w = x.shape
        p = self.patch
        nh, nw = h // p, w // p
        x = x.reshape(b * c * nh, p, nw, p).transpose(1, 2)
        x = x.reshape(b, c, nh * nw, p * p).transpose(1, 3).reshape(b * p * p, nh * nw, c)
        x = self.transformer(x)
        x = x.reshape(b, p * p, nh * nw, c).transpose(1, 3).reshape(b * c * nh, nw, p, p)
        return x.transpose(1, 2).reshape(b, c, h, w)

    @staticmethod
    def relative(q, table):
        """Logits of q `[B·heads, H, W, d]` against relative positions along W."""
        bh, h, w, _ = q.shape
        x = (q @ table.transpose(-1, -2)).reshape(-1, w, 2 * w - 1)
        x = F.pad(F.pad(x, [0, 1]).flatten(1), [0, w - 1]).reshape(-1, w + 1, 2 * w - 1)
        x = x[:, :w, w - 1 :]
        return x.reshape(bh, h, 1, w, w).expand(-1, -1, h, -1, -1)

    def pixels(self, x):
        b, c, h, w = x.shape
        d = c // self.heads
        q, k, v = torch.split(self.pixels_qkv(x), c, dim=1)
        q = q.reshape(b * self.heads, d, h * w).transpose(-1, -2)
        k = k.reshape(b * self.heads, d, h * w)
        v = v.reshape(b * self.heads, d, h * w).transpose(-1, -2)
        grid = q.reshape(b * self.heads, h, w, d)
        along_w = self.relative(grid, self.width_table).permute(0, 1, 3, 2, 4)
        along_h = self.relative(grid.transpose(1, 2), self.height_table).permute(0, 3, 1, 4, 2)
        positions = (along_w + along_h).reshape(b * self.heads, h * w, h * w)
        attention = ((q @ k) * d**-0.5 + positions).softmax(dim=-1)
        return x + (attention @ v).transpose(-1, -2).reshape(b, c, h, w)

    def logits(self, x):
        x = F.relu(self.conv(x))
        x = x + self.patches(x)
        return self.head(self.pixels(x))


class Windows(Classifier):
    """Positions taken along the axes of computed values: HaloNet's overlapping windows of
    a map (`Tensor.unfold`, which the dynamo exporter writes as a Gather of windows
    of indices), mixed by a Linear over each window; LeViT's subsampling (`x[:, :, 1::2,
    1::2]`, a Slice by steps of 2) and a flip (`torch.flip`, by steps of -1)."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.mix = nn.Linear(c * 9, c)
        self.head = Head(c)

    def logits(self, x):
        x = F.relu(self.conv(x))
        b, c, h, w = x.shape
        windows = x.unfold(2, 3, 2).unfold(3, 3, 2)
        rows, cols = windows.shape[2:4]
        windows = windows.permute(0, 2, 3, 1, 4, 5).reshape(b, rows, cols, c * 9)
        mixed = self.mix(windows).permute(0, 3, 1, 2)
        return self.head(mixed + torch.flip(x[:, :, 1::2, 1::2], dims=[3]))


class Bicubic(Classifier):
    """Bicubic resizing (CrossViT's of its input for the second branch): the input to a
    size, a map by a scale, with and without aligned corners."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.head = Head(c)

    def logits(self, x):
        x = F.interpolate(x, size=(9, 7), mode="bicubic", align_corners=False)
        x = F.relu(self.conv(x))
        x = x + F.interpolate(x, scale_factor=2, mode="bicubic")[:, :, ::2, ::2]
        return self.head(F.interpolate(x, size=(5, 6), mode="bicubic", align_corners=True))


class Stacked(Classifier):
    """Scores of several heads stacked in front of the batch axis and reduced over it
    (CrossViT's `torch.stack([head(x) for …]).mean(0)`), a mean and a max."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.heads = nn.ModuleList(Head(c) for _ in range(3))

    def logits(self, x):
        x = F.relu(self.conv(x))
        scores = [head(x) for head in self.heads]
        return torch.stack(scores).mean(0) + torch.stack(scores[:2]).amax(0)


class Einsums(Classifier):
    """`torch.einsum`, which both exporters keep as ONNX `Einsum`: MobileNetV4's multi-query
    attention (queries by a per-head table, keys and values by matrices, scores and the
    output as products of computed values, the heads merged by a table), MViTv2's relative
    positions (a table per query row: `byhwc,hkc->byhwk`), SAM's (the same of queries whose
    batch axis folds in the heads), a sum over axes, an implicit output and ellipses."""

    def __init__(self, c=6, heads=2, k=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        g = torch.Generator().manual_seed(7)
        table = lambda *shape: nn.Parameter(torch.randn(*shape, generator=g) * 0.4)
        self.query, self.key, self.value = table(heads, k, c), table(c, k), table(c, k)
        self.out, self.rel, self.mix = table(c, heads, k), table(5, 3, k), table(c)
        self.rel_sam = table(5, 4, k)
        self.head = Head(c)

    def logits(self, x):
        x = F.relu(self.conv(x))
        b, c, h, w = x.shape
        tokens = x.reshape(b, c, -1).transpose(1, 2)
        kv = F.avg_pool2d(x, 2).reshape(b, c, -1).transpose(1, 2)
        q = torch.einsum("bnd,hkd->bnhk", tokens, self.query)
        k = torch.einsum("bmd,dk->bmk", kv, self.key)
        attn = (torch.einsum("bnhk,bmk->bnhm", q, k) * 0.5).softmax(-1)
        v = torch.einsum("bmd,dv->bmv", kv, self.value)
        o = torch.einsum("bnhm,bmv->bnhv", attn, v)
        y = torch.einsum("bnhv,dhv->bdn", o, self.out).reshape(b, c, h, w)
        rows = q.reshape(b, h, w, -1, q.shape[-1]).permute(0, 3, 1, 2, 4)
        rel = torch.einsum("byhwc,hkc->byhwk", rows, self.rel)
        y = y + torch.einsum("byhwk->bhw", rel)[:, None] + torch.einsum("bchw,c", x, self.mix)[:, None]
        y = y + torch.einsum("...hw,...hw->...h", x, x)[..., None] * 0.1
        # SAM's relative positions: the heads' queries folded into the batch axis.
        heads = self.query.shape[0]
        folded = q.permute(0, 2, 1, 3).reshape(b * heads, h, w, -1)
        rel = torch.einsum("bhwc,hkc->bhwk", folded, self.rel_sam).reshape(b, heads, h * w, -1)
        y = y + rel.sum(1).mean(-1).reshape(b, 1, h, w)
        return self.head(x + y)


class PooledAttention(Classifier):
    """MViTv2's pooling attention: q, k and v unbound per head, each head's map reshaped
    to an image of its own in the batch axis (`[B·heads, d, H, W]`), pooled by a depthwise
    conv (queries, stride 1; keys, stride 2) or a max pool (values), normalised and
    attended."""

    def __init__(self, c=8, heads=2):
        super().__init__()
        self.heads, d = heads, c // heads
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.qkv = nn.Linear(c, 3 * c)
        self.pool_q = nn.Conv2d(d, d, 3, padding=1, groups=d, bias=False)
        self.pool_k = nn.Conv2d(d, d, 3, stride=2, padding=1, groups=d)
        self.pool_v = nn.MaxPool2d(3, stride=2, padding=1)
        self.norm_q, self.norm_k = nn.LayerNorm(d), nn.LayerNorm(d)
        self.shift = nn.Parameter(torch.linspace(-0.5, 0.5, d).view(1, d, 1, 1))
        self.head = Head(c)

    def pooled(self, x, pool, norm, h, w):
        b = x.shape[0]
        x = x.reshape(b * self.heads, h, w, -1).permute(0, 3, 1, 2)
        # A per-channel shift of the pooled images: their axes must be [B·heads, d, …].
        x = pool(x) + self.shift
        x = x.reshape(b, self.heads, -1, x.shape[-2] * x.shape[-1]).transpose(2, 3)
        return norm(x) if norm is not None else x

    def logits(self, x):
        x = F.relu(self.conv(x))
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        qkv = self.qkv(tokens).reshape(b, h * w, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = self.pooled(q, self.pool_q, self.norm_q, h, w)
        k = self.pooled(k, self.pool_k, self.norm_k, h, w)
        v = self.pooled(v, self.pool_v, None, h, w)
        attn = (q @ k.transpose(-2, -1) * 0.5).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(b, h * w, c)
        return self.head(x + out.transpose(1, 2).reshape(b, c, h, w))


class Assigned(Classifier):
    """Assignments to slices of computed values, which the legacy exporter writes as
    `ScatterND`: MViTv2's `attn[:, :, 1:, 1:] = attn[:, :, 1:, 1:] + rel` (a part, past a
    class token) and the same over a whole map, and a strided part of a feature map."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.rel = nn.Parameter(torch.linspace(-1, 1, 25).view(5, 5))
        self.head = Head(c)

    def logits(self, x):
        x = F.relu(self.conv(x))
        b, c, h, w = x.shape
        attn = x.reshape(b, c, h * w, 1) * x.reshape(b, c, 1, h * w)
        attn = attn[:, :, : h + 1, : h + 1].clone()
        attn[:, :, 1:, 1:] = attn[:, :, 1:, 1:] + self.rel
        whole = attn.clone()
        whole[:, :, :, :] = attn.softmax(-1) * 2.0
        y = x.clone()
        y[:, 1:3, ::2, 1:] = y[:, 1:3, ::2, 1:] * 3.0 - 1.0
        return self.head(y) + whole.mean((2, 3)).sum(1, keepdim=True)


class SamAttention(Classifier):
    """SAM's (and ViTDet's) attention: q, k and v moved in front of the batch axis and
    reshaped with the heads folded into the batch (`reshape(3, B·heads, N, d).unbind(0)`),
    relative positions along each axis by einsums of the folded queries, added to the
    scores viewed as `[B·heads, H, W, H, W]`."""

    def __init__(self, c=8, heads=2, side=4):
        super().__init__()
        self.heads = heads
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        g = torch.Generator().manual_seed(11)
        self.rel_h = nn.Parameter(torch.randn(side, side, c // heads, generator=g) * 0.3)
        self.rel_w = nn.Parameter(torch.randn(side, side, c // heads, generator=g) * 0.3)
        self.head = Head(c)

    def logits(self, x):
        x = F.relu(self.conv(x))
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1)
        qkv = self.qkv(tokens).reshape(b, h * w, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.heads, h * w, -1).unbind(0)
        attn = (q * 0.5) @ k.transpose(-2, -1)
        r_q = q.reshape(b * self.heads, h, w, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, self.rel_h)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, self.rel_w)
        attn = attn.view(b * self.heads, h, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
        attn = attn.view(b * self.heads, h * w, h * w).softmax(-1)
        out = (attn @ v).view(b, self.heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.head(x + self.proj(out).permute(0, 3, 1, 2))


class LocalResponse(Classifier):
    """AlexNet's and GoogLeNet's local response normalisation (`nn.LocalResponseNorm`), of
    an odd and an even window: both exporters write it as a 3-D average pool over the
    channels made a depth axis, the legacy one with an `If` on the channel count."""

    def __init__(self, c=6):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.odd = nn.LocalResponseNorm(5, alpha=0.05, beta=0.75, k=2.0)
        self.even = nn.LocalResponseNorm(4, alpha=0.3, beta=0.6, k=1.0)
        self.head = Head(c)

    def logits(self, x):
        return self.head(self.even(self.odd(F.relu(self.conv(x))) * 3.0))


class Adaptive(Classifier):
    """Adaptive average pooling to sizes that do not divide the map (VGG's 7×7 head on a
    small input; a 5×5 map pooled to 3×7 and to 2×4): uneven, overlapping windows, which the
    dynamo exporter writes as a `GatherND` of the windows' pixels over the transposed
    spatial axes, masked by `Where`. The legacy exporter refuses them, and the dynamo one
    the max pool of such sizes."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.fc = nn.Linear(c * (21 + 8), 5)

    def logits(self, x):
        x = F.relu(self.conv(x))
        pooled = [F.adaptive_avg_pool2d(x, (3, 7)), F.adaptive_avg_pool2d(x * 2.0 - 1.0, (2, 4))]
        return self.fc(torch.cat([p.flatten(1) for p in pooled], 1))


class Shifted(Classifier):
    """NASNet's and PNASNet's second path: the map shifted by a pixel with
    `nn.ZeroPad2d((-1, 1, -1, 1))` (negative pads crop), a strided 1×1 average pool and a
    1×1 conv; beside it a crop alone (`F.pad` by negative amounts only)."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.shift = nn.ZeroPad2d((-1, 1, -1, 1))
        self.pool = nn.AvgPool2d(1, stride=2, count_include_pad=False)
        self.path = nn.Conv2d(c, c, 1)
        self.fc = nn.Linear(2 * c, 5)

    def logits(self, x):
        x = F.relu(self.conv(x))
        shifted = self.path(self.pool(self.shift(x)))
        cropped = F.pad(x, (-1, -2, 0, -1)) * 1.5
        return self.fc(torch.cat([shifted.mean((2, 3)), cropped.amax((2, 3))], 1))


class Indexed(Classifier):
    """CSATv2's DCT stem: 2×2 patches folded into the batch axis (`reshape(-1, C, 4)`),
    their values reordered by a constant index list (`x[:, :, order]`, which the dynamo
    exporter writes as a `GatherND` of the value transposed), then unfolded."""

    def __init__(self, c=3):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 1)
        self.order = [3, 0, 2, 1]
        self.fc = nn.Linear(c * 16, 5)

    def logits(self, x):
        b, _, h, w = x.shape
        x = self.conv(x)
        c = x.shape[1]
        x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        x = torch.tanh(x.reshape(-1, c, 4)[:, :, self.order]) * 2.0
        x = x.reshape(b, h // 2, w // 2, c, 4).permute(0, 3, 4, 1, 2)
        return self.fc(x.flatten(1))


class TokenPools(Classifier):
    """1-D pools of `[B, C, L]`: NextViT's spatial reduction of its tokens (`nn.AvgPool1d`),
    and a `nn.MaxPool1d` with padding and a partial last window (ceil mode)."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.avg = nn.AvgPool1d(4, stride=4)
        self.max = nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True)
        self.fc = nn.Linear(c * (9 + 19), 5)

    def logits(self, x):
        tokens = F.relu(self.conv(x)).flatten(2)
        return self.fc(torch.cat([self.avg(tokens), self.max(tokens)], 2).flatten(1))


class Volumes(Classifier):
    """3-D convolutions whose kernel spans one position of an axis: LambdaNet's position
    convolution, `nn.Conv3d` by `(r, r, 1)` of the map viewed as `[1, H, W, C]` (each
    channel's plane convolved alone), then one by `(1, 3, 3)` with a stride and padding
    over the last two axes of each slice along the first."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 1)
        self.positions = nn.Conv3d(1, 2, (3, 3, 1), padding=(1, 1, 0))
        self.slices = nn.Conv3d(2, 3, (1, 3, 3), stride=(1, 2, 1), padding=(0, 1, 0))
        self.fc = nn.Linear(3 * 6 * 3 * (c - 2), 5)

    def logits(self, x):
        v = F.relu(self.conv(x))
        b, c, h, w = v.shape
        volume = v.permute(0, 2, 3, 1).reshape(b, 1, h, w, c)
        return self.fc(self.slices(torch.tanh(self.positions(volume))).flatten(1))


class Folds(Classifier):
    """`F.fold` (ONNX `Col2Im`), as MobileViTV2 puts its patches back: non-overlapping 2×2
    blocks scaled per patch position, and overlapping 3×3 blocks at stride 2 with padding,
    whose overlaps sum."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 1)
        self.scale = nn.Parameter(torch.randn(c * 4, 9))
        self.head = Head(2 * c)

    def logits(self, x):
        v = torch.tanh(self.conv(x))
        blocks = F.unfold(v, 2, stride=2) * self.scale
        tiled = F.fold(blocks, (6, 6), 2, stride=2)
        overlapping = F.fold(F.unfold(v, 3, padding=1, stride=2), (6, 6), 3, padding=1, stride=2)
        return self.head(torch.cat([tiled, overlapping], 1))


class MultiHead(Classifier):
    """`nn.MultiheadAttention` over a conv's tokens, laid out `[L, B, E]` (batch second) as
    torchvision's ViTs and CLIP's ResNets have them: CLIP's mean token joined in front (a
    mean over the moved axis, kept) and a position table, self-attention without its
    weights (torch's fused path, which folds the batch with the heads), then an attention
    pool with the mean token alone as the query and its weights returned (batched products
    over `[B·heads, L, d]`)."""

    def __init__(self, c=8, heads=2, tokens=16):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, stride=2, padding=1)
        self.attn = nn.MultiheadAttention(c, heads)
        self.pool = nn.MultiheadAttention(c, heads)
        self.norm = nn.LayerNorm(c)
        self.positions = nn.Parameter(torch.randn(tokens + 1, c) * 0.5)
        with torch.no_grad():
            for m in (self.attn, self.pool):
                m.in_proj_bias.copy_(torch.randn(3 * c) * 0.1)
        self.fc = nn.Linear(c, 5)

    def logits(self, x):
        x = F.relu(self.conv(x))
        tokens = x.flatten(2).permute(2, 0, 1)
        tokens = torch.cat([tokens.mean(0, keepdim=True), tokens]) + self.positions[:, None]
        y, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        tokens = self.norm(tokens + y)
        pooled, weights = self.pool(tokens[:1], tokens, tokens)
        return self.fc(pooled[0] * (1 + weights.amax(-1)))


class Segmenter(nn.Module):
    """A segmentation net: a map of class scores at every pixel (an FCN's strided encoder;
    DeepLabV3's atrous pyramid, whose dilated conv pads by more than the map is wide; a
    1×1 classifier; bilinear upsampling back to the input's size). convscope explains each
    class by its mean over the pixels: `logits`."""

    def __init__(self, classes=4):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        self.near = nn.Conv2d(8, 6, 1)
        self.far = nn.Conv2d(8, 6, 3, padding=36, dilation=36)
        self.classifier = nn.Conv2d(12, classes, 1)

    def forward(self, x):
        features = self.encoder(x)
        pyramid = torch.cat([self.near(features), self.far(features)], 1).relu()
        scores = self.classifier(pyramid)
        return F.interpolate(scores, size=x.shape[2:], mode="bilinear", align_corners=False)

    def logits(self, x):
        return Segmenter.forward(self, x).mean((2, 3))

    def probabilities(self, x):
        return F.softmax(self.logits(x), dim=1)


class ChannelsLast(Segmenter):
    """A segmentation net that ends in a softmax over the classes at each pixel, its map
    moved channels-last (as Keras models do, and tf2onnx's exports of them)."""

    def forward(self, x):
        return F.softmax(Segmenter.forward(self, x), dim=1).permute(0, 2, 3, 1)


class Signal(Classifier):
    """A 1-D CNN over a signal of two channels (an ECG's leads): convs with stride,
    dilation and padding, a batch norm after its ReLU, a residual block, max and average
    pools, and global pools of both kinds over the time axis. convscope takes the `[C, L]`
    input as a map one row high."""

    def __init__(self, classes=4):
        super().__init__()
        self.stem = nn.Conv1d(2, 8, 7, stride=2, padding=3)
        self.norm = nn.BatchNorm1d(8)
        self.block = nn.Sequential(
            nn.Conv1d(8, 8, 3, padding=2, dilation=2),
            nn.BatchNorm1d(8),
            nn.ReLU(),
            nn.Conv1d(8, 8, 3, padding=1),
        )
        self.wide = nn.Conv1d(8, 12, 5, padding=2)
        self.fc = nn.Linear(24, classes)

    def logits(self, x):
        x = self.norm(F.relu(self.stem(x)))
        x = F.max_pool1d(x, 2)
        x = F.relu(x + self.block(x))
        x = F.avg_pool1d(F.relu(self.wide(x)), 3, stride=2, padding=1)
        pooled = torch.cat([F.adaptive_avg_pool1d(x, 1), F.adaptive_max_pool1d(x, 1)], 1)
        return self.fc(pooled.flatten(1))


FIXTURES = {
    # name: (module, input size [C, H, W])
    "pools": (Pools, [3, 29, 29]),
    "shuffle": (Shuffle, [3, 16, 16]),
    "convnext": (ConvNeXt, [3, 32, 32]),
    "upsample": (Upsample, [3, 11, 13]),
    "norms": (Norms, [3, 12, 12]),
    "decoder": (Decoder, [3, 11, 10]),
    "attention": (Attention, [3, 14, 14]),
    "layernorm": (OfficialConvNeXt, [3, 16, 16]),
    "normalised": (Normalised, [3, 8, 8]),
    "mbconv": (MBConv, [3, 12, 12]),
    "context": (Context, [3, 6, 7]),
    "positions": (Positions, [3, 5, 6]),
    "unbind": (Unbind, [3, 5, 4]),
    "folded": (Folded, [3, 4, 4]),
    "windows": (Windows, [3, 7, 7]),
    "bicubic": (Bicubic, [3, 6, 5]),
    "stacked": (Stacked, [3, 5, 5]),
    "einsum": (Einsums, [3, 5, 6]),
    "pooled": (PooledAttention, [3, 6, 6]),
    "assigned": (Assigned, [3, 5, 5]),
    "sam": (SamAttention, [3, 4, 4]),
    "adaptive": (Adaptive, [3, 5, 5]),
    "lrn": (LocalResponse, [3, 6, 6]),
    "shifted": (Shifted, [3, 7, 7]),
    "indexed": (Indexed, [3, 4, 4]),
    "pools1d": (TokenPools, [3, 6, 6]),
    "volumes": (Volumes, [3, 6, 6]),
    "folds": (Folds, [3, 6, 6]),
    "multihead": (MultiHead, [3, 8, 8]),
    "segmenter": (Segmenter, [3, 9, 10]),
    "channels_last": (ChannelsLast, [3, 8, 7]),
    "signal": (Signal, [2, 40]),
}


# Open batch size: reshape targets computed from the input's shape.
DYNAMIC_ROUTE = {
    "dynamo": False,
    "input_names": ["x"],
    "output_names": ["y"],
    "dynamic_axes": {"x": {0: "batch"}, "y": {0: "batch"}},
}
DYNAMIC = {"folded", "unbind", "pooled", "sam", "multihead"}
# Fixtures the legacy exporter refuses (non-factor adaptive pools): the dynamo route only.
DYNAMO_ONLY = {"adaptive"}
# Fixtures of ops opset 13 lacks (`Col2Im` came in 18, the exporter's attention in 14):
# not by the opset-13 route.
AFTER_OPSET_13 = {"folds", "multihead"}


def export(model, x, path, route):
    if hasattr(model, "written_out"):
        model.written_out = route == "opset13"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), **{**ROUTES, "dynamic": DYNAMIC_ROUTE}[route])


def make(name, seed):
    module, shape = FIXTURES[name]
    torch.manual_seed(seed)
    model = randomise(module(), seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand([2, *shape], generator=g)
    with torch.no_grad():
        probs = getattr(model, "probabilities", model)(x)
    one = x[:1].clone().requires_grad_(True)
    scores = model.logits(one)[0]
    top = int(scores.argmax())
    scores[top].backward()
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / f"{name}.input.npy", x.numpy())
    np.save(OUT / f"{name}.probs.npy", probs.numpy())
    np.save(OUT / f"{name}.grad.npy", one.grad.numpy())
    routes = ["default"] if name in DYNAMO_ONLY else list(ROUTES)
    if name in AFTER_OPSET_13:
        routes.remove("opset13")
    for route in routes + (["dynamic"] if name in DYNAMIC else []):
        path = OUT / f"{name}.{route}.onnx"
        for old in (path, pathlib.Path(str(path) + ".data")):
            old.unlink(missing_ok=True)
        export(model, x[:1], path, route)
        print(f"{path.name}: {path.stat().st_size} bytes, class {top}")


if __name__ == "__main__":
    os.chdir(pathlib.Path(__file__).resolve().parent.parent)
    names = sys.argv[1:] or list(FIXTURES)
    for i, name in enumerate(FIXTURES):
        if name in names:
            make(name, 20261203 + i)
