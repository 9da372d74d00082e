/* Decoder language models of the Llama family (Llama 2 and 3, Mistral, Vicuna, TinyLlama), read
 * from Hugging Face model directories, with a forward that gives transformers' logits.
 *
 * The directory. config.json (LlamaForCausalLM or MistralForCausalLM), and the weights as one
 * model.safetensors or as shards named by model.safetensors.index.json ("weight_map": tensor ->
 * shard file). Tensors may be F32, BF16, F16 or F64; shards are memory-mapped and every tensor is
 * converted to f32, the compute dtype, on the way into the model. Only safetensors are read (a
 * directory with pytorch_model.bin only is an error that says so). tokenizer.json is the
 * tokenizer's business (tokenizer.h); generation_config.json is not read.
 *
 * Loading is strict, as torch's load_state_dict(strict=True): every tensor the architecture needs
 * must be present with exactly its Hugging Face shape, and every tensor the files hold must be one
 * of them; the error lists the missing, the unexpected and the mis-shaped tensors by name (with the
 * file's and the model's shapes, and the file each came from). Two exceptions, as transformers
 * makes them: "*.rotary_emb.inv_freq" (older checkpoints saved RoPE's buffer) is ignored, and so is
 * "lm_head.weight" when the embeddings are tied (some files carry the shared tensor twice).
 * Mistakes in config.json name the file and the key ("config.json: num_attention_heads: missing").
 *
 * The architecture, per layer (B sequences of T tokens, C = hidden_size, Hq query heads and Hkv
 * key/value heads of D = head_dim, I = intermediate_size, V = vocab_size):
 *
 *     h = RMSNorm(x) * input_layernorm                           (B,T,C)
 *     q, k, v = h Wq^T, h Wk^T, h Wv^T                           (B,T,Hq,D), (B,T,Hkv,D) x2
 *     q, k = RoPE(q), RoPE(k) at positions 0..T-1                 (rotate_half convention)
 *     a = softmax(q k^T / sqrt(D) + causal mask) v                (query head h reads kv head
 *                                                                  h / (Hq/Hkv): grouped-query)
 *     x = x + a Wo^T
 *     x = x + (silu(h2 Wgate^T) * h2 Wup^T) Wdown^T,  h2 = RMSNorm(x) * post_attention_layernorm
 *
 * after an embedding lookup and before the final RMSNorm and lm_head (the embedding matrix when
 * tie_word_embeddings). Weights keep Hugging Face's (out, in) layout; projections are GEMMs with
 * the weight transposed. No biases (attention_bias or mlp_bias true, and hidden_act other than
 * silu, are refused). RoPE: rope_theta, and rope scaling of type default, linear or llama3
 * (Llama 3.1's frequency-dependent scaling); yarn, dynamic, longrope and the rest are refused
 * naming the type. Angles are computed as transformers computes them, in f32.
 *
 * What the forward does not do (yet): attention masks (every sequence starts at position 0;
 * padding goes at the end, where causal attention keeps it from changing the real tokens), a KV
 * cache, Mistral's sliding window (a sequence longer than sliding_window is refused rather than
 * computed differently from transformers).
 *
 * Memory. The base weights are frozen: they live in the table's `buffers` flat buffer (f32, on the
 * context's device), in the order of transformers' state_dict; `params` and `grads` are empty until
 * trainable tensors (LoRA) are added. Activations live in one device allocation per model, sized
 * for the largest (B, T) seen and reused; a training forward keeps every layer's activations (what
 * a backward needs: each layer's input, normalised inputs and rstd, q and k after RoPE, v, the
 * attention output and its log-sum-exp, gate, up and their SwiGLU) and the backward's scratch
 * (gradients of the residual stream and of one layer's activations, reused layer by layer), an
 * inference forward one layer's worth. LoRA adds two (N, r) scratch rows per model, and with
 * dropout the dropped input and its u8 mask (N, widest projection input); the LoRA path's
 * x A^T is recomputed by the backward rather than kept.
 *
 *     mt_lm *lm;
 *     MT_TRY(mt_lm_load(ctx, "models/TinyLlama-1.1B", &lm));
 *     mt_tensor ids = mt_tensor_2d(tokens, MT_I32, MT_CPU, B, T);
 *     MT_TRY(mt_lm_forward(lm, ctx, &ids, false, &logits)); // logits (B,T,V), or (B,V): last only
 *     mt_lm_free(lm);
 */
#ifndef MEDTRAIN_LM_H
#define MEDTRAIN_LM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "medtrain/model.h"
#include "medtrain/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mt_lm_rope_type {
    MT_LM_ROPE_DEFAULT, /* inv_freq[i] = 1 / theta^(2i/D) */
    MT_LM_ROPE_LINEAR,  /* inv_freq / factor (position interpolation) */
    MT_LM_ROPE_LLAMA3,  /* Llama 3.1: long wavelengths / factor, short kept, smoothed between */
} mt_lm_rope_type;

/* config.json, with transformers' defaults where a key may be absent. Both spellings of RoPE are
 * read: transformers 4's "rope_theta" + "rope_scaling" (null or {"rope_type" or "type", ...}) and
 * transformers 5's "rope_parameters" ({"rope_type", "rope_theta", ...}). */
typedef struct mt_lm_config {
    /* "LlamaForCausalLM" or "MistralForCausalLM": architectures[0], or from model_type "llama" /
     * "mistral" when architectures is absent */
    char architecture[48];
    int64_t hidden_size;             /* required */
    int64_t intermediate_size;       /* required */
    int64_t num_hidden_layers;       /* required */
    int64_t num_attention_heads;     /* required */
    int64_t num_key_value_heads;     /* default num_attention_heads; divides it */
    int64_t head_dim;                /* default hidden_size / num_attention_heads; even */
    int64_t vocab_size;              /* required */
    int64_t max_position_embeddings; /* default 2048; informational (longer sequences run) */
    double rms_norm_eps;             /* default 1e-6 */
    double rope_theta;               /* default 10000 */
    mt_lm_rope_type rope_type;
    double rope_factor;                  /* linear, llama3 */
    double rope_low_freq_factor;         /* llama3 */
    double rope_high_freq_factor;        /* llama3 */
    int64_t rope_original_max_positions; /* llama3: original_max_position_embeddings */
    bool tie_word_embeddings;            /* default false */
    int64_t sliding_window;              /* Mistral; 0 when null or absent */
    char torch_dtype[16]; /* "torch_dtype" or "dtype" as written ("bfloat16"), or "" */
} mt_lm_config;

/* Parses config.json text (n bytes); name (the path) is used in messages. Unknown keys are
 * ignored; known keys with wrong types or values, missing required keys and unsupported features
 * fail naming name and the key (MT_ERR_CONFIG, or MT_ERR_UNSUPPORTED for a valid config medtrain
 * cannot run). */
mt_status mt_lm_config_parse(const char *text, size_t n, const char *name, mt_lm_config *cfg);
mt_status mt_lm_config_read(const char *path, mt_lm_config *cfg);

typedef struct mt_lm mt_lm;

/* Reads the model directory dir onto ctx's device (see the top of this file). ctx must outlive the
 * model. Nothing is kept open: the shards are unmapped before this returns. */
mt_status mt_lm_load(mt_ctx *ctx, const char *dir, mt_lm **out);
void mt_lm_free(mt_lm *lm);
const mt_lm_config *mt_lm_get_config(const mt_lm *lm);
/* The parameter table: Hugging Face names and shapes, (out, in) for projections; base weights are
 * not trainable and sit in `buffers`. */
mt_params *mt_lm_params(mt_lm *lm);
int mt_lm_find(const mt_lm *lm, const char *name); /* index in the table, or -1 */
/* Table entry i between the device and host memory (numel floats). */
mt_status mt_lm_param_get(mt_lm *lm, int i, float *dst);
mt_status mt_lm_param_set(mt_lm *lm, int i, const float *src);

/* ids (B,T) i32 (on the host or ctx's device; values in [0, vocab_size)) -> logits f32 on ctx's
 * device: (B,T,V) for every position, or (B,V) for the last position only (generation; the final
 * norm and lm_head then run on B rows). train keeps every layer's activations for a backward. ctx
 * must run on the model's device. */
mt_status mt_lm_forward(mt_lm *lm, mt_ctx *ctx, const mt_tensor *ids, bool train,
                        mt_tensor *logits);
/* ---- LoRA (PEFT's LoraConfig; see src/models/lora.c) -------------------------------------------
 *
 * Each targeted projection y = x W^T becomes y = x W^T + scale * (x A^T) B^T with A (r, in) and
 * B (out, r) trainable, scale = alpha / r (or alpha / sqrt(r) with rsLoRA). A and B are appended to
 * the table, trainable (in `params`, their gradients in `grads`), named as PEFT's
 * adapter_model.safetensors names them: "base_model.model.model.layers.0.self_attn.q_proj.
 * lora_A.weight", in PeftModel's state_dict order (layer by layer; q k v o gate up down; A then B).
 * Base weights stay frozen: no gradients, no optimizer state. */
typedef struct mt_lm_lora_opts {
    int r;                  /* rank, >= 1 */
    float alpha;            /* lora_alpha; 0 means r (scale 1) */
    float dropout;          /* lora_dropout: in a training forward, the input of each LoRA path (not
                               the frozen projection's) is dropped, as PEFT's lora_dropout; each
                               projection of each layer has its own mask, from Philox keyed by (seed,
                               step) (mt_lm_lora_set_step), recomputed by the backward */
    bool rslora;            /* use_rslora: scale = alpha / sqrt(r) */
    const char *targets;    /* comma-separated module names (q_proj,k_proj,v_proj,o_proj,gate_proj,
                               up_proj,down_proj); NULL or "" means all seven */
    uint64_t seed;          /* PEFT's init: A kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(in)), B = 0;
                               Philox stream (seed, "init", table index) as mt_model_init */
    const char *base_model; /* base_model_name_or_path for adapter_config.json; may be NULL */
} mt_lm_lora_opts;

/* Adds LoRA to every targeted projection of every layer and initialises it (once per model). */
mt_status mt_lm_lora_add(mt_lm *lm, const mt_lm_lora_opts *opts);
/* The step that keys the dropout masks of the next training forwards (and their backward: a step
 * set between a forward and its backward does not change the backward's masks). */
void mt_lm_lora_set_step(mt_lm *lm, uint64_t step);
/* Writes a PEFT adapter directory (adapter_config.json, adapter_model.safetensors F32 with PEFT's
 * key names) that PeftModel.from_pretrained loads; atomically: written into "<dir>.tmp", synced,
 * renamed to dir (an existing dir is replaced). */
mt_status mt_lm_lora_save(mt_lm *lm, const char *dir);
/* Reads a PEFT adapter directory. Without LoRA yet, adds it as adapter_config.json says (r,
 * lora_alpha, target_modules, lora_dropout, use_rslora); with LoRA, the file must agree with it.
 * Every LoRA tensor must be present with its shape, and nothing else: errors name the tensor.
 * Unsupported configs (DoRA, bias other than "none", rank_pattern/alpha_pattern, fan_in_fan_out,
 * modules_to_save, other peft_type) are refused naming the key. */
mt_status mt_lm_lora_load(mt_lm *lm, const char *dir);
/* The gradient of trainable table entry i (numel floats, host). */
mt_status mt_lm_grad_get(mt_lm *lm, int i, float *dst);
/* grads = 0 (mt_lm_backward accumulates; mt_lm_lora_add starts from zero). */
mt_status mt_lm_zero_grads(mt_lm *lm);

/* After a training forward of every position (logits (B,T,V)) on the same ids: grads +=
 * d loss / d (LoRA tensors) for dlogits = d loss / d logits (the loss is the caller's). The
 * input gradient runs through every frozen projection (dx = dy W, plus the LoRA path
 * scale * (dy B) A), the norms, RoPE and attention, but no base weight gets a gradient. ready (may
 * be NULL) is called once per LoRA tensor with its range of the gradient buffer as soon as it is
 * final (the last layer's first). A model without LoRA is refused (nothing to differentiate). */
mt_status mt_lm_backward(mt_lm *lm, mt_ctx *ctx, const mt_tensor *dlogits, mt_grad_ready_fn ready,
                         void *user);

/* Bytes of activation memory the model holds now (0 before the first forward), and what a forward
 * of B x T would need. */
size_t mt_lm_activation_bytes(const mt_lm *lm);
size_t mt_lm_plan(const mt_lm *lm, int64_t batch, int64_t seq, bool train, bool last_only);

#ifdef __cplusplus
}
#endif

#endif
