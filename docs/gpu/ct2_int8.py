"""Re-store a CTranslate2 Whisper model.bin with int8 weights (CTranslate2's own per-row int8 scheme).

Reads the binary model.bin, fills a WhisperSpec with its variables, runs the spec's own
optimize("int8") (what ct2-transformers-converter --quantization int8 does) and writes model.bin.
Usage: python ct2_int8.py SRC_DIR DST_DIR
"""
import re
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
from ctranslate2.specs import model_spec, whisper_spec

DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def read_model(path):
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return vals

    def string():
        nonlocal pos
        (n,) = take("H")
        s = data[pos:pos + n - 1].decode()
        pos += n
        return s

    (version,) = take("I")
    name = string()
    (revision,) = take("I")
    (count,) = take("I")
    variables = {}
    for _ in range(count):
        vname = string()
        (rank,) = take("B")
        shape = take("I" * rank)
        (dtype,) = take("B")
        (nbytes,) = take("I")
        np_dtype = np.dtype(np.uint16 if DTYPES[dtype] == "bfloat16" else DTYPES[dtype])  # bfloat16: raw bits
        arr = np.frombuffer(data, dtype=np_dtype, count=nbytes // np_dtype.itemsize, offset=pos).reshape(shape)
        pos += nbytes
        variables[vname] = arr
    (n_alias,) = take("I")
    aliases = {}
    for _ in range(n_alias):
        alias = string()
        aliases[alias] = string()
    return version, name, revision, variables, aliases


def main(src, dst):
    version, name, revision, variables, aliases = read_model(Path(src) / "model.bin")
    enc = max(int(k.split("/")[1].split("_")[1]) for k in variables if re.match(r"encoder/layer_\d", k)) + 1
    dec = max(int(k.split("/")[1].split("_")[1]) for k in variables if re.match(r"decoder/layer_\d", k)) + 1
    d_model = variables["encoder/layer_0/self_attention/linear_1/weight"].shape[0]
    heads = d_model // 64
    spec = whisper_spec.WhisperSpec(enc, heads, dec, heads)
    for vname, arr in list(variables.items()) + [(a, variables[t]) for a, t in aliases.items()]:
        scope, attr = model_spec._parent_scope(vname)
        setattr(model_spec.index_spec(spec, scope), attr, arr if arr.ndim == 0 else arr.copy() if vname in variables else arr)
    model_spec.LayerSpec.validate(spec)
    spec.optimize(quantization="int8")
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    spec._serialize(str(out / "model.bin"))
    for f in Path(src).iterdir():
        if f.name != "model.bin":
            shutil.copy(f, out / f.name)
    print(name, version, revision, len(variables), "variables,", len(aliases), "aliases ->", out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
