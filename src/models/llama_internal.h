/* What the Llama files share (lm.h is the contract):
 *
 *   llama_config.c  config.json -> mt_lm_config
 *   llama_load.c    the parameter table, the model directory (single or sharded safetensors), the
 *                   strict name/shape check and the conversion into the flat buffer
 *   llama.c         RoPE tables, activation memory, the forward one block at a time and the
 *                   backward (LoRA gradients) the same blocks in reverse
 *   lora.c          LoRA: the trainable table entries, PEFT's init, the projections with their
 *                   low-rank path (forward and backward), PEFT adapter directories
 *
 * Shapes in comments: B sequences, T tokens, N = B*T rows, C hidden, Hq / Hkv heads of D, I
 * intermediate, V vocabulary. */
#ifndef MEDTRAIN_MODELS_LLAMA_INTERNAL_H
#define MEDTRAIN_MODELS_LLAMA_INTERNAL_H

#include "medtrain/lm.h"

/* One decoder layer's weights: views into the flat buffer, Hugging Face (out, in) layout. */
typedef struct llama_layer {
    mt_tensor in_norm;           /* (C) input_layernorm */
    mt_tensor wq, wk, wv, wo;    /* (Hq*D, C), (Hkv*D, C) x2, (C, Hq*D) */
    mt_tensor post_norm;         /* (C) post_attention_layernorm */
    mt_tensor wgate, wup, wdown; /* (I, C) x2, (C, I) */
} llama_layer;

/* The seven projections of a layer, in PEFT's (module registration) order. */
enum { LLAMA_Q, LLAMA_K, LLAMA_V, LLAMA_O, LLAMA_GATE, LLAMA_UP, LLAMA_DOWN, LLAMA_N_PROJ };

/* One layer's activations for a forward of (B, T). A training forward keeps one set per layer
 * (a backward reads them in reverse); an inference forward points every layer at the same set. */
typedef struct llama_layer_acts {
    mt_tensor x;           /* (N, C)       the layer's input (residual stream) */
    mt_tensor h1;          /* (N, C)       RMSNorm(x) * input_layernorm */
    mt_tensor rstd1;       /* (N)          its 1/rms per row */
    mt_tensor q;           /* (B,T,Hq,D)   after RoPE */
    mt_tensor k, v;        /* (B,T,Hkv,D)  k after RoPE */
    mt_tensor a;           /* (B,T,Hq,D)   attention output (o_proj's input) */
    mt_tensor lse;         /* (B,Hq,T)     softmax log-sum-exp per query */
    mt_tensor x2;          /* (N, C)       x + a Wo^T */
    mt_tensor h2;          /* (N, C)       RMSNorm(x2) * post_attention_layernorm */
    mt_tensor rstd2;       /* (N) */
    mt_tensor gate, up, s; /* (N, I)  h2 Wgate^T, h2 Wup^T, silu(gate) * up (down_proj's input) */
} llama_layer_acts;

typedef struct llama_acts {
    int64_t B, T;
    bool train, last_only;
    mt_tensor ids;           /* (N) i32 */
    llama_layer_acts *layer; /* num_hidden_layers entries */
    mt_tensor xf;            /* (N, C) the last layer's output */
    mt_tensor xl;            /* (B, C) its last position per sequence (last_only) */
    mt_tensor hf, rstdf;     /* (R, C), (R): model.norm's output, R = N or B (last_only) */
    /* LoRA scratch (when the model has LoRA): u = x A^T, and g = dy B in the backward */
    mt_tensor lora_u, lora_g; /* (N, r) */
    /* LoRA dropout (train, dropout > 0): the dropped input and its mask, (N, widest input) */
    mt_tensor lora_xd, lora_mask; /* f32, u8 */
    /* backward scratch (train): gradients of the residual stream and of one layer's activations */
    mt_tensor dx, dh;     /* (N, C) */
    mt_tensor dgate, dup; /* (N, I) */
    mt_tensor da, dq;     /* (B,T,Hq,D) */
    mt_tensor dk, dv;     /* (B,T,Hkv,D) */
} llama_acts;

/* LoRA as added (mt_lm_lora_add). */
typedef struct llama_lora {
    bool on;
    mt_lm_lora_opts opts; /* targets and base_model point into the strings below */
    char targets[128];
    char base_model[512];
    unsigned mask;     /* bit LLAMA_Q.. set for each targeted projection */
    float scale;       /* alpha / r, or alpha / sqrt(r) */
    uint64_t step;     /* keys the dropout masks (mt_lm_lora_set_step) */
    uint64_t fwd_step; /* the step of the last training forward: its backward's masks */
    int *index;        /* (L, LLAMA_N_PROJ): table index of lora_A (lora_B follows), or -1 */
    mt_tensor t_params, t_grads; /* the allocations behind P.params and P.grads */
} llama_lora;

struct mt_lm {
    mt_ctx *ctx;
    mt_lm_config cfg;
    mt_params P;          /* the table; base weights in P.buffers */
    mt_tensor t_buffers;  /* the allocation behind P.buffers */
    mt_tensor embed;      /* (V, C) model.embed_tokens.weight */
    mt_tensor final_norm; /* (C) model.norm.weight */
    mt_tensor lm_head;    /* (V, C) lm_head.weight, or embed when tied */
    llama_layer *layers;
    float *stage; /* host staging (devices other than the CPU); stage_n floats */
    size_t stage_n;
    /* RoPE: cos and sin (rope_len, D/2) f32 on the device, rows are positions 0.. */
    mt_tensor rope_cos, rope_sin;
    int64_t rope_len;
    /* activations */
    mt_tensor act; /* one u8 allocation of act_cap bytes */
    size_t act_cap;
    llama_layer_acts *layer_acts; /* num_hidden_layers views */
    llama_acts acts;
    llama_lora lora;
};

/* llama_load.c: llama_build_table appends the table entries of lm->cfg to lm->P, in transformers'
 * state_dict order; llama_bind_weights points lm's weight views (embed, layers, final_norm,
 * lm_head) into P.buffers. */
mt_status llama_build_table(mt_lm *lm);
void llama_bind_weights(mt_lm *lm);

/* llama.c: the inverse frequencies of cfg's RoPE (D/2 values), in f32 as transformers computes
 * them. */
void llama_inv_freq(const mt_lm_config *cfg, float *inv_freq);

/* lora.c: y (N,out) = x W^T (+ y when acc) for projection proj of layer l, plus its LoRA path
 * scale * (x A^T) B^T when it has one. */
mt_status llama_proj_fwd(mt_lm *lm, mt_ctx *ctx, int64_t l, int proj, const mt_tensor *x,
                         const mt_tensor *w, bool acc, mt_tensor *y);
/* Its backward for dy (N,out): dx (N,in) = dy W (+ dx when acc) + scale * (dy B) A, and
 * dA += scale * (dy B)^T x, dB += scale * dy^T (x A^T). */
mt_status llama_proj_bwd(mt_lm *lm, mt_ctx *ctx, int64_t l, int proj, const mt_tensor *x,
                         const mt_tensor *w, const mt_tensor *dy, bool acc, mt_tensor *dx);
/* Reports layer l's LoRA gradients as final, in the reverse of the table. */
mt_status llama_lora_ready(mt_lm *lm, int64_t l, mt_grad_ready_fn ready, void *user);
void llama_lora_free(mt_lm *lm);

#endif
