"""Tiny random Llama-family models saved by transformers as Hugging Face model directories, and the
logits transformers computes for them: the fixtures of tests/models/test_llama.c (the loader and
forward in src/models/llama*.c).

Writes under tests/models/data/:

  llama_f32/           LlamaForCausalLM, F32, one model.safetensors; tie_word_embeddings true (no
                       lm_head.weight in the file); Llama-3.1 rope scaling (rope_type llama3,
                       factor 8, low_freq_factor 1, high_freq_factor 4,
                       original_max_position_embeddings 32, rope_theta 10000: with head_dim 16 the
                       eight frequencies cover all three llama3 regimes: kept, smoothed, divided);
                       config.json as transformers 5 writes it (rope_parameters)
  llama_bf16_sharded/  LlamaForCausalLM, BF16, sharded into model-0000{1,2}-of-00002.safetensors
                       with model.safetensors.index.json; untied lm_head; plain RoPE; config.json
                       rewritten to the transformers 4 spelling that Llama-2 / TinyLlama / Vicuna
                       files on the Hub have ("rope_theta": 10000.0, "rope_scaling": null,
                       "torch_dtype": "bfloat16"); transformers reads it back (the reference is
                       computed from the directory as written)
  mistral_f16/         MistralForCausalLM, F16, one file; head_dim 32 given explicitly (not
                       hidden/heads = 16), one kv head for 4 query heads (multi-query), rope_theta
                       250000, rms_norm_eps 1e-5, sliding_window null; intermediate 128 and
                       vocab 256 (keeps the fixtures under 1 MB together)
  <name>.ref.safetensors
                       "input_ids" I32 (B,T) and "logits" F32 (B,T,V): transformers' logits in
                       float64 (eager attention) from the weights as stored (BF16/F16 weights
                       widened exactly), rounded to float32

All three: hidden 64, 2 layers, 4 attention heads; intermediate 172 and vocab 300 unless said. Weights are not
transformers' init (std 0.02 gives near-uniform attention and logits near 0): linear weights are
N(0, 1/in), embeddings N(0, 1), RMSNorm weights 1 + N(0, 0.2), all from torch.manual_seed, so that
activations, attention scores and logits are of order 1 and a wrong rotation, head mapping or
norm shows. The script prints, per model, the largest difference between transformers' float32
run and the float64 reference in the C test's measure (|c - r| / max(|r|, rms of the logits)):
the noise floor a float32 implementation sits at.

Regenerate (torch, transformers >= 5; /work/torchenv has both; a few seconds on a CPU):
    /work/torchenv/bin/python tests/oracles/llama_oracle.py
Random init is torch's CPU generator: a given torch version gives the same weights every run.
"""
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "models", "data")

COMMON = dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
              vocab_size=300, bos_token_id=1, eos_token_id=2)


def fill(model, seed):
    """Order-1 weights (see the module docstring), drawn in named_parameters order."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                v = 1 + 0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            elif "embed_tokens" in name:
                v = torch.randn(p.shape, generator=g, dtype=torch.float64)
            else:
                v = torch.randn(p.shape, generator=g, dtype=torch.float64) / p.shape[1] ** 0.5
            p.copy_(v.to(p.dtype))


def logits_of(path, dtype, ids):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    m.eval()
    with torch.no_grad():
        return m(input_ids=ids).logits


def worst_rel(a, ref):
    rms = ref.pow(2).mean().sqrt()
    return ((a - ref).abs() / torch.maximum(ref.abs(), rms)).max().item()


def make(name, cfg_cls, cfg, seed, dtype, batch, seq, shard=None, legacy=False):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg_cls(**cfg), dtype=torch.float32)
    fill(model, seed)
    model = model.to(dtype)
    path = os.path.join(OUT, name)
    shutil.rmtree(path, ignore_errors=True)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, safe_serialization=True, **kw)
    if legacy:
        # transformers 4's spelling, as most Hub files still have it.
        with open(os.path.join(path, "config.json")) as f:
            c = json.load(f)
        rp = c.pop("rope_parameters")
        assert rp.get("rope_type", "default") == "default"
        c["rope_theta"] = rp["rope_theta"]
        c["rope_scaling"] = None
        c["torch_dtype"] = c.pop("dtype")
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
            f.write("\n")
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, cfg["vocab_size"], (batch, seq), generator=g)
    ref = logits_of(path, torch.float64, ids)
    f32 = logits_of(path, torch.float32, ids).double()
    save_file({"input_ids": ids.to(torch.int32).contiguous(),
               "logits": ref.to(torch.float32).contiguous()},
              os.path.join(OUT, name + ".ref.safetensors"))
    files = sorted(os.listdir(path))
    size = sum(os.path.getsize(os.path.join(path, f)) for f in files)
    print(f"{name}: {files} ({size} bytes); logits {tuple(ref.shape)}, max |ref| "
          f"{ref.abs().max().item():.3g}; transformers f32 vs f64: {worst_rel(f32, ref):.3g}")


def main():
    make("llama_f32", LlamaConfig,
         dict(COMMON, num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=256,
              rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 32}),
         seed=1, dtype=torch.float32, batch=2, seq=12)
    make("llama_bf16_sharded", LlamaConfig,
         dict(COMMON, num_key_value_heads=2, tie_word_embeddings=False, max_position_embeddings=64,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
         seed=2, dtype=torch.bfloat16, batch=2, seq=7, shard="150KB", legacy=True)
    make("mistral_f16", MistralConfig,
         dict(COMMON, num_key_value_heads=1, head_dim=32, tie_word_embeddings=False,
              intermediate_size=128, vocab_size=256,
              max_position_embeddings=64, rms_norm_eps=1e-5, sliding_window=None,
              rope_parameters={"rope_type": "default", "rope_theta": 250000.0}),
         seed=3, dtype=torch.float16, batch=2, seq=9)


if __name__ == "__main__":
    main()
