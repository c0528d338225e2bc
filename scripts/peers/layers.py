#!/usr/bin/env python3
"""convscope's convs against ONNX Runtime's, layer by layer, grouped by kind: where a
model's forward loses or wins. ORT's profiler names each fused node after its output;
this follows producers back through the ops ORT fuses into a conv (Relu, Clip, Add,
Sigmoid, Mul, BatchNormalization) to the ONNX Conv it runs, and matches that by name
with `convscope bench MODEL --layers N --json`. Both sides run batch 1 on 2 threads.
Run them one after the other on a quiet machine, in the venv of scripts/models_table.py:

    target/release/convscope bench MODEL.onnx --runs 60 --layers 300 --json > ours.json
    /tmp/torchvenv/bin/python scripts/peers/layers.py MODEL.onnx ours.json --runs 60

ORT writes its profile (onnxruntime_profile__*.json) to the working directory; it is
removed afterwards.
"""

import argparse
import collections
import json
import os

import numpy as np
import onnx
import onnxruntime as ort

FUSED = ("Relu", "Clip", "Add", "Sigmoid", "Mul", "BatchNormalization")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("ours", help="convscope bench --layers --json output")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--each", action="store_true", help="also print every matched conv")
    args = ap.parse_args()

    graph = onnx.load(args.model, load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}

    def conv_of(value):
        node = producer.get(value)
        while node is not None and node.op_type != "Conv":
            node = producer.get(node.input[0]) if node.op_type in FUSED else None
        return node.name if node is not None else None

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.enable_profiling = True
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in feed.shape]
    x = np.random.rand(*shape).astype(np.float32)
    for _ in range(args.runs):
        session.run(None, {feed.name: x})
    profile = session.end_profiling()
    with open(profile) as f:
        events = json.load(f)
    os.remove(profile)

    times = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[e["name"][: -len("_kernel_time")]].append(e["dur"] / 1000)
    ort_ms = collections.defaultdict(float)
    for name, values in times.items():
        conv = conv_of(name.replace("_nchwc", "")) or conv_of(name)
        if conv:
            ort_ms[conv] += sorted(values)[len(values) // 2]

    with open(args.ours) as f:
        layers = json.load(f)["layers"]
    kinds = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for layer in layers:
        if layer["name"] in ort_ms:
            kind = kinds["%s @%d" % (layer["kind"], layer["output"][-1])]
            kind[0] += 1
            kind[1] += layer["median_ms"]
            kind[2] += ort_ms[layer["name"]]
            if args.each:
                print("%-40s %-16s %6d MMAC %-16s %7.3f %7.3f" % (
                    layer["name"][-40:], layer["kind"], layer["mult_adds"] // 1000000, layer["output"],
                    layer["median_ms"], ort_ms[layer["name"]]))
    print("%-28s %3s %9s %9s %8s" % ("kind @ output side", "n", "convscope", "ORT", "diff"))
    for name, (n, ours, theirs) in sorted(kinds.items(), key=lambda kv: kv[1][2] - kv[1][1]):
        print("%-28s %3d %9.2f %9.2f %+8.2f" % (name, n, ours, theirs, ours - theirs))
    print("matched convs, ms: convscope %.2f, ORT %.2f"
          % (sum(k[1] for k in kinds.values()), sum(k[2] for k in kinds.values())))


if __name__ == "__main__":
    main()
