#!/usr/bin/env bash
# The whole check for a lent GPU machine, as one command from the checkout (nlfilt need not be installed):
# the GPU tests, then benchmarks/gpu_check.py --write; everything printed goes to LOG_DIR/log.txt and the
# results file is copied there too.  About 5 minutes on one H100 (tests 35 s, check about 4 minutes); each part has its own time limit.
#
#   bash benchmarks/gpu_session.sh LOG_DIR              # on the GPU machine
#   bash benchmarks/gpu_session.sh LOG_DIR --dry-run    # the same on the CPU, at tiny sizes
set -o pipefail
out=${1:?usage: gpu_session.sh LOG_DIR [--dry-run]}
shift
mkdir -p "$out"
log="$out/log.txt"
export PYTHONPATH=. PYTHONUNBUFFERED=1
require=1
[[ " $* " == *" --dry-run "* ]] && require=0
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    python3 -c "import sys, numpy, cupy; print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__)" 2>&1
} | tee "$log"
NLFILT_REQUIRE_GPU=$require timeout 120 python3 -m pytest -m gpu -q -p no:cacheprovider --maxfail=15 \
    --tb=short -rfE 2>&1 | tee -a "$log"
tests=$?
timeout 330 python3 benchmarks/gpu_check.py --write "$@" 2>&1 | tee -a "$log"
check=$?
cp benchmarks/results/gpu-*.md "$out/" 2>/dev/null
echo "tests exit $tests, check exit $check" | tee -a "$log"
exit $(( tests || check ))
