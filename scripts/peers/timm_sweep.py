#!/usr/bin/env python3
"""timm's CNNs against convscope: models convscope has never been tuned on, exported by
both PyTorch exporters (session 22 found seven load failures this way, all since fixed).

One model per process; a JSON line per model is appended to WORK/results.jsonl:

    python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.15.0 \
        torchvision timm==1.0.31 onnx==1.23.2 onnxruntime==1.32.0 onnxscript numpy pillow
    /tmp/torchvenv/bin/python scripts/peers/timm_sweep.py MODEL --convscope BIN \
        [--work /tmp/timm_sweep] [--routes dynamo,legacy] [--size N]

Random weights, with the batch norms' scales redrawn (timm zero-initialises some, which
would hide residual branches) and their statistics set by four batches in training mode.
For each route: export to WORK/models/MODEL_ROUTE.onnx, run onnxruntime on a fixed input
(a random RGB PNG read back as convscope reads it: p/255, ImageNet mean and std), run
`convscope summary`, `predict --json -k N` (N: the model's outputs) and `saliency -o .npy`, and compare: the
probabilities with ORT's and PyTorch's, the saliency with torch autograd of the logit of
the top class (|g|, maximum over channels, min-max scaled, as the README defines it), next
to the floor (torch's own map for the input moved by 1e-6 of its largest value). That
floor, from one draw, can miss float32 rounding the model amplifies (starnet_s1): `--f64`
adds the maps of both sides in float64 (`dsal_f64`), where rounding is gone. Torch's maps
are taken with its eval-mode batch norms written as the affine maps they are: torch 2.15's
BatchNorm backward on the CPU is wrong for a gradient that is not contiguous (LeViT). Files of models that
pass are deleted (KEEP=1 keeps them). Models whose attention needs a size that timm does
not mark fixed (halonet26t, bat_resnext26ts) take `--size 256`.

`hf:ARCH` takes Hugging Face transformers' `ARCHForImageClassification` from its default
`ARCHConfig` (1,000 labels, random weights; `pip install transformers`), called on
`pixel_values` for its `logits`, at the config's image size: `hf:ConvNext`, `hf:Swinv2`,
`hf:MobileViTV2`, `hf:Dinov2WithRegisters` and so on. `tv:NAME` takes torchvision's
`get_model(NAME)` (random weights, zero-initialised matrices redrawn) at 224, or at its
ViTs' own `image_size`. `yolo:CFG` takes Ultralytics' classifier built from `CFG`
(`yolov8n-cls.yaml`, `yolo11s-cls.yaml`; `pip install ultralytics`; random weights) at 224,
returning its logits (its head's softmax comes off). `py:EXPR` takes any model a Python
expression builds, its package and the submodules it names imported (`py:pytorchcv.model_provider.get_model('bam_resnet18')`),
at 224 unless `--size` says otherwise. `seg:NAME` takes torchvision's segmentation model
NAME (`lraspp_mobilenet_v3_large`, `fcn_resnet50`, `deeplabv3_mobilenet_v3_large`; random
weights), exported with its map of class scores as the output and compared by each
class's mean over the pixels.
"""
import argparse, json, os, re, subprocess, sys, time, traceback
import numpy as np

ROOT = CS = MODELS = ""
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
CS_PRE = ["--input-range", "0,1", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]


def log(*a):
    print(*a, flush=True)


def softmax(z):
    z = np.asarray(z, np.float64).ravel()
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def run(cmd, timeout=300):
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr, time.time() - t
    except subprocess.TimeoutExpired:
        return -9, "", f"TIMEOUT after {timeout}s", time.time() - t


def first_err_line(rc, out, err):
    txt = (err or "").strip().splitlines()
    # prefer a line with 'error' or 'panicked'
    for l in txt:
        if "panicked" in l or l.lower().startswith("error"):
            return l.strip()
    return (txt[-1] if txt else (out or "").strip()[-300:]) + f" (rc={rc})"


def saliency_map(model, x, cls):
    """|∂ logit[cls] / ∂ x|, the maximum over channels, min-max scaled."""
    xg = x.clone().requires_grad_(True)
    model(xg)[0, cls].backward()
    gr = xg.grad[0].abs().amax(0).numpy().astype(np.float64)
    return (gr - gr.min()) / (gr.max() - gr.min() + 1e-7)


def affine_batch_norm(bn):
    """`bn`'s eval-mode forward as `x·scale + shift`, per channel (axis 1), then what
    timm's norm-act layers (BatchNormAct2d) apply after the norm."""
    import torch

    after = [getattr(bn, name) for name in ("drop", "act") if hasattr(bn, name)]

    def forward(x):
        weight = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        bias = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        scale = weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bias - bn.running_mean * scale
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = x * scale.view(shape) + shift.view(shape)
        for layer in after:
            y = layer(y)
        return y

    return forward


def hf_model(arch):
    """Hugging Face's image classifier `arch` with random weights, returning logits."""
    import torch, transformers

    config = getattr(transformers, f"{arch}Config")(num_labels=1000)
    inner = getattr(transformers, f"{arch}ForImageClassification")(config).eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(pixel_values=x).logits

    size = getattr(config, "image_size", 224)
    return Logits().eval(), size[0] if isinstance(size, (list, tuple)) else size


def yolo_model(cfg):
    """Ultralytics' classifier built from `cfg` with random weights, returning logits (its
    eval-mode head returns the softmax and the logits)."""
    import torch
    from ultralytics import YOLO

    inner = YOLO(cfg).model.eval()

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)[1]

    return Logits().eval(), 224


class DenseMeans:
    """`seg:NAME`: torchvision's segmentation model NAME, exported with its map of class
    scores (`out`) as the output and compared by each class's mean over the pixels, which
    is what convscope explains of such a map."""

    @staticmethod
    def build(name):
        import torch, torchvision

        class Dense(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = torchvision.models.get_model(name, weights=None, weights_backbone=None)
                self.exporting = False

            def forward(self, x):
                out = self.net(x)["out"]
                return out if self.exporting else out.mean((2, 3))

        return Dense().eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--routes", default="dynamo,legacy")
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--no-saliency", action="store_true")
    ap.add_argument("--f64", action="store_true", help="also both sides' saliency in float64")
    ap.add_argument("--bn-gamma", default="0.5,1.5", help="range of the redrawn BN gammas")
    ap.add_argument("--bn-timm", action="store_true", help="keep timm's BN affine init (no redraw)")
    ap.add_argument("--convscope", required=True, help="the convscope binary")
    ap.add_argument("--work", default="/tmp/timm_sweep", help="exports, image and results")
    a = ap.parse_args()
    global ROOT, CS, MODELS
    ROOT, CS, MODELS = a.work, a.convscope, f"{a.work}/models"
    os.makedirs(MODELS, exist_ok=True)
    name = a.model

    import torch, timm
    from PIL import Image
    torch.manual_seed(0)
    np.random.seed(0)
    res = {"model": name}
    hf_size = None
    try:
        if name.startswith("hf:"):
            model, hf_size = hf_model(name[3:])
        elif name.startswith("py:"):
            import importlib
            parts = name[3:].split("(")[0].split(".")
            namespace = {parts[0]: importlib.import_module(parts[0])}
            for end in range(2, len(parts)):  # submodules the expression reaches into
                try:
                    importlib.import_module(".".join(parts[:end]))
                except ImportError:
                    break
            model, hf_size = eval(name[3:], namespace).eval(), 224
        elif name.startswith("yolo:"):
            model, hf_size = yolo_model(name[5:])
        elif name.startswith("seg:"):
            model, hf_size = DenseMeans.build(name[4:]), 224
        elif name.startswith("tv:"):
            import torchvision
            model = torchvision.models.get_model(name[3:], weights=None).eval()
            hf_size = getattr(model, "image_size", 224)
        else:
            model = timm.create_model(name, pretrained=False)
        # Zero-initialised heads (ViTs', Hiera's) would give equal logits and a zero
        # saliency on both sides: a comparison that could not fail.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1 and not p.any():
                    p.normal_(0, 0.05)
    except Exception as e:
        res["error"] = f"model: {type(e).__name__}: {e}"
        print(json.dumps(res))
        with open(f"{ROOT}/results.jsonl", "a") as f:
            f.write(json.dumps(res) + "\n")
        return
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", {})
    fixed = cfg.get("input_size", (3, 128, 128))[1] if cfg.get("fixed_input_size") else 128
    size = a.size or hf_size or fixed
    res["size"] = size

    # Redraw BN affine (timm zero-inits some last-BN gammas, which would hide residual
    # branches) and set running stats from 4 random batches (momentum=None: cumulative avg).
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            if m.affine and not a.bn_timm:
                lo, hi = map(float, a.bn_gamma.split(","))
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * (hi - lo) + lo)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for _ in range(4):
            model(torch.randn(8, 3, size, size, generator=g))
    model.eval()
    res["n_bn"] = len(bns)

    # fixed input: random RGB PNG, reproduced as convscope preprocesses it
    img_path = f"{ROOT}/img_{size}.png"
    rng = np.random.default_rng(123)
    pix = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    if not os.path.exists(img_path):
        Image.fromarray(pix, "RGB").save(img_path)
    pix = np.asarray(Image.open(img_path).convert("RGB"))
    xin = ((pix.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].copy()
    x = torch.from_numpy(xin)

    with torch.no_grad():
        tlog = model(x).numpy()
    p_torch = softmax(tlog)
    res["torch_top"] = int(p_torch.argmax())
    res["torch_pmax"] = float(p_torch.max())
    res["logit_std"] = float(tlog.std())
    res["bn_timm"] = a.bn_timm
    res["bn_gamma"] = a.bn_gamma

    # torch reference saliency, with eval-mode batch norms as the affine maps they are:
    # torch 2.15's BatchNorm backward on the CPU is wrong when the incoming gradient is not
    # contiguous (a BatchNorm2d then `flatten(2).transpose(1, 2).mean(1)`, LeViT's stem and
    # head: off by more than the gradient itself, against finite differences).
    for m in bns:
        m.forward = affine_batch_norm(m)
    with torch.no_grad():
        # The same logits but for rounding (which a chaotic random model amplifies).
        res["affine_bn_dlogit"] = float(np.abs(model(x).numpy() - tlog).max())
    cls = int(p_torch.argmax())
    sal_ref = saliency_map(model, x, cls)
    # floor: torch's own map for the input moved by 1e-6 of its largest value
    moved = x + 1e-6 * x.abs().max() * torch.randn(x.shape, generator=g)
    res["sal_floor"] = float(np.abs(saliency_map(model, moved, cls) - sal_ref).max())
    if a.f64:
        # Both sides in float64 (convscope's --precision f64): what is left is not rounding.
        model.double()
        sal_ref64 = saliency_map(model, x.double(), cls)
        model.float()
    for m in bns:
        del m.forward  # the module's own forward again, for the export

    import onnxruntime as ort
    safe_name = re.sub(r"[^\w.-]", "_", name)
    for route in a.routes.split(","):
        r = {}
        res[route] = r
        path = f"{MODELS}/{safe_name}_{route}.onnx"
        t = time.time()
        model.exporting = True
        try:
            if route == "dynamo":
                torch.onnx.export(model, (x,), path)
            elif route == "legacy":
                torch.onnx.export(model, (x,), path, dynamo=False)
            r["export_s"] = round(time.time() - t, 1)
        except Exception as e:
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            r["export_error"] = msg[:400]
            log(name, route, "EXPORT FAIL", msg[:400])
            continue
        finally:
            model.exporting = False
        r["path"] = path
        try:
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            iname = sess.get_inputs()[0].name
            olog = sess.run(None, {iname: xin})[0]
            if olog.ndim == 4:  # a segmentation map: its class means
                olog = olog.mean((2, 3))
            p_ort = softmax(olog)
            r["ort_vs_torch"] = float(np.abs(p_ort - p_torch).max())
        except Exception as e:
            r["ort_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            p_ort = p_torch
        # convscope summary
        rc, so, se, dt = run([CS, "summary", path] + CS_PRE)
        r["summary_ok"] = rc == 0
        if rc != 0:
            r["summary_err"] = first_err_line(rc, so, se)
            r["summary_stderr"] = se[-2000:]
        # convscope predict
        # Every output compared, whatever the head's width (mobilenetv5's 2,048 features).
        k = str(p_ort.size)
        rc, so, se, dt = run([CS, "predict", path, img_path, "--json", "-k", k] + CS_PRE)
        r["predict_s"] = round(dt, 2)
        if rc != 0:
            r["predict_err"] = first_err_line(rc, so, se)
            r["predict_stderr"] = se[-2000:]
        else:
            try:
                js = json.loads(so)
                top = js[0]["top"]
                pc = np.zeros(p_ort.size)
                for e in top:
                    pc[e["index"]] = e["probability"]
                r["n_classes_cs"] = len(top)
                r["dp_vs_ort"] = float(np.abs(pc - p_ort).max())
                r["dp_vs_torch"] = float(np.abs(pc - p_torch).max())
                r["cs_top"] = int(pc.argmax())
                r["cs_stderr"] = se.strip()[-600:]
            except Exception as e:
                r["predict_parse_err"] = f"{type(e).__name__}: {e}; stdout={so[:300]}"
        # saliency
        if not a.no_saliency and "predict_err" not in r:
            sp = f"{ROOT}/sal_tmp.npy"
            if os.path.exists(sp):
                os.remove(sp)
            rc, so, se, dt = run([CS, "saliency", path, img_path, "--class", str(cls), "-o", sp] + CS_PRE)
            r["saliency_s"] = round(dt, 2)
            if rc != 0:
                r["saliency_err"] = first_err_line(rc, so, se)
                r["saliency_stderr"] = se[-2000:]
            else:
                try:
                    s = np.load(sp).astype(np.float64)
                    if s.ndim == 3:
                        s = s[0] if s.shape[0] == 1 else s
                    r["dsal"] = float(np.abs(s - sal_ref).max())
                except Exception as e:
                    r["saliency_cmp_err"] = f"{type(e).__name__}: {e}"
            if a.f64 and rc == 0:
                f64 = ["--precision", "f64"]
                rc, so, se, _ = run([CS, "saliency", path, img_path, "--class", str(cls), "-o", sp] + CS_PRE + f64)
                if rc == 0:
                    r["dsal_f64"] = float(np.abs(np.load(sp).astype(np.float64).reshape(sal_ref64.shape) - sal_ref64).max())
                else:
                    r["saliency_f64_err"] = first_err_line(rc, so, se)
        ok = not any(k.endswith("err") and not k.endswith("stderr") for k in r) and r.get("dp_vs_ort", 1) < 1e-4
        if ok and not os.environ.get("KEEP"):
            for fn in (path, path + ".data"):
                if os.path.exists(fn):
                    os.remove(fn)
            r["deleted"] = True
        log(name, route, {k: v for k, v in r.items() if not k.endswith("stderr")})
    with open(f"{ROOT}/results.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
