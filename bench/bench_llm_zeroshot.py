"""Zero-shot sanity check of generated text: SmolLM2-135M-Instruct answers short factual questions (chat
template, greedy) in each runtime weight format; an answer passes if it contains an expected keyword. A smoke test
of quantization damage that a perplexity number can hide, not a benchmark of the model's knowledge.

    python bench/bench_llm_zeroshot.py --weights f32,gguf,int4-g128,w8a8 --out bench/results/llm_zeroshot
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

QUESTIONS = [
    ("What is the capital of France?", ["paris"]),
    ("What is the capital of Japan?", ["tokyo"]),
    ("How many days are there in a week?", ["seven", "7"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("Which planet is known as the Red Planet?", ["mars"]),
    ("What is the largest ocean on Earth?", ["pacific"]),
    ("What gas do plants absorb from the air for photosynthesis?", ["carbon dioxide", "co2"]),
    ("Who wrote the play Romeo and Juliet?", ["shakespeare"]),
    ("What is the freezing point of water in degrees Celsius?", ["0", "zero"]),
    ("What is the chemical symbol for gold?", ["au"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="f32,gguf,int4-g128,int4-g64,nf4-g64,w8a8,fp8-e4m3")
    ap.add_argument("--dirs", default="", help="also compressed checkpoint directories (comma-separated)")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/llm_zeroshot")
    args = ap.parse_args()

    from trimformer import assets
    from trimformer.pipelines.text_generation import TextGenerationPipeline
    from trimformer.runtime.decoder import compile_decoder

    gguf = assets.smollm2_gguf_path()
    sources = [(w, gguf, w) for w in args.weights.split(",") if w]
    sources += [(Path(d).name, Path(d), None) for d in args.dirs.split(",") if d]
    results = {}
    for name, src, w in sources:
        pipe = TextGenerationPipeline(compile_decoder(src, weights=w or "f32", threads=args.threads))
        answers = []
        for q, keys in QUESTIONS:
            a = pipe(q, chat=True, return_full_text=False, max_new_tokens=args.max_new_tokens)[0]["generated_text"]
            ok = any(re.search(r"\b" + re.escape(k) + r"\b", a.lower()) for k in keys)  # whole words: "0" != "18.09"
            answers.append({"question": q, "answer": a, "pass": ok})
        results[name] = {"passed": sum(x["pass"] for x in answers), "total": len(answers), "answers": answers}
        print(f"{name}: {results[name]['passed']}/{len(answers)}", flush=True)
    doc = {"command": " ".join(sys.argv), "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    lines = ["# Zero-shot sanity check (SmolLM2-135M-Instruct, greedy, chat template)", "", f"Command: `{doc['command']}`",
             "", "| weights | passed |", "|---|---|"]
    lines += [f"| {n} | {r['passed']}/{r['total']} |" for n, r in results.items()]
    first = next(iter(results.values()))
    lines += ["", "Answers of the first row:", ""] + [f"- {a['question']} -> {a['answer'].strip()!r}"
                                                      for a in first["answers"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
