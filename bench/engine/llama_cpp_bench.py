"""llama.cpp (llama-cpp-python) throughput on the same prompt as the engine's bench example.

Prints one JSON object: prompt and decode tokens/s with the given thread count.
"""
import json
import sys
import time

from llama_cpp import Llama

model_path, threads = sys.argv[1], int(sys.argv[2])
llm = Llama(model_path=model_path, n_threads=threads, n_threads_batch=threads, n_ctx=512,
            n_batch=512, verbose=False)
text = ("The history of the printing press begins in the fifteenth century, when movable type "
        "changed how books were made and how knowledge spread across Europe. ") * 6
prompt = llm.tokenize(text.encode(), add_bos=False, special=False)[:128]

llm.reset()
llm.eval(prompt[:8])  # warm-up
llm.reset()
t = time.perf_counter()
llm.eval(prompt)
prompt_s = time.perf_counter() - t

# Decode: one token per forward pass, fed from the prompt so sampling code is not measured.
# 64 tokens take under a second, short enough for another tenant of a shared machine to halve
# one measurement: the median of three rounds, as the engine's bench example does.
rounds = []
for _ in range(3):
    llm.reset()
    llm.eval(prompt[:1])
    t = time.perf_counter()
    for tok in prompt[1:65]:
        llm.eval([tok])
    rounds.append(time.perf_counter() - t)
decode_s = sorted(rounds)[1]

print(json.dumps({
    "engine": "llama.cpp (llama-cpp-python)",
    "threads": threads,
    "prompt_tokens": len(prompt),
    "prompt_tokens_per_s": len(prompt) / prompt_s,
    "decode_tokens_per_s": 64 / decode_s,
}))
