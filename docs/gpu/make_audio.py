import numpy as np, sys
from voicechat.speech_samples import SAMPLE_SENTENCES, piper_speech_16k, speech_16k, with_silence
piper = [with_silence(a, 0.1, 0.2) for a in piper_speech_16k(SAMPLE_SENTENCES, voice_dir="models/piper")]
espeak = [with_silence(speech_16k(t), 0.1, 0.2) for t in SAMPLE_SENTENCES]
out = {f"piper_{i}": a for i, a in enumerate(piper)} | {f"espeak_{i}": a for i, a in enumerate(espeak)}
np.savez_compressed(sys.argv[1], texts=np.array(SAMPLE_SENTENCES), **out)
print(sum(len(a) for a in piper) / 16000, sum(len(a) for a in espeak) / 16000, "s of audio")
