#!/usr/bin/env bash
# medtrain pack-text end to end:
#   - tests/data/text/mixed.jsonl (prompt/response and LLaVA conversations with both role
#     spellings, unicode, images) packs under plain, vicuna_v1 and llama-3 with a SentencePiece
#     (Llama-2) and a byte-level (Llama-3) tokenizer.json;
#   - with h5py + `tokenizers` (when PYTHON has them): ids and loss mask equal an independent
#     rendering of the template segment by segment; with the byte-level tokenizer the ids decode
#     to the template's exact text; each run of loss tokens decodes to an assistant message and
#     its end token, and there is one run per assistant turn; attributes, splits and images;
#   - --max-len cuts and counts; the same input gives the same tokens and splits;
#   - bad input: malformed JSON names file and line (or is skipped and counted under --skip-bad),
#     a conversation with no assistant turn, an unknown role, a missing tokenizer.json and an
#     empty file fail with a message; no pack or PATH.tmp is left behind.
#   test_pack_text_cli.sh MEDTRAIN SRCDIR [PYTHON]
set -u
medtrain=$1
srcdir=$2
python=${3:-}
source "$(dirname "$0")/../lib.sh"

text=$srcdir/text
mkdir -p "$tmp/llama2" "$tmp/llama3"
cp "$srcdir/tokenizers/llama2.json" "$tmp/llama2/tokenizer.json"
cp "$srcdir/tokenizers/llama3.json" "$tmp/llama3/tokenizer.json"
grep -v '"c-3"' "$text/mixed.jsonl" >"$tmp/two_turn.jsonl" # plain takes one question and answer

for model in llama2 llama3; do
  for tmpl in plain vicuna_v1 llama-3; do
    in=$text/mixed.jsonl
    [ "$tmpl" = plain ] && in=$tmp/two_turn.jsonl
    [ "$tmpl" = llama-3 ] && [ "$model" = llama2 ] && continue # no header tokens in Llama-2
    out=$tmp/$model-$tmpl.h5
    run "pack_${model}_$tmpl" 0 "$tmp/$model-$tmpl.log" -- "$medtrain" pack-text --jsonl "$in" \
      --model "$tmp/$model" --out "$out" --template "$tmpl" --split 50,25,25 || continue
    expect_in "summary_${model}_$tmpl" "$tmp/$model-$tmpl.log" "^packed [0-9]+ samples \\(train"
    expect_in "no_truncation_${model}_$tmpl" "$tmp/$model-$tmpl.log" "truncated 0 samples"
  done
done
run pack_system_vicuna 0 "$tmp/sys_v.log" -- "$medtrain" pack-text --jsonl "$text/system.jsonl" \
  --model "$tmp/llama3" --out "$tmp/sys-vicuna.h5" --template vicuna_v1
run pack_system_llama3 0 "$tmp/sys_l.log" -- "$medtrain" pack-text --jsonl "$text/system.jsonl" \
  --model "$tmp/llama3" --out "$tmp/sys-llama3.h5" --template llama-3

# Determinism: the same input and options give the same samples and splits.
run pack_again 0 "$tmp/again.log" -- "$medtrain" pack-text --jsonl "$text/mixed.jsonl" \
  --model "$tmp/llama3" --out "$tmp/again.h5" --template llama-3 --split 50,25,25
same=1
for obj in /tokens /offsets /loss_mask /meta/split /splits/train /splits/val /splits/test /image_index /image_names; do
  h5diff -q "$tmp/llama3-llama-3.h5" "$tmp/again.h5" "$obj" "$obj" >/dev/null 2>&1 || { same=0; bad "deterministic $obj"; }
done
[ "$same" = 1 ] && ok deterministic

# Truncation: every sample here is longer than 12 tokens.
run pack_truncate 0 "$tmp/trunc.log" -- "$medtrain" pack-text --jsonl "$tmp/two_turn.jsonl" \
  --model "$tmp/llama3" --out "$tmp/trunc.h5" --template plain --max-len 20
expect_in truncation_counted "$tmp/trunc.log" "truncated [1-9][0-9]* samples"
# A prompt longer than max-len leaves no assistant token: that sample is dropped and counted.
{ printf '{"prompt": "%s", "response": "Clear."}\n' "$(printf 'word %.0s' $(seq 200))"
  echo '{"prompt": "Short?", "response": "Clear."}'; } >"$tmp/long.jsonl"
run pack_truncate_all 0 "$tmp/trunc2.log" -- "$medtrain" pack-text --jsonl "$tmp/long.jsonl" \
  --model "$tmp/llama3" --out "$tmp/trunc2.h5" --template vicuna_v1 --max-len 300
expect_in truncation_drops "$tmp/trunc2.log" "dropped 1 samples with no assistant token"
expect_in truncation_drops_packed "$tmp/trunc2.log" "^packed 1 samples"

# Bad input.
run malformed_fails 1 "$tmp/bad1.log" -- "$medtrain" pack-text --jsonl "$text/malformed.jsonl" \
  --model "$tmp/llama3" --out "$tmp/bad1.h5"
expect_in malformed_names_line "$tmp/bad1.log" "malformed.jsonl:3: malformed JSON"
run malformed_skip 0 "$tmp/bad2.log" -- "$medtrain" pack-text --jsonl "$text/malformed.jsonl" \
  --model "$tmp/llama3" --out "$tmp/bad2.h5" --skip-bad
expect_in malformed_skip_warns "$tmp/bad2.log" "skipped .*malformed.jsonl:3: malformed JSON"
expect_in malformed_skip_counted "$tmp/bad2.log" "^packed 3 samples"
expect_in malformed_skip_count "$tmp/bad2.log" "skipped 1 bad lines of 4"
run no_assistant_fails 1 "$tmp/bad3.log" -- "$medtrain" pack-text --jsonl "$text/no_assistant.jsonl" \
  --model "$tmp/llama3" --out "$tmp/bad3.h5" --template vicuna_v1
expect_in no_assistant_names_line "$tmp/bad3.log" "no_assistant.jsonl:2: .*no assistant turn"
run unknown_role_fails 1 "$tmp/bad4.log" -- "$medtrain" pack-text --jsonl "$text/unknown_role.jsonl" \
  --model "$tmp/llama3" --out "$tmp/bad4.h5"
expect_in unknown_role_message "$tmp/bad4.log" "unknown_role.jsonl:1: conversations\[1\]: unknown role"
mkdir -p "$tmp/nomodel"
run no_tokenizer_fails 1 "$tmp/bad5.log" -- "$medtrain" pack-text --jsonl "$text/mixed.jsonl" \
  --model "$tmp/nomodel" --out "$tmp/bad5.h5"
expect_in no_tokenizer_message "$tmp/bad5.log" "no tokenizer.json in the model folder"
run empty_fails 1 "$tmp/bad6.log" -- "$medtrain" pack-text --jsonl "$text/empty.jsonl" \
  --model "$tmp/llama3" --out "$tmp/bad6.h5"
expect_in empty_message "$tmp/bad6.log" "empty.jsonl: no records"
printf '{"prompt": "x", "response": "ok"}\n{"prompt": "x", "response": "\xff\xfe"}\n' >"$tmp/utf8.jsonl"
run bad_utf8_fails 1 "$tmp/bad9.log" -- "$medtrain" pack-text --jsonl "$tmp/utf8.jsonl" \
  --model "$tmp/llama3" --out "$tmp/bad9.h5"
expect_in bad_utf8_names_line "$tmp/bad9.log" "utf8.jsonl:2: .*not valid UTF-8"
run bad_utf8_skipped 0 "$tmp/bad10.log" -- "$medtrain" pack-text --jsonl "$tmp/utf8.jsonl" \
  --model "$tmp/llama3" --out "$tmp/utf8.h5" --skip-bad
expect_in bad_utf8_skip_count "$tmp/bad10.log" "skipped 1 bad lines of 2"
run unknown_template 2 "$tmp/bad7.log" -- "$medtrain" pack-text --jsonl "$text/mixed.jsonl" \
  --model "$tmp/llama3" --out "$tmp/bad7.h5" --template chatml
run exists_refused 2 "$tmp/bad8.log" -- "$medtrain" pack-text --jsonl "$text/mixed.jsonl" \
  --model "$tmp/llama3" --out "$tmp/again.h5" --template llama-3
left=$(ls "$tmp"/bad*.h5 "$tmp"/*.tmp 2>/dev/null | grep -v bad2.h5)
if [ -z "$left" ]; then ok nothing_left_behind; else bad nothing_left_behind "$left"; fi

# Content checks with h5py and tokenizers.
if [ -n "$python" ] && "$python" -c "import h5py, tokenizers" 2>/dev/null; then
  if "$python" - "$tmp" "$text" >"$tmp/check.log" 2>&1 <<'EOF'
import json, sys
import h5py, numpy as np
from tokenizers import Tokenizer

tmp, text = sys.argv[1], sys.argv[2]
VICUNA_SYS = ("A chat between a curious user and an artificial intelligence assistant. The assistant "
              "gives helpful, detailed, and polite answers to the user's questions.")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
fails = []

def turns_of(rec):
    if "conversations" in rec:
        return [(ROLES[t["from"]], t["value"].strip(" \t\r\n")) for t in rec["conversations"]]
    return [("user", rec["prompt"].strip(" \t\r\n")), ("assistant", rec["response"].strip(" \t\r\n"))]

def segments(tmpl, turns, tok):
    """(id or text, loss) segments and the template's text, as docs/DATA.md defines them."""
    bos = tok.token_to_id("<s>") if tok.token_to_id("<s>") is not None else tok.token_to_id("<|begin_of_text|>")
    eos = tok.token_to_id("</s>") if tok.token_to_id("</s>") is not None else tok.token_to_id("<|end_of_text|>")
    T = lambda i: tok.id_to_token(i)
    segs, txt = [], ""
    if tmpl == "plain":
        (_, q), (_, a) = turns
        segs = [(bos, 0), (q + "\n", 0), (a, 1), (eos, 1)]
        txt = T(bos) + q + "\n" + a + T(eos)
    elif tmpl == "vicuna_v1":
        sys_ = VICUNA_SYS
        if turns[0][0] == "system":
            sys_, turns = turns[0][1], turns[1:]
        segs, txt = [(bos, 0), (sys_, 0)], T(bos) + sys_
        for r in range(0, len(turns), 2):
            head = " USER: " if r == 0 else "USER: "
            q, a = turns[r][1], turns[r + 1][1]
            segs += [(head + q + " ASSISTANT:", 0), (" " + a, 1), (eos, 1)]
            txt += head + q + " ASSISTANT: " + a + T(eos)
    else:
        ids = {n: tok.token_to_id(n) for n in ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
        segs, txt = [(ids["<|begin_of_text|>"], 0)], "<|begin_of_text|>"
        for role, m in turns:
            l = int(role == "assistant")
            segs += [(ids["<|start_header_id|>"], 0), (role, 0), (ids["<|end_header_id|>"], 0), ("\n\n", 0), (m, l), (ids["<|eot_id|>"], l)]
            txt += "<|start_header_id|>" + role + "<|end_header_id|>\n\n" + m + "<|eot_id|>"
    return segs, txt

def render(segs, tok):
    sp = tok.id_to_token(tok.encode("a", add_special_tokens=False).ids[0]).startswith("\u2581")
    ids, mask = [], []
    for s, l in segs:
        if isinstance(s, str):
            if sp and s.startswith(" "):
                s = s[1:]
            e = tok.encode(s, add_special_tokens=False).ids if s else []
        else:
            e = [s]
        ids += e
        mask += [l] * len(e)
    return ids, mask

def split_of(i):
    return {0: "train", 1: "val", 2: "test"}

def check(pack, jsonl, tmpl, model, max_len=None):
    tok = Tokenizer.from_file(f"{tmp}/{model}/tokenizer.json")
    recs = [json.loads(l) for l in open(jsonl, encoding="utf-8") if l.strip()]
    with h5py.File(pack, "r") as f:
        tokens, offsets, mask = f["tokens"][:], f["offsets"][:], f["loss_mask"][:]
        a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        name = f"{model}/{tmpl}"
        if a["format"] != "medtrain-text" or a["version"] != 1 or a["template"] != tmpl:
            fails.append(f"{name}: attributes {dict(a)}")
        import hashlib
        if a["tokenizer_digest"] != hashlib.sha256(open(f"{tmp}/{model}/tokenizer.json", "rb").read()).hexdigest():
            fails.append(f"{name}: tokenizer digest")
        if len(offsets) != len(recs) + 1 or offsets[0] != 0 or offsets[-1] != len(tokens) or len(mask) != len(tokens):
            fails.append(f"{name}: offsets {offsets} for {len(recs)} records, {len(tokens)} tokens")
            return
        split = f["meta/split"][:]
        for s, sname in enumerate(["train", "val", "test"]):
            if list(f["splits/" + sname][:]) != [i for i in range(len(split)) if split[i] == s]:
                fails.append(f"{name}: /splits/{sname}")
        for i, rec in enumerate(recs):
            ids = tokens[offsets[i]:offsets[i + 1]].tolist()
            m = mask[offsets[i]:offsets[i + 1]].tolist()
            turns = turns_of(rec)
            segs, want_text = segments(tmpl, turns, tok)
            want_ids, want_mask = render(segs, tok)
            if ids != want_ids or m != want_mask:
                fails.append(f"{name} sample {i}: ids/mask differ from the segment rendering\n  got  {ids}\n  want {want_ids}\n  mask {m}\n  want {want_mask}")
                continue
            text = tok.decode(ids, skip_special_tokens=False)
            if model == "llama3" and text != want_text:
                fails.append(f"{name} sample {i}: decodes to {text!r}, template text {want_text!r}")
            # the loss runs: one per assistant turn, each its message plus the end token
            runs, cur = [], []
            for t, l in zip(ids, m):
                if l: cur.append(t)
                elif cur: runs.append(cur); cur = []
            if cur: runs.append(cur)
            answers = [t for r, t in turns if r == "assistant"]
            end = {"plain": None, "vicuna_v1": None, "llama-3": "<|eot_id|>"}[tmpl]
            if len(runs) != len(answers):
                fails.append(f"{name} sample {i}: {len(runs)} loss runs for {len(answers)} assistant turns")
                continue
            for r, ans in zip(runs, answers):
                end_id = r[-1]
                body = tok.decode(r[:-1], skip_special_tokens=False).strip(" ")
                if body != ans or not (end_id == tok.token_to_id(end) if end else tok.id_to_token(end_id) in ("</s>", "<|end_of_text|>")):
                    fails.append(f"{name} sample {i}: loss run decodes to {body!r} + {tok.id_to_token(end_id)!r}, want {ans!r}")
        if "image_index" in f:
            names = [x.decode() if isinstance(x, bytes) else x for x in f["image_names"][:]]
            got = [names[k] if k >= 0 else None for k in f["image_index"][:]]
            want = [r.get("image") for r in recs]
            if got != want:
                fails.append(f"{name}: images {got}, want {want}")
        elif any("image" in r for r in recs):
            fails.append(f"{name}: no /image_index")

two = f"{tmp}/two_turn.jsonl"
mixed = f"{text}/mixed.jsonl"
for model in ["llama2", "llama3"]:
    check(f"{tmp}/{model}-plain.h5", two, "plain", model)
    check(f"{tmp}/{model}-vicuna_v1.h5", mixed, "vicuna_v1", model)
check(f"{tmp}/llama3-llama-3.h5", mixed, "llama-3", "llama3")
check(f"{tmp}/sys-vicuna.h5", f"{text}/system.jsonl", "vicuna_v1", "llama3")
check(f"{tmp}/sys-llama3.h5", f"{text}/system.jsonl", "llama-3", "llama3")

# Truncation keeps the first max_len tokens and counts the samples it cut.
with h5py.File(f"{tmp}/trunc.h5", "r") as f, h5py.File(f"{tmp}/llama3-plain.h5", "r") as full:
    lens = np.diff(f["offsets"][:])
    flens = np.diff(full["offsets"][:])
    fo, fm = full["offsets"][:], full["loss_mask"][:]
    want_cut = int((flens > 20).sum())  # every cut sample, kept or dropped
    kept = [i for i in range(len(flens)) if fm[fo[i]:fo[i] + 20].any()]  # a target survives
    if f.attrs["truncated"] != want_cut or f.attrs["max_len"] != 20 or lens.max() > 20 or len(lens) != len(kept):
        fails.append(f"truncation: attr {f.attrs['truncated']}, want {want_cut}; lengths {lens}, kept {kept}")
    for i, j in enumerate(kept[:len(lens)]):
        a = f["tokens"][f["offsets"][i]:f["offsets"][i + 1]]
        b = full["tokens"][fo[j]:fo[j] + lens[i]]
        if list(a) != list(b):
            fails.append(f"truncation: sample {i} is not a prefix of full sample {j}")

# Segment-by-segment ids equal the whole template text encoded at once (FastChat / LLaVA tokenize
# the whole prompt; the Llama-3 chat template renders the same text): vicuna_v1 with both
# tokenizers, llama-3 with the Llama-3 one. (plain with a SentencePiece tokenizer differs by design:
# the response starts a new word, docs/DATA.md.)
for model, tmpl, jsonl, special in [("llama2", "vicuna_v1", mixed, True), ("llama3", "vicuna_v1", mixed, True),
                                    ("llama3", "llama-3", mixed, False), ("llama3", "plain", two, True)]:
    tok = Tokenizer.from_file(f"{tmp}/{model}/tokenizer.json")
    with h5py.File(f"{tmp}/{model}-{tmpl}.h5", "r") as f:
        o, t = f["offsets"][:], f["tokens"][:]
        recs = [json.loads(l) for l in open(jsonl, encoding="utf-8") if l.strip()]
        for i, r in enumerate(recs):
            txt = segments(tmpl, turns_of(r), tok)[1]
            bos = tok.id_to_token(t[o[i]])
            if special:  # the tokenizer's post-processor adds BOS itself
                txt = txt[len(bos):]
            whole = tok.encode(txt, add_special_tokens=special).ids
            if whole != t[o[i]:o[i + 1]].tolist():
                fails.append(f"{model}/{tmpl} sample {i}: differs from whole-text encoding")

for x in fails:
    print("FAIL", x)
print("checked", "ok" if not fails else f"{len(fails)} failures")
sys.exit(1 if fails else 0)
EOF
  then ok content_checks_h5py_tokenizers; cat "$tmp/check.log"
  else bad content_checks_h5py_tokenizers "$(cat "$tmp/check.log")"; fi
else
  echo "SKIP content checks: no python with h5py and tokenizers"
fi

finish
