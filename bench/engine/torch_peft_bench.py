"""PyTorch + PEFT LoRA training throughput on the dequantized GGUF: r=8, alpha=16, q/k/v/o,
batch 4, sequence 128, AdamW. Prints one JSON object with tokens/s and peak RSS."""
import json
import os
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

model_path, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(
    os.path.dirname(model_path), gguf_file=os.path.basename(model_path), torch_dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                         task_type="CAUSAL_LM"))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
batch = torch.randint(100, 40000, (4, 128))
model.train()
loss = model(input_ids=batch, labels=batch).loss  # warm-up
loss.backward()
opt.zero_grad()
t = time.perf_counter()
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
for _ in range(steps):
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
elapsed = time.perf_counter() - t
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
print(json.dumps({
    "engine": "PyTorch + PEFT",
    "threads": threads,
    "train_tokens_per_s": batch.numel() * steps / elapsed,
    "train_tokens_per_cpu_s": batch.numel() * steps / cpu,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
