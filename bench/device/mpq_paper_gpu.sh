#!/usr/bin/env bash
# One call of the device tool runs issue 17's protocol on a GPU for MINUTES,
# then packs the state (finished rows, model files, partial rows) into $OUT.
# Prepared here by bench/device/prepare.sh; the call (from this machine):
#
#   run(command="bash bench/device/mpq_paper_gpu.sh 7", carry=["device_carry"], timeout_s=600)
#   run(command="bash bench/device/mpq_paper_gpu.sh 7 --full", ...)      # full width
#
# timeout_s: MINUTES x 60 + 90 s (hard stop) + set-up and packing (about a
# minute). Full width trains its float network first (30 epochs) into the
# state; it comes back with the rows (its size at full width is not measured
# yet: the tool returns at most 8 pieces, 64 MB in all).
#
# The state starts from the committed report (bench/results/mpq_paper.json)
# and device_carry/state.tgz, so finished rows are skipped and partial rows
# continue; rows stop at an epoch end within MINUTES (--hours). Back here:
#
#   cat <files_at>/mpq_state.tgz.part* | tar xz -C runs/mpq_paper --skip-old-files
#
# Extra arguments go to bench/mpq_paper.py (--only, --full, --seeds ...).
# PYTHON and DEVICE (default python3, cuda) let the same script run on a CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes=${1:?usage: mpq_paper_gpu.sh MINUTES [mpq_paper.py arguments]}
shift
py=${PYTHON:-python3}
out=${OUT:?OUT: the folder whose files come back}
work=${WORK:-/tmp/mpq_gpu}
export PYTHONUNBUFFERED=1
[ ! -f device_carry/REVISION ] || export MPQ_REVISION="$(cat device_carry/REVISION)"
mkdir -p "$work"
if ! "$py" -c "import amaranth" 2>/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$work/site" device_carry/whl/*.whl
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
[ -d "$work/cifar/cifar-10-batches-py" ] || "$py" device_carry/to_batches.py "$work/cifar"
state=$work/state
"$py" bench/mpq_paper.py --restore bench/results/mpq_paper.json --state "$state"
[ ! -f device_carry/state.tgz ] || tar xzf device_carry/state.tgz -C "$state" --skip-old-files
checkpoint=()
case " $* " in
    *" --full "*|*" --width "*|*" --model "*|*" --float-checkpoint "*) ;;
    *) checkpoint=(--float-checkpoint bench/checkpoints/vgg9_w0.25_float_s0.pt) ;;
esac
# --hours stops rows at an epoch end; the row's evaluation and pricing come
# after it, so a hard stop 90 s later leaves time to pack what is done (a row
# stopped there continues from its last epoch next time).
status=0
timeout $((minutes * 60 + 90)) "$py" bench/mpq_paper.py --data "$work/cifar" --state "$state" \
    --device "${DEVICE:-cuda}" --threads "$(nproc)" --hours "$(awk "BEGIN {print $minutes / 60}")" \
    "${checkpoint[@]}" "$@" > "$out/mpq_gpu.log" 2>&1 || status=$?
tail -c 2000 "$out/mpq_gpu.log"
"$py" bench/mpq_paper.py --state "$state" --plan "${checkpoint[@]}" "$@" | tail -n 5 || true
# Pieces of at most 15 MB: the tool returns files of up to 16 MB, 64 MB in all.
tar czf "$work/mpq_state.tgz" -C "$state" --exclude='*.lock' .
split -b 15M -d "$work/mpq_state.tgz" "$out/mpq_state.tgz.part"
ls -la "$out"
exit "$status"
