"""llama.cpp's own logits after the fixture prompts against the fixture (top-50, max |diff|), with
flash attention off (how the fixture was made) and on, 2 and 1 threads. Shows how far a different
but legitimate llama.cpp numerics path lands (run with the llama-cpp-python venv):

    python bench/engine/lcpp_vs_fixture.py MODEL.gguf ../shared/fixtures/reference
"""
import json, sys
import numpy as np
from llama_cpp import Llama
model, fixtures = sys.argv[1], sys.argv[2]
d = json.load(open(fixtures + "/llama_cpp.json"))
for fa in [False, True]:
  for threads in [2, 1]:
    llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=512, n_batch=512, verbose=False, flash_attn=fa, logits_all=True)
    worst = 0
    for c in d["chat"]:
        llm.reset(); llm.eval(c["prompt_ids"])
        logits = np.array(llm.scores[llm.n_tokens-1])
        diff = max(abs(logits[i] - v) for i, v in c["prompt_last_logits_top50"])
        worst = max(worst, diff)
        print(f"fa={fa} threads={threads} prompt {len(c['prompt_ids'])}: max diff {diff:.4f}")
    print("worst", round(worst, 4))
    del llm
