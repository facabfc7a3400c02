"""Write a tiny Piper-compatible voice: an ONNX graph plus its ``.onnx.json``.

Why: tests must run piper-tts's real code path (its espeak-ng phonemizer, phoneme
id mapping and onnxruntime session) without downloading a 60 MB voice. The graph
takes exactly what piper feeds a VITS voice (``input`` int64 [1, N] phoneme ids,
``input_lengths`` [1], ``scales`` float [3] = noise, length, noise_w) and returns
``output`` float [1, 1, T]: each phoneme id becomes ``SAMPLES_PER_ID * length_scale``
samples of a tone whose pitch is a function of the id (pad ids are silent). So the
audio is deterministic, its length is proportional to the phoneme count and to
``length_scale``, and different texts sound different. Needs the ``onnx`` package
only to build; the result is byte-identical for the same arguments.

    python -m voicechat.models.tiny.make_piper [OUT_DIR] [--sample-rate 16000]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

TINY_VOICE = "tiny-synthetic"
DEFAULT_DIR = Path(__file__).parent / "piper"
SAMPLES_PER_ID = 0.04  # seconds of audio per phoneme id at length_scale 1 (ids include pads)
OPSET = 17


def build_model(sample_rate: int) -> bytes:
    """The serialized ONNX graph (see the module docstring for what it computes)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: float | list[int], dtype: type = np.float32) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(value, dtype=dtype), name)

    step = SAMPLES_PER_ID * sample_rate
    inits = [
        const("one_i", [1], np.int64), const("axis0", [0], np.int64),
        const("len_idx", 1, np.int64), const("step", step), const("one_f", 1.0), const("zero_f", 0.0),
        const("base_hz", 110.0), const("hz_per_id", 7.0), const("two_pi_over_sr", 2 * math.pi / sample_rate),
        const("amp", 0.5), const("out_shape", [1, 1, -1], np.int64),
    ]
    n = helper.make_node
    nodes = [
        n("Squeeze", ["input", "axis0"], ["ids"]),                           # [N] int64
        n("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        n("Shape", ["ids"], ["n_i"]),                                        # [1]
        n("Cast", ["n_i"], ["n_f"], to=TensorProto.FLOAT),
        n("Gather", ["scales", "len_idx"], ["length_scale"]),                # scalar
        n("Mul", ["step", "length_scale"], ["per_id_raw"]),
        n("Round", ["per_id_raw"], ["per_id_r"]),
        n("Max", ["per_id_r", "one_f"], ["per_id"]),                         # samples per id, >= 1
        n("Mul", ["n_f", "per_id"], ["total_f"]),
        n("Squeeze", ["total_f"], ["total_s"]),
        n("Range", ["zero_f", "total_s", "one_f"], ["t"]),                   # [T] sample index
        n("Div", ["t", "per_id"], ["pos"]),
        n("Floor", ["pos"], ["pos_floor"]),
        n("Cast", ["pos_floor"], ["which"], to=TensorProto.INT64),
        n("Sub", ["n_i", "one_i"], ["last"]),
        n("Min", ["which", "last"], ["which_c"]),
        n("Gather", ["ids_f", "which_c"], ["id_at"]),                        # phoneme id of each sample
        n("Mul", ["id_at", "hz_per_id"], ["hz_extra"]),
        n("Add", ["hz_extra", "base_hz"], ["hz"]),
        n("Mul", ["hz", "t"], ["cycles"]),
        n("Mul", ["cycles", "two_pi_over_sr"], ["phase"]),
        n("Sin", ["phase"], ["wave"]),
        n("Min", ["id_at", "one_f"], ["voiced"]),                            # pad (id 0) is silence
        n("Mul", ["wave", "voiced"], ["wave_v"]),
        n("Mul", ["wave_v", "amp"], ["audio"]),
        n("Reshape", ["audio", "out_shape"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_piper",
        inputs=[
            helper.make_tensor_value_info("input", TensorProto.INT64, [1, "phonemes"]),
            helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
        ],
        outputs=[helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "time"])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="voicechat")
    model.ir_version = 8  # readable by every onnxruntime piper-tts supports
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_config(sample_rate: int) -> dict:
    """The voice's ``.onnx.json``, in the layout piper-tts reads (PiperConfig.from_dict)."""
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    return {
        "dataset": TINY_VOICE,
        "audio": {"sample_rate": sample_rate, "quality": "x_low"},
        "espeak": {"voice": "en-us"},
        "language": {"code": "en_US"},
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
        "num_symbols": 256,
        "num_speakers": 1,
        "speaker_id_map": {},
        "piper_version": "1.0.0",
    }


def write_voice(out_dir: Path, sample_rate: int = 16000, name: str = TINY_VOICE) -> Path:
    """Write ``NAME.onnx`` and ``NAME.onnx.json`` into ``out_dir``; returns the .onnx path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{name}.onnx"
    onnx_path.write_bytes(build_model(sample_rate))
    text = json.dumps(build_config(sample_rate), ensure_ascii=False, indent=1, sort_keys=True)
    Path(f"{onnx_path}.json").write_text(text + "\n", encoding="utf-8")
    return onnx_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--name", default=TINY_VOICE)
    args = parser.parse_args(argv)
    path = write_voice(args.out_dir, args.sample_rate, args.name)
    print(f"wrote {path} ({path.stat().st_size} bytes) and {path}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
