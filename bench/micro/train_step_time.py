"""Seconds per training step of a recipe's training stages on this machine (and one OBS pass, if it has any), and
their whole time extrapolated from them: how long stages trained on a lent GPU (bench/remote_train_topics.py) would
take on these cores.
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
    trained = [(i, kind, opts) for i, (kind, opts) in enumerate(rec.stages) if "train" in opts]
    if not trained:
        raise SystemExit(f"{args.recipe}: no stage trains")
    first_i, kind, opts = trained[0]
    timed_keys = {k: v for k, v in opts["train"].items() if k != "epochs"}
    for i, _, o in trained[1:]:  # the timed steps stand for every training stage only if those train alike
        if {k: v for k, v in o["train"].items() if k != "epochs"} != timed_keys or o.get("distill") != opts.get("distill"):
            raise SystemExit(f"{args.recipe}: stage {i + 1} trains with other settings than stage {first_i + 1}; "
                             "this script times one kind of step")

    def stage_steps(o: dict) -> int:
        cfg = TrainConfig(**o["train"])
        n_train = len(task_data("wiki-topics", "train", cfg.max_samples).texts)
        return max(1, round(math.ceil(n_train / cfg.batch_size) * cfg.epochs))

    full_steps = sum(stage_steps(o) for _, _, o in trained)
    short = TrainConfig(**{**opts["train"], "epochs": 1, "max_samples": TrainConfig(**opts["train"]).batch_size * args.steps,
                           "log_every": args.steps, "device": "cpu"})
    model, tok = load_classifier(args.model)
    obs_stages = [o for k, o in rec.stages if k == "prune" and o.get("method") == "obs"]
    obs_s = None
    if obs_stages:  # one OBS pass timed (each pass costs about the same: same layers, same calibration)
        from trimformer.compress.tasks import calibration_batches

        cal = rec.calibration
        batches = calibration_batches(tok, int(cal["samples"]), int(cal["batch_size"]), int(cal["max_length"]),
                                      return_tensors="np")
        t = time.perf_counter()
        pruning.prune(copy.deepcopy(model), float(obs_stages[0]["sparsity"]), obs_stages[0]["pattern"], "obs",
                      calibration=batches)
        obs_s = time.perf_counter() - t
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
    total_s = per_step * full_steps + (obs_s or 0.0) * len(obs_stages)
    report = {"recipe": args.recipe, "stage": kind, "threads": short.threads, "steps_timed": res["steps"],
              "seconds": res["seconds"], "wall_s": time.perf_counter() - t0, "seconds_per_step": per_step,
              "training_stages": len(trained), "full_stage_steps": full_steps, "obs_passes": len(obs_stages),
              "obs_pass_seconds": obs_s, "extrapolated_hours": total_s / 3600,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "python bench/micro/train_step_time.py " + " ".join(argv if argv is not None
                                                                             else sys.argv[1:])}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    obs_line = (f" plus {len(obs_stages)} OBS pass(es) of {obs_s:.0f} s (one timed)" if obs_stages else "")
    out.with_suffix(".md").write_text(
        f"# Training-step time on this machine\n\n- date (UTC): {report['date']}\n- command: `{report['command']}`\n\n"
        f"`{args.recipe}` stage {first_i + 1} ({kind}): {res['steps']} steps in {res['seconds']:.1f} s on "
        f"{short.threads} threads = {per_step:.2f} s per step; its {len(trained)} training stage(s) have {full_steps} "
        f"steps{obs_line}, so about {report['extrapolated_hours']:.1f} h here (an extrapolation from the timed steps, "
        "not a full run).\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
