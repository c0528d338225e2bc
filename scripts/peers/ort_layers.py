#!/usr/bin/env python3
"""convscope's conv and dense layers against ONNX Runtime's, layer by layer, on one model:
where a forward pass loses to ORT. ORT's own profiler gives each node's kernel time
(medians over 60 runs, after 20 warm-up runs); `convscope bench --layers --json` gives
convscope's. Conv-like nodes are paired through the file's graph (ORT fuses activations into its
convs and names each fused node by its output). Prints the totals by kind of layer, ORT's
other ops (its layout reorders, its fused swish `QuickGelu`), and with --each every pair.

convscope's per-layer times run slightly above its whole forward's (each layer is timed on
its own), and for swish models they include the swish, which ORT times as `QuickGelu`.

    /tmp/torchvenv/bin/python scripts/peers/ort_layers.py /tmp/convscope_torchvision/mobilenet_v2.onnx
"""

import argparse
import collections
import json
import os
import statistics
import subprocess
import tempfile

CONV_OPS = ("Conv", "FusedConv", "NchwcConv", "Gemm")


def ort_times(path, runs, shape):
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.rand(*shape).astype(np.float32)}
    for _ in range(runs + 20):
        session.run(None, feed)
    events = json.load(open(session.end_profiling()))
    times, ops, order = collections.defaultdict(list), {}, []
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            if name not in ops:
                order.append(name)
            times[name].append(e["dur"] / 1000)
            ops[name] = e["args"].get("op_name")
    return [(name, ops[name], statistics.median(times[name][20:])) for name in order]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--convscope", default="target/release/convscope")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--each", action="store_true", help="also print every pair of layers")
    args = ap.parse_args()

    import onnx

    ort_nodes = ort_times(args.model, args.runs, (1, 3, args.size, args.size))
    out = subprocess.run(
        [args.convscope, "bench", args.model, "--runs", "9", "--layers", "100000", "--json"],
        capture_output=True, text=True, check=True,
    ).stdout
    graph = onnx.load(args.model, load_external_data=False).graph
    position = {n.name: i for i, n in enumerate(graph.node)}
    ours = [l for l in json.loads(out)["layers"] if l["kind"].startswith(("Conv", "Depthwise", "Dense"))]
    ours.sort(key=lambda l: position.get(l["name"], len(position)))
    theirs = [n for n in ort_nodes if n[1] in CONV_OPS]
    # ORT names a fused node by its output (`…/Relu_output_0_nchwc`) and may run a block's
    # shortcut conv before its last conv: each is traced back to the file's conv node that
    # feeds it, and paired by that; what cannot be traced is paired in order.
    producer = {out: node for node in graph.node for out in node.output}
    named = {node.name: node for node in graph.node}
    by_conv, untraced = {}, []
    for name, op, ms in theirs:
        node = named.get(name) or producer.get(name.removesuffix("_nchwc"))
        while node is not None and node.op_type not in ("Conv", "Gemm", "MatMul") and node.input:
            node = producer.get(node.input[0])
        if node is None:
            untraced.append((name, op, ms))
        else:
            by_conv[node.name] = (name, op, ms)
    rest = iter(untraced)
    theirs = [by_conv.get(l["name"]) or next(rest, ("?", "?", float("nan"))) for l in ours]
    if untraced or len(by_conv) + len(untraced) != len(ours):
        print(f"note: {len(untraced)} of ORT's conv nodes paired in order: pairs may be off")
    kinds = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for layer, (ort_name, _, ort_ms) in zip(ours, theirs):
        entry = kinds[layer["kind"]]
        entry[0] += layer["median_ms"]
        entry[1] += ort_ms
        entry[2] += 1
        if args.each:
            print(f"{layer['kind']:24s} {str(layer['output']):18s} convscope {layer['median_ms']:.3f} ORT {ort_ms:.3f}  {layer['name']} ~ {ort_name}")
    total = [sum(k[0] for k in kinds.values()), sum(k[1] for k in kinds.values())]
    print(f"conv and dense layers: convscope {total[0]:.2f} ms, ORT {total[1]:.2f} ms")
    for kind, (c, o, n) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
        print(f"  {kind:26s} x{n:3d}  convscope {c:6.2f}  ORT {o:6.2f}  ({c / o:.2f}x)")
    others = collections.defaultdict(float)
    for _, op, ms in ort_nodes:
        if op not in CONV_OPS:
            others[op] += ms
    print("ORT's other ops (ms):", ", ".join(f"{op} {ms:.2f}" for op, ms in sorted(others.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
