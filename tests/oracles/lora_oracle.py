"""LoRA on a tiny Llama with PEFT: the fixtures of tests/models/test_lora.c (src/models/lora.c and
the backward in src/models/llama_backward.c).

Base model: tests/models/data/llama_f32/ (llama_oracle.py's; F32, tied embeddings, llama3 RoPE).
Wrapped with peft.get_peft_model(LoraConfig(r=4, lora_alpha=8, lora_dropout=0, all seven
projections)); lora_A ~ N(0, 1/in) and lora_B ~ N(0, 1/r) (not PEFT's B = 0, so that the gradients
of A are not zero and B's product shows in the logits), drawn from torch.manual_seed, rounded to
float32. Everything is then computed in float64 (eager attention) and rounded to float32.

Writes under tests/models/data/:

  lora_peft/              the adapter as PEFT's save_pretrained writes it (adapter_config.json,
                          adapter_model.safetensors, F32; README.md dropped, and
                          base_model_name_or_path made relative to the repository):
                          test_lora.c loads it with mt_lm_lora_load
  lora_peft.ref.safetensors    input_ids I32 (B,T); targets I32 (B,T): the next token, -100 where
                          ignored (the last position and a few others); logits F32 (B,T,V); loss
                          F32 (1): mean cross-entropy over the targets that are not -100;
                          dlogits F32 (B,T,V); and "grad.<PEFT key>" F32: d loss / d every LoRA
                          tensor, under the key adapter_model.safetensors uses

Reverse check (medtrain's writer, PEFT's reader): test_lora writes its adapter (the one loaded
from lora_peft/, saved again by mt_lm_lora_save) to TMP_DIR/lora_saved; then
    /work/torchenv/bin/python tests/oracles/lora_oracle.py --check \
        build-lora/tests/models/lora_tmp/lora_saved
loads it with PeftModel.from_pretrained onto llama_f32 and prints the worst logit difference
against lora_peft.ref.safetensors in the C test's measure (|c - r| / max(|r|, rms)).

Regenerate: /work/torchenv/bin/python tests/oracles/lora_oracle.py  (needs peft; a few seconds)
"""
import json
import os
import shutil
import sys

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "models", "data")
BASE = os.path.join(OUT, "llama_f32")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def base(dtype):
    m = AutoModelForCausalLM.from_pretrained(BASE, dtype=dtype, attn_implementation="eager")
    m.eval()
    return m


def worst_rel(a, ref):
    rms = ref.pow(2).mean().sqrt()
    return ((a - ref).abs() / torch.maximum(ref.abs(), rms)).max().item()


def check(adapter_dir):
    ref = load_file(os.path.join(OUT, "lora_peft.ref.safetensors"))
    model = PeftModel.from_pretrained(base(torch.float64), adapter_dir)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ref["input_ids"].long()).logits
    print(f"{adapter_dir}: PEFT logits vs lora_peft.ref: worst {worst_rel(logits, ref['logits'].double()):.3g}")


def main():
    torch.manual_seed(7)
    model = get_peft_model(base(torch.float64),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS,
                                      bias="none", task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.copy_((torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5).float().double())
            elif "lora_B" in name:
                p.copy_((torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5).float().double())
    B, T, V = 2, 10, model.config.vocab_size
    ids = torch.randint(0, V, (B, T), generator=g)
    targets = torch.full((B, T), -100, dtype=torch.long)
    targets[:, :-1] = ids[:, 1:]
    targets[0, 2] = targets[1, 5] = targets[1, 6] = -100
    out = model(input_ids=ids)
    logits = out.logits
    logits.retain_grad()
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    tensors = {"input_ids": ids.to(torch.int32), "targets": targets.to(torch.int32),
               "logits": logits.detach().float(), "loss": loss.detach().float().reshape(1),
               "dlogits": logits.grad.float()}
    for name, p in model.named_parameters():
        if "lora_" in name:
            key = name.replace(".default", "")
            tensors["grad." + key] = p.grad.float().contiguous()
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(OUT, "lora_peft.ref.safetensors"))
    path = os.path.join(OUT, "lora_peft")
    shutil.rmtree(path, ignore_errors=True)
    model.to(torch.float32).save_pretrained(path)
    os.remove(os.path.join(path, "README.md"))  # PEFT's model card: nothing a test reads
    # PEFT records the absolute path the base came from; keep the fixture free of this checkout's
    # location (PeftModel.from_pretrained(model, dir) does not read it).
    cfg_path = os.path.join(path, "adapter_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["base_model_name_or_path"] = "tests/models/data/llama_f32"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    n = sum(1 for k in tensors if k.startswith("grad."))
    print(f"lora: loss {loss.item():.6f}; {n} LoRA tensors; files {sorted(os.listdir(path))}")
    check(path)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
    else:
        main()
