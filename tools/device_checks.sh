#!/usr/bin/env bash
# Issue 16's GPU figures in one run on a lent device machine (an NVIDIA H200 here), each step
# bounded by its own timeout so that one failure leaves the others' results. Prepare here:
#
#     bash tools/device_wheels.sh        # the packages the device image lacks, into .whl/
#
# then run it there with the device tool: command "bash tools/device_checks.sh", carry [".whl"],
# timeout_s 570. It writes into $OUT (./device_out when unset):
#
# - checks.log: every step's command and output;
# - audio_encode_cuda.{md,json}: batched audio encoding against the package's per-clip loop
#   (goal 10x, identical codes; benchmarks/audio_encode.py);
# - base100m_dense.md, base100m_flex.md: the run reports of tmm-train with model=base100m in bf16
#   (trainer=gpu), 80 steps of 32 rows of 1024 positions from the store (data.fresh=false), the
#   dense path and block-sparse flex_attention; the Throughput line is the MFU against the
#   measured bf16 matmul peak (goal 40 %), the first window (warm-up) left out;
# - host_syncs.md: tensor-to-Python reads and CUDA's own synchronisations per training step
#   (benchmarks/host_syncs.py --device cuda; goal: one a step).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
LOG="$OUT/checks.log"
export PYTHONUNBUFFERED=1 TMM_CACHE_DIR=/tmp/tmm_cache

step() {  # step SECONDS COMMAND...: run it under a timeout, its output into the log
  local limit=$1
  shift
  echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "== exit status $rc" | tee -a "$LOG"
}

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 || { echo "wheel install failed: $LOG"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step 30 nvidia-smi
step 60 "$PY" -c "import torch, lightning, hydra, encodec, torchaudio, tokenize_mm
print(torch.__version__, torch.cuda.get_device_name(0), lightning.__version__, torchaudio.__version__)"
# the first run also fits the main job's tokenizers (on the CPU, as their configs say) and
# writes the store; the second reuses both
for attention in dense flex; do
  limit=$([ $attention = dense ] && echo 240 || echo 100)
  step "$limit" "$PY" -m tokenize_mm.cli.train trainer=gpu model=base100m \
    model.attention=$attention data.fresh=false data.context=1024 data.batch_size=32 \
    trainer.max_steps=80 trainer.val_check_interval=80 trainer.limit_val_batches=2 \
    callbacks=benchmark out_dir=/tmp/run_$attention hydra.run.dir=/tmp/run_$attention/hydra
  cp /tmp/run_$attention/report.md "$OUT/base100m_$attention.md" 2>/dev/null
  [ $attention = dense ] && step 120 "$PY" benchmarks/audio_encode.py --device cuda --rounds 5 \
    --out "$OUT/audio_encode_cuda.json" --md "$OUT/audio_encode_cuda.md"
done
step 60 "$PY" benchmarks/host_syncs.py --device cuda --weightings grad_share,token_mean \
  --cache-dir /tmp/tmm_cache --out-dir /tmp/host_syncs
cp /tmp/host_syncs/host_syncs.md "$OUT/host_syncs.md" 2>/dev/null
grep -h "Throughput\|speed-up\|ours_batch\|package_loop" "$OUT"/*.md 2>/dev/null
exit 0
