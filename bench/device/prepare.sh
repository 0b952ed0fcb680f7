#!/usr/bin/env bash
# Gather, on this machine, what mpq_paper_gpu.sh needs on a bare GPU machine
# (which has PyTorch but not Amaranth, and no network): the CIFAR-10 archive
# and its decoder, the pure-Python wheels of the golden model's dependencies
# (the versions this .venv holds, for the GPU image's Python 3.12), and this
# machine's protocol state, so rows half-done here continue there.
# Writes device_carry/ (ignored by git); name it in the device call's carry.
#
#   bash bench/device/prepare.sh [CIFAR_FOLDER]   (default ../shared/data/cifar10)
set -euo pipefail
cd "$(dirname "$0")/../.."
cifar=${1:-../shared/data/cifar10}
state=${STATE:-runs/mpq_paper}
for f in "$cifar/cifar10-jpeg.tar.gz" "$cifar/to_batches.py"; do
    [ -f "$f" ] || { echo "error: $f not found: give the folder of the offline CIFAR-10 copy" >&2; exit 2; }
done
[ -x .venv/bin/python ] || { echo "error: no .venv here: run 'make setup' first" >&2; exit 2; }

# device_carry/ is replaced only when this script made it (its marker)
if [ -e device_carry ] && [ ! -f device_carry/.made-by-prepare ]; then
    echo "error: device_carry/ exists and was not made by this script: move it away first" >&2; exit 2
fi
staging=$(mktemp -d device_carry.tmp.XXXXXX)
trap 'rm -rf "$staging"' EXIT
cp "$cifar/cifar10-jpeg.tar.gz" "$cifar/to_batches.py" "$staging/"
wheels=()
for package in amaranth jschon rfc3986 pyvcd; do
    wheels+=("$package==$(.venv/bin/python -m pip show "$package" | sed -n 's/^Version: //p')")
done
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 -d "$staging/whl" "${wheels[@]}"
if [ -d "$state" ]; then
    # rows, protocol, partial rows; not the model files (the report needs
    # only the rows) nor the float training (bench/checkpoints holds it)
    tar czf "$staging/state.tgz" -C "$state" --exclude='*/models' --exclude='*/float' --exclude='*.lock' .
fi
# the copy there has no .git: rows name this revision (+ "-dirty")
echo "$(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!device_carry' || echo -dirty)" > "$staging/REVISION"
touch "$staging/.made-by-prepare"
rm -rf device_carry
mv "$staging" device_carry
trap - EXIT
du -sh device_carry
