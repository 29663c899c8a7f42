#!/usr/bin/env bash
# Re-record every log in tests/data/framework_logs/ from a real run.
# Each run: merged stdout+stderr (2>&1) into the .log file, PYTHONUNBUFFERED=1, no TTY,
# started from a throw-away working directory so nothing is written into the repo.
# Usage: VENV=/var/tmp/fw-venv bash tests/data/framework_logs/record/record_all.sh
# Exit codes are written to exit_codes.txt beside the logs.
set -u
VENV=${VENV:-/var/tmp/fw-venv}
PY="$VENV/bin/python"
REC=$(cd "$(dirname "$0")" && pwd)
OUT=$(dirname "$REC")
WORK=$(mktemp -d)
cd "$WORK" || exit 1
export PYTHONUNBUFFERED=1
: > "$OUT/exit_codes.txt"

run() {  # run NAME.log COMMAND...
  local name=$1; shift
  env "$@" > "$OUT/$name" 2>&1 < /dev/null
  echo "$name $?" >> "$OUT/exit_codes.txt"
}

run hf_trainer.log            "$PY" "$REC/hf_trainer.py"
run hf_trainer_tqdm_only.log  "$PY" "$REC/hf_trainer.py" --tqdm-only
run hf_trainer_steps.log      "$PY" "$REC/hf_trainer.py" --every-10
run hf_trainer_nan.log        "$PY" "$REC/hf_trainer.py" --diverge
run lightning.log             "$PY" "$REC/lightning_train.py"
run lightning_steps.log       "$PY" "$REC/lightning_train.py" --step-metrics
run lightning_rich.log        "$PY" "$REC/lightning_train.py" --default-bar
run tqdm_plain.log            "$PY" "$REC/tqdm_plain.py"
run tqdm_epochs.log           "$PY" "$REC/tqdm_epochs.py"
run torchrun_2ranks.log       "$PY" -m torch.distributed.run --nproc_per_node=2 --tee 3 "$REC/train_ddp.py"
run torchrun_failure.log      FAIL_RANK=1 "$PY" -m torch.distributed.run --nproc_per_node=2 --tee 3 "$REC/train_ddp.py"
run traceback_failure.log     "$PY" "$REC/traceback_failure.py"
run nan_loss.log              "$PY" "$REC/nan_loss.py"
run nan_loss_anomaly.log      "$PY" "$REC/nan_loss.py" --detect-anomaly

cd / && rm -rf "$WORK"
cat "$OUT/exit_codes.txt"
