"""Reference tokenizations for the tokenizer.json reader (src/data/tokenizer.c), computed by Hugging
Face `tokenizers`.

Trains small BPE tokenizers on a built-in corpus (radiology-report English plus accents, CJK, emoji,
right-to-left scripts, combining marks, whitespace runs, digit runs, contractions and code) and
writes, under tests/data/tokenizers/:

  llama3.json        byte-level BPE with Llama-3's structure: pre_tokenizer Sequence[Split(the
                     Llama-3 / cl100k regex, Isolated), ByteLevel(use_regex=false)], ignore_merges,
                     decoder ByteLevel, post_processor Sequence[ByteLevel, TemplateProcessing adding
                     <|begin_of_text|>]; the five Llama-3 special tokens sit after the model vocab
                     (added_tokens only, as in Meta's file) plus a non-special single_word token; two
                     vocab entries no merge reaches, so that ignore_merges shows
  gpt2.json          the same vocab and merges as GPT-2 has them: ByteLevel(use_regex=true), no
                     ignore_merges, post_processor ByteLevel only (GPT-2 adds no BOS); <|endoftext|>
                     and a RoBERTa-style <mask> with lstrip
  gpt2_prefix.json   gpt2.json with ByteLevel(add_prefix_space=true) and an rstrip added token
  qwen2.json         gpt2.json with Qwen2's split regex (\\p{N} one digit at a time) before
                     ByteLevel(use_regex=false); Qwen2's own files add an NFC normalizer, which
                     the C reader does not support
  llama2.json        SentencePiece-style BPE as Llama-2 / Mistral-v0.1 / TinyLlama's tokenizer.json:
                     vocab <unk> <s> </s> <0x00>..<0xFF> then pieces, byte_fallback, fuse_unk,
                     normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no pre_tokenizer, decoder
                     Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)], template
                     "<s> $A"; a small alphabet, so that byte fallback triggers often
  sp_meta_first.json the same model as newer conversions write it: no normalizer, Metaspace
                     pre_tokenizer (prepend_scheme "first", split false), the Sequence decoder; a
                     normalized (non-special) added token
  sp_meta_always.json Metaspace(prepend_scheme "always", split true) with the Metaspace decoder and
                     a template that also appends </s>
  sp_unk.json        llama2.json without byte_fallback: unknown characters become one fused <unk>;
                     merges written as "a b" strings (the form before tokenizers 0.20)
  roberta.json       gpt2_prefix.json with <s> </s> <pad> and RobertaProcessing (<s> $A </s>)
  affixes.json       BPE with continuing_subword_prefix "##", end_of_word_suffix "</w>", a
                     non-fused <unk>, literal Split steps (Removed, MergedWithPrevious, inverted
                     Contiguous) and no decoder (decode joins tokens with spaces)
  cases.json         for every tokenizer and every test string: ids without and with special tokens
                     (encode(add_special_tokens=False/True)), decode(ids), decode(ids_special) with
                     and without skip_special_tokens (left out where equal to the test string);
                     plus decodes of arbitrary id lists (every id in order, random runs, byte
                     tokens that form invalid UTF-8)

Texts and decoded texts are stored as UTF-8 hex (exact bytes; JSON strings cannot carry NUL
through cJSON), with an ASCII rendering beside them for people. The corpus for the speed note is
the test strings repeated; the C test prints tokens/s and asserts nothing about it.

Real Llama files are not needed (and not available offline); the structures above are those of
meta-llama/Meta-Llama-3-8B, gpt2, roberta-base, meta-llama/Llama-2-7b-hf,
TinyLlama/TinyLlama-1.1B-Chat-v1.0 and mistralai/Mistral-7B-v0.1 tokenizer.json files (and of newer
Llama / Mistral conversions, with the Metaspace pre-tokenizer).

Regenerate (tokenizers >= 0.20, which writes merges as pairs; /work/torchenv has 0.23):
    /work/torchenv/bin/python tests/oracles/tokenizer_oracle.py
For a given `tokenizers` version every file comes out byte-identical run to run except
affixes.json (the trainer orders its "##" alphabet by hash); any run's files are a valid fixture,
since every reference is computed from the file as written.
"""
import json
import os
import random

import tokenizers
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "data", "tokenizers"))

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
             r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
            r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
                  "<|end_header_id|>"]

CORPUS = [
    "FINDINGS: The lungs are clear. No focal consolidation, pleural effusion or pneumothorax.",
    "The cardiomediastinal silhouette is within normal limits. Heart size is normal.",
    "IMPRESSION: No acute cardiopulmonary process. Stable 4 mm nodule in the right upper lobe.",
    "There is mild bibasilar atelectasis. Degenerative changes of the thoracic spine.",
    "Comparison: CT chest 2023-11-04. Interval decrease in the left pleural effusion.",
    "Endotracheal tube terminates 3.5 cm above the carina. NG tube courses below the diaphragm.",
    "It's unchanged; we'll re-evaluate. The patient's SpO2 was 94%. They're stable, I'm told.",
    "Don't miss the subtle fracture of the 7th rib. You've seen the prior study, haven't you?",
    "Measurements: 12 x 15 x 9 mm (previously 1234567 um). Dose 0.5 mg/kg q6h; BP 120/80 mmHg.",
    "Le patient présente une opacité basale droite. Pas d'épanchement pleural. Cœur normal.",
    "Der Befund zeigt keine Auffälligkeiten. Größe und Form des Herzens regelrecht.",
    "El paciente no presenta derrame pleural. Señales de neumonía en el lóbulo inferior.",
    "胸部X线片显示双肺纹理增多，未见明显实变。心影大小正常。",
    "胸部レントゲン写真で異常所見なし。肺野は清明です。",
    "흉부 엑스레이에서 이상 소견 없음.",
    "لا يوجد انصباب جنبي. القلب طبيعي الحجم.",
    "אין עדות לדלקת ריאות. הלב בגודל תקין.",
    "Здоровые лёгкие, без очаговых изменений. Сердце не расширено.",
    "Combining: e\u0301 a\u0308 n\u0303 — café naïve résumé coöperate.",
    "Emoji: 🙂 👍🏽 🫁 ❤️ 👨‍⚕️ 🏥 ✅",
    "Tabs\tand\t\tspaces    and\nnewlines\n\n\nand\r\nCRLF   \n  end",
    "def score(x):\n    return sum(w * v for w, v in zip(weights, x))  # dot product",
    "for (int i = 0; i < n; i++) { y[i] += a * x[i]; }  /* axpy */",
    "{\"label\": \"effusion\", \"prob\": 0.87, \"bbox\": [12, 40, 128, 256]}",
    "https://example.org/studies/1.2.840.113619.2.55?series=3&view=PA",
    "Numbers: 0 1 12 123 1234 12345 123456 ²³ ½ Ⅻ ٣٤٥ ४२",
    "WE'LL SEE. SHE'S FINE. I'D SAY IT'S OK. THEY'VE GONE. YOU'RE RIGHT. I'M HERE.",
    "Pneumonoultramicroscopicsilicovolcanoconiosis is a long word; so is hepaticocholangiogastrostomy.",
]
CORPUS = CORPUS * 3

LONG_WORD = "pneumonoultramicroscopicsilicovolcanoconiosis" * 6
TESTS = [
    "",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    " \n \n ",
    "a",
    "Hello world",
    " leading space",
    "trailing space ",
    "   many leading and trailing   ",
    "The lungs are clear. No pleural effusion or pneumothorax.",
    "IMPRESSION:\n1. No acute process.\n2. Stable nodule.\n\n",
    "Interval decrease in the left pleural effusion, now small.",
    "It's unchanged; we'll re-evaluate. They're stable, I'm told. You've seen it, haven't you?",
    "IT'S FINE. WE'LL see. i'D say YOU'RE RIGHT. 'S 'T 'RE 'VE 'M 'LL 'D 's's",
    "the patientſs view 'ſ",
    "1234567",
    "0.5 mg/kg 12 x 15 x 9 mm 123456789012 ²³ ½ Ⅻ ٣٤٥ ४२",
    "Le patient présente une opacité basale droite. Cœur normal.",
    "Größe und Form des Herzens regelrecht.",
    "胸部X线片显示双肺纹理增多，未见明显实变。",
    "胸部レントゲン写真で異常所見なし。",
    "흉부 엑스레이",
    "لا يوجد انصباب جنبي.",
    "אין עדות לדלקת ריאות.",
    "Здоровые лёгкие.",
    "e\u0301 a\u0308 n\u0303 \u0301 x\u0300\u0301\u0302",
    "🙂 👍🏽 🫁 ❤️ 👨‍⚕️ 🏥✅🙂🙂",
    "Tabs\tand\t\tspaces    and\nnewlines\n\n\nand\r\nCRLF   \n  end",
    "  \n\n  x \r\n\r\n y\t\t\tz   ",
    "nbsp\u00a0\u00a0here\u2000\u2000there\u3000ideographic\u2028line\u0085nel",
    "def score(x):\n    return sum(w * v for w, v in zip(weights, x))  # dot",
    "for (int i = 0; i < n; i++) { y[i] += a * x[i]; }",
    "{\"label\": \"effusion\", \"prob\": 0.87}",
    "https://example.org/studies/1.2.840.113619?series=3&view=PA",
    "!!!??? ... --- ((( ))) *** ### @@@",
    "control\x01chars\x7f and \x00 nul",
    LONG_WORD,
    " " + LONG_WORD + " " + LONG_WORD.upper()[:90],
    "x" * 300,
    "quokka zyzzyva quokkas",
    # special tokens inside text (each family knows some of them; the rest are plain text)
    "<|begin_of_text|>Findings: clear.<|eot_id|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nDescribe the film.<|eot_id|>",
    "<|end_of_text|><|end_of_text|>",
    "text<|eot_id|>text <|eot_id|> text",
    "<|begin_of_text|",
    "<s>Findings: clear.</s>",
    "<s> leading space after bos</s>",
    "hello<s>world</s>  </s>",
    "<unk> is literal",
    "Patient<|endoftext|>Next<|endoftext|>",
    "fill the <mask> here and   <mask>there<mask>",
    "SECTION [FINDINGS] clear; x[FINDINGS]y [FINDINGS]",
    "[FINDINGS]",
    "a <img>   caption",
    "mmHg 120/80 mmHg. BP(mmHg)",
    "<0x41> <0xZZ>",
    "▁already▁metaspace ▁",
]


def hexs(s):
    return s.encode("utf-8").hex()


def show(s):
    return s.encode("ascii", "backslashreplace").decode("ascii")


# ---- training ------------------------------------------------------------------------------------

def train_bytelevel():
    """Byte-level BPE trained with the Llama-3 split; vocab ~900."""
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=900, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, tr)
    j = json.loads(tok.to_str())
    # Two whole words no merge sequence reaches: ignore_merges takes them whole, GPT-2 does not.
    vocab = j["model"]["vocab"]
    for w in ("Ġquokka", "Ġzyzzyva"):
        assert w not in vocab
        vocab[w] = len(vocab)
    return j


def small_alphabet(k):
    """The corpus with only its k most frequent characters (ties by code point) and spaces: the
    trainer's own limit_alphabet breaks ties in hash order, which would make the files differ
    from run to run."""
    counts = {}
    for line in CORPUS:
        for c in line:
            counts[c] = counts.get(c, 0) + 1
    keep = set(sorted(counts, key=lambda c: (-counts[c], c))[:k]) | {" "}
    return ["".join(c for c in line if c in keep) for line in CORPUS]


def train_sentencepiece():
    """SentencePiece-style BPE (Metaspace words, small alphabet) laid out as Llama-2's vocab."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always", split=True)
    tr = trainers.BpeTrainer(vocab_size=420, show_progress=False)
    tok.train_from_iterator(small_alphabet(70), tr)
    j = json.loads(tok.to_str())
    pieces = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for p, _ in pieces:
        if p not in vocab:
            vocab[p] = len(vocab)
    return vocab, j["model"]["merges"]


def added(content, special, **kw):
    return AddedToken(content, special=special, normalized=kw.pop("normalized", not special), **kw)


# ---- the tokenizer files -------------------------------------------------------------------------

def make_llama3(bl):
    j = json.loads(json.dumps(bl))
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens([added(t, True) for t in LLAMA3_SPECIAL])
    tok.add_tokens([added("mmHg", False, single_word=True)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos)])])
    return tok


def make_gpt2(bl, prefix=False):
    j = json.loads(json.dumps(bl))
    j["model"]["ignore_merges"] = False
    j["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True,
                          "use_regex": True}
    j["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True}
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens([added("<|endoftext|>", True), added("<mask>", True, lstrip=True)])
    tok.add_tokens([added("[FINDINGS]", False, single_word=True)])
    if prefix:
        tok.add_tokens([added("<img>", False, rstrip=True, normalized=False)])
    return tok


def make_qwen2(bl):
    j = json.loads(json.dumps(bl))
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = QWEN2_RE
    j["model"]["ignore_merges"] = False
    j["post_processor"] = None
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens([added("<|endoftext|>", True), added("<|im_start|>", True),
                            added("<|im_end|>", True)])
    return tok


SP_DECODER = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                decoders.Fuse(), decoders.Strip(" ", 1, 0)])


def make_sp(vocab, merges, variant):
    model = models.BPE(vocab=dict(vocab), merges=[tuple(m) for m in merges], unk_token="<unk>",
                       fuse_unk=True, byte_fallback=(variant != "unk"))
    tok = Tokenizer(model)
    tok.add_special_tokens([added("<unk>", True), added("<s>", True), added("</s>", True)])
    single = "<s> $A"
    if variant in ("llama2", "unk"):
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
        tok.decoder = SP_DECODER
        if variant == "llama2":  # normalized: its pattern is normalized too ("▁mmHg")
            tok.add_tokens([added("mmHg", False)])
    elif variant == "first":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
        tok.decoder = SP_DECODER
        tok.add_tokens([added("mmHg", False, lstrip=True)])
    elif variant == "always":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always", split=True)
        tok.decoder = decoders.Metaspace(prepend_scheme="always", split=True)
        tok.add_tokens([added("[FINDINGS]", False, single_word=True, normalized=False)])
        single = "<s> $A </s>"
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair="<s> $A $B", special_tokens=[("<s>", 1), ("</s>", 2)])
    return tok


def make_roberta(bl):
    """RoBERTa's layout: ByteLevel(add_prefix_space=true), <s> $A </s> by RobertaProcessing."""
    tok = make_gpt2(bl, prefix=True)
    tok.add_special_tokens([added("<s>", True), added("</s>", True), added("<pad>", True)])
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
        trim_offsets=True, add_prefix_space=True)
    return tok


def make_affixes():
    """BPE with continuing_subword_prefix "##" and end_of_word_suffix "</w>", a non-fused <unk>,
    literal Split steps (Removed, MergedWithPrevious, inverted Contiguous) and no decoder."""
    model = models.BPE(unk_token="<unk>", continuing_subword_prefix="##", end_of_word_suffix="</w>")
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" ", behavior="removed"),
        pre_tokenizers.Split(".", behavior="merged_with_previous"),
        pre_tokenizers.Split("-", behavior="contiguous", invert=True)])
    tr = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>"],
                             continuing_subword_prefix="##", end_of_word_suffix="</w>",
                             show_progress=False)
    tok.train_from_iterator(small_alphabet(60), tr)
    return tok


def cases_for(tok):
    """Per test string; a decoded text equal to the test string itself is left out (smaller)."""
    out = []
    for t in TESTS:
        ids = tok.encode(t, add_special_tokens=False).ids
        ids_sp = tok.encode(t, add_special_tokens=True).ids
        c = dict(ids=ids, ids_special=ids_sp)
        for key, d in (("decoded", tok.decode(ids, skip_special_tokens=False)),
                       ("decoded_special", tok.decode(ids_sp, skip_special_tokens=False)),
                       ("decoded_special_skip", tok.decode(ids_sp, skip_special_tokens=True))):
            if d != t:
                c[key] = hexs(d)
        out.append(c)
    return out


def decode_cases(tok, rng):
    """Arbitrary id lists: every id once in order, random runs, and byte-token soups."""
    n = tok.get_vocab_size(with_added_tokens=True)
    lists = [list(range(n))]
    for _ in range(12):
        lists.append([rng.randrange(n) for _ in range(rng.randrange(1, 40))])
    byte_ids = [i for t, i in tok.get_vocab().items() if t.startswith("<0x") and len(t) == 6]
    if not byte_ids:  # byte-level: single-byte tokens are the 256 alphabet characters
        byte_ids = [i for t, i in tok.get_vocab().items() if len(t) == 1]
    for _ in range(12):
        lists.append([rng.choice(byte_ids) for _ in range(rng.randrange(1, 12))])
    out = []
    for ids in lists:
        out.append(dict(ids=ids, decoded=hexs(tok.decode(ids, skip_special_tokens=False)),
                        decoded_skip=hexs(tok.decode(ids, skip_special_tokens=True))))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20240611)
    bl = train_bytelevel()
    vocab, merges = train_sentencepiece()
    toks = {
        "llama3": make_llama3(bl),
        "gpt2": make_gpt2(bl),
        "gpt2_prefix": make_gpt2(bl, prefix=True),
        "qwen2": make_qwen2(bl),
        "llama2": make_sp(vocab, merges, "llama2"),
        "sp_meta_first": make_sp(vocab, merges, "first"),
        "sp_meta_always": make_sp(vocab, merges, "always"),
        "sp_unk": make_sp(vocab, merges, "unk"),
        "roberta": make_roberta(bl),
        "affixes": make_affixes(),
    }
    doc = dict(tokenizers_version=tokenizers.__version__,
               tests=[dict(hex=hexs(t), text=show(t)) for t in TESTS], tokenizers={})
    for name, tok in toks.items():
        fname = name + ".json"
        # Compact (one line per array would triple the size); the reader must not care.
        text = tok.to_str(pretty=False)
        if name == "sp_unk":  # merges as "a b" strings, as files written before tokenizers 0.20
            j = json.loads(text)
            j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
            text = json.dumps(j, ensure_ascii=False, separators=(",", ":"))
        with open(os.path.join(OUT, fname), "w", encoding="utf-8") as f:
            f.write(text)
        # What we wrote is what HF reads back: compute every reference from the saved file.
        tok = Tokenizer.from_file(os.path.join(OUT, fname))
        vocab_all = tok.get_vocab(with_added_tokens=True)
        entry = dict(file=fname, vocab_size=max(vocab_all.values()) + 1,
                     cases=cases_for(tok), decodes=decode_cases(tok, rng))
        for t in ("<|begin_of_text|>", "<|eot_id|>", "<s>", "</s>", "<unk>", "<|endoftext|>",
                  "Ġthe", "▁the", "<0x0A>", "not-a-token"):
            entry.setdefault("token_ids", {})[t] = tok.token_to_id(t)
        doc["tokenizers"][name] = entry
        print("%-15s vocab %4d  %6d bytes" % (name, entry["vocab_size"],
                                              os.path.getsize(os.path.join(OUT, fname))))
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print("cases.json %d bytes" % os.path.getsize(os.path.join(OUT, "cases.json")))


if __name__ == "__main__":
    main()
