"""Device check: the product's FasterWhisperModel on CPU and CUDA (tiny.en, real speech).

Usage: python stt_gpu.py MODEL_DIR AUDIO_NPZ OUT_JSON CONFIG [CONFIG ...]
CONFIG = device:compute_type[:cpu_threads], e.g. cpu:auto:8 cuda:auto cuda:float16
"""
import json
import os
import statistics
import subprocess
import sys
import time
import traceback

import numpy as np

from voicechat.bench import percentile
from voicechat.bench.accuracy import accuracy
from voicechat.engines.protocols import SpeechInput
from voicechat.stt.whisper_model import FasterWhisperModel


def gpu_used_mb():
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return {line.split(",")[0].strip(): int(line.split(",")[1]) for line in out.strip().splitlines() if line}
    except Exception as exc:  # noqa: BLE001
        return str(exc)


def loaded_cuda_libs():
    with open("/proc/self/maps") as f:
        return sorted({line.split()[-1] for line in f if any(k in line for k in ("cublas", "cudnn", "cudart"))})


def run_config(model_dir, audio, texts, device, compute_type, threads):
    row = {"device": device, "compute_type": compute_type, "cpu_threads": threads}
    t0 = time.perf_counter()
    model = FasterWhisperModel(model_dir, device=device, compute_type=compute_type, cpu_threads=threads,
                               beam_size=5, window="utterance")
    row["load_s"] = round(time.perf_counter() - t0, 3)
    ct2 = model.model.model
    row["ct2_device"] = ct2.device
    row["ct2_compute_type"] = ct2.compute_type
    keys = sorted(audio, key=lambda k: (k.split("_")[0], int(k.split("_")[1])))
    items = {k: SpeechInput(k, audio[k].astype(np.float32) / 32768.0, True, "en") for k in keys}
    t0 = time.perf_counter()
    model.transcribe_batch([items[keys[0]]])
    row["first_call_s"] = round(time.perf_counter() - t0, 3)
    for k in keys[:3]:
        model.transcribe_batch([items[k]])  # warm-up
    times, hyp = [], {}
    for k in keys:
        t = time.perf_counter()
        hyp[k] = model.transcribe_batch([items[k]])[0]
        times.append(time.perf_counter() - t)
    row["one_by_one_ms"] = {"p50": round(percentile(times, 50) * 1000, 1), "p95": round(percentile(times, 95) * 1000, 1),
                            "mean": round(statistics.mean(times) * 1000, 1), "n": len(times)}
    for voice in ("piper", "espeak"):
        pairs = [(texts[int(k.split("_")[1])], hyp[k]) for k in keys if k.startswith(voice)]
        row[f"accuracy_{voice}"] = accuracy(pairs).as_dict()
    batch_times = []
    same = True
    for rnd in range(3):
        for start in range(0, len(keys), 8):
            group = keys[start:start + 8]
            t = time.perf_counter()
            out = model.transcribe_batch([items[k] for k in group])
            batch_times.append(time.perf_counter() - t)
            same = same and out == [hyp[k] for k in group]
    row["batch8_ms"] = {"p50": round(percentile(batch_times, 50) * 1000, 1),
                        "p95": round(percentile(batch_times, 95) * 1000, 1), "n": len(batch_times)}
    row["batch8_same_texts"] = same
    row["gpu_used_mb"] = gpu_used_mb() if device != "cpu" else None
    row["cuda_libs_loaded"] = loaded_cuda_libs()
    row["sample"] = {k: hyp[k] for k in keys[:2]}
    return row


def main():
    model_dir, audio_path, out_json, *configs = sys.argv[1:]
    data = np.load(audio_path)
    texts = [str(t) for t in data["texts"]]
    audio = {k: data[k] for k in data.files if k != "texts"}
    import ctranslate2
    result = {"ctranslate2": ctranslate2.__version__, "cuda_devices": ctranslate2.get_cuda_device_count(),
              "pid": os.getpid(), "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH", "")}
    for dev in ("cpu", "cuda"):
        try:
            result[f"supported_{dev}"] = sorted(ctranslate2.get_supported_compute_types(dev))
        except Exception as exc:  # noqa: BLE001
            result[f"supported_{dev}"] = f"{type(exc).__name__}: {exc}"
    result["configs"] = []
    for cfg in configs:
        parts = cfg.split(":")
        device, compute_type = parts[0], parts[1]
        threads = int(parts[2]) if len(parts) > 2 else 0
        try:
            row = run_config(model_dir, audio, texts, device, compute_type, threads)
        except Exception as exc:  # noqa: BLE001
            row = {"device": device, "compute_type": compute_type, "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()[-1500:]}
        print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
        result["configs"].append(row)
        with open(out_json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
