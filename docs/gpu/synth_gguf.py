"""Fill a GGUF header (from make_synth_headers.py) with random but well-formed quantized weights.

Same tensor names, shapes and types as the real file, so llama.cpp does the same work per token;
the text it writes is gibberish. Usage: python synth_gguf.py HEADER RECIPE_JSON OUT_GGUF
"""
import json
import sys

import numpy as np

rng = np.random.default_rng(0)
# (elements per block, bytes per block, fp16 fields: (byte offset, value))
BLOCKS = {
    "Q4_1": (32, 20, [(0, 0.004), (2, -0.03)]),        # y = d*q + m, q in 0..15
    "Q8_0": (32, 34, [(0, 0.0002)]),                    # y = d*q, q int8
    "Q4_K": (256, 144, [(0, 0.0001), (2, 0.0005)]),     # y = d*sc*q - dmin*m (6-bit sc, m)
    "Q6_K": (256, 210, [(208, 0.00001)]),               # y = d*sc*(q-32), sc int8
}


def main(header, recipe_path, out):
    recipe = json.load(open(recipe_path))
    with open(out, "wb") as f:
        f.write(open(header, "rb").read())
        for t in recipe["tensors"]:
            f.seek(recipe["data_start"] + t["offset"])
            if t["type"] == "F32":
                n = t["nbytes"] // 4
                value = 1.0 if t["name"].endswith("norm.weight") else 0.0
                f.write(np.full(n, value, np.float32).tobytes())
                continue
            per, size, halves = BLOCKS[t["type"]]
            blocks = rng.integers(0, 256, size=(t["nbytes"] // size, size), dtype=np.uint8)
            for off, val in halves:
                blocks[:, off:off + 2] = np.frombuffer(np.float16(val).tobytes(), np.uint8)
            f.write(blocks.tobytes())
        f.truncate(recipe["data_start"] + recipe["tensors"][-1]["offset"] + recipe["tensors"][-1]["nbytes"])


if __name__ == "__main__":
    main(*sys.argv[1:4])
