"""Seconds per training step of a recipe's first stage on this machine, and the whole stage's time extrapolated
from them: how long a stage trained on a lent GPU (bench/remote_train_topics.py) would take on these cores.
Runs the stage's own TrainConfig, distillation and pruning callback over `--steps` batches of the train split.

    python bench/micro/train_step_time.py --recipe recipes/block80-gradual-kd-int8.yaml \
        --model /work/runs/minilm-topics --out bench/results/train_step_time
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--model", required=True, help="the checkpoint the recipe starts from")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", default="bench/results/train_step_time")
    args = ap.parse_args(argv)
    from trimformer.compress import pruning
    from trimformer.compress.distill import DistillConfig, distill
    from trimformer.compress.recipes import load_recipe
    from trimformer.compress.tasks import task_data
    from trimformer.compress.training import TrainConfig, load_classifier, train

    rec = load_recipe(args.recipe)
    kind, opts = rec.stages[0]
    if "train" not in opts:
        raise SystemExit(f"{args.recipe}: its first stage ({kind}) does not train")
    full = TrainConfig(**opts["train"])
    n_train = len(task_data("wiki-topics", "train", full.max_samples).texts)
    full_steps = max(1, round(math.ceil(n_train / full.batch_size) * full.epochs))
    short = TrainConfig(**{**opts["train"], "epochs": 1, "max_samples": full.batch_size * args.steps,
                           "log_every": args.steps, "device": "cpu"})
    model, tok = load_classifier(args.model)
    callbacks = []
    if kind == "prune" and opts.get("schedule") == "gradual":
        callbacks.append(pruning.GradualPruner(float(opts["sparsity"]), opts["pattern"], start=float(opts.get("start", 0)),
                                               end=float(opts.get("end", 0.7)), every=int(opts.get("every", 10)),
                                               scope=opts.get("scope", "layer")))
    data = task_data("wiki-topics", "train", short.max_samples)
    t0 = time.perf_counter()
    if "distill" in opts:
        res = distill(model, copy.deepcopy(model).eval(), tok, data, short, DistillConfig(**opts["distill"]),
                      callbacks=callbacks, log=None)
    else:
        res = train(model, tok, data, short, callbacks=callbacks, log=None)
    per_step = res["seconds"] / res["steps"]
    report = {"recipe": args.recipe, "stage": kind, "threads": short.threads, "steps_timed": res["steps"],
              "seconds": res["seconds"], "wall_s": time.perf_counter() - t0, "seconds_per_step": per_step,
              "full_stage_steps": full_steps, "extrapolated_hours": per_step * full_steps / 3600,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "python bench/micro/train_step_time.py " + " ".join(argv if argv is not None
                                                                             else sys.argv[1:])}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(
        f"# Training-step time on this machine\n\n- date (UTC): {report['date']}\n- command: `{report['command']}`\n\n"
        f"`{args.recipe}` stage 1 ({kind}): {res['steps']} steps in {res['seconds']:.1f} s on {short.threads} "
        f"threads = {per_step:.2f} s per step; the stage has {full_steps} steps, so about "
        f"{report['extrapolated_hours']:.1f} h here (an extrapolation from the timed steps, not a full run).\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
