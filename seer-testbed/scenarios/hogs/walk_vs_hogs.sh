#!/bin/sh
# The request memory walk alone (no application), pinned to CPU 1, beside each hog on CPU 0
# (where the testbed puts LLC and memory-bandwidth hogs), and beside a CPU hog on CPU 0 as the
# control. Prints the median CPU ns per touched line over 5 s for each. Needs 2+ CPUs.
# usage: walk_vs_hogs.sh [SVC_BIN] [WORK_KB] [BUFFER_KB]
set -eu
SVC=${1:-target/debug/seer-testbed-svc}
KB=${2:-128}
BUF=${3:-8192}
walk() { "$SVC" walk --work-kb "$KB" --buffer-kb "$BUF" --seconds 5 --cpus 1 |
    sed -n 's/.*cpu_ns_per_line=\([0-9.]*\).*/\1/p' | sort -n | sed -n 3p; }
echo "| beside (on CPU 0) | median CPU ns per line (work_kb=$KB, buffer_kb=$BUF) |"
echo "|---|---|"
echo "| nothing | $(walk) |"
for k in cpu cache membw; do
    # The hog runs at level 1 while its stdin stays open.
    ( echo "level 1"; sleep 7 ) | "$SVC" hog --kind "$k" --intensity 1 --cpus 0 &
    sleep 1
    echo "| ${k} hog | $(walk) |"
    wait
done
