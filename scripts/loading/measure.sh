#!/usr/bin/env bash
# Peak memory and time of `convscope summary` on each model file given, against the time
# to read the file (`cat`, warm) and its size: the loading goals of issue #16 are peak RSS
# at most 1.5x the file's size and load time at most 2x the read.
#
#   scripts/loading/measure.sh [--runs N] [--bin target/release/convscope] MODEL...
#
# Each row is the median of N runs (default 5); `time` is wall clock, `cpu` user + system
# (steadier on a shared machine). `read s` is `cat` to /dev/null: the page cache copied
# through one small buffer. `into mem s` is `dd` with one buffer the file's size: the file
# read into memory the process owns, which a loader must at least do (each fresh page is
# faulted in and zeroed by the kernel); `t/mem` is the load time against that. A model with external data counts its data file(s) in
# the size and the read. Make the models with scripts/loading/export.py.
set -euo pipefail
runs=5
bin=target/release/convscope
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        *) break ;;
    esac
done
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-24s %9s %8s %11s %8s %8s %8s %7s %7s %6s\n' model "size MB" "read s" "into mem s" "load s" "cpu s" "peak MB" "RSS/sz" "t/read" "t/mem"
for model in "$@"; do
    files=("$model")
    if [[ -f "$model.data" ]]; then files+=("$model.data"); fi
    size=$(cat "${files[@]}" | wc -c)
    cat "${files[@]}" > /dev/null # warm the page cache
    reads=() mems=() loads=() cpus=() peaks=()
    for _ in $(seq "$runs"); do
        start=$(date +%s.%N)
        cat "${files[@]}" > /dev/null
        reads+=("$(echo "$(date +%s.%N) - $start" | bc)")
        start=$(date +%s.%N)
        for f in "${files[@]}"; do
            dd if="$f" of=/dev/null bs="$(wc -c <"$f")" status=none
        done
        mems+=("$(echo "$(date +%s.%N) - $start" | bc)")
        out=$(/usr/bin/time -f '%e %U %S %M' "$bin" summary "$model" 2>&1 >/dev/null | tail -1)
        read -r wall user sys kb <<<"$out"
        loads+=("$wall") cpus+=("$(echo "$user + $sys" | bc)") peaks+=("$kb")
    done
    read_s=$(printf '%s\n' "${reads[@]}" | median)
    mem_s=$(printf '%s\n' "${mems[@]}" | median)
    load_s=$(printf '%s\n' "${loads[@]}" | median)
    cpu_s=$(printf '%s\n' "${cpus[@]}" | median)
    peak_kb=$(printf '%s\n' "${peaks[@]}" | median)
    awk -v m="$(basename "$model")" -v sz="$size" -v r="$read_s" -v mm="$mem_s" -v l="$load_s" -v c="$cpu_s" -v p="$peak_kb" \
        'BEGIN { printf "%-24s %9.0f %8.3f %11.3f %8.2f %8.2f %8.0f %7.2f %7.1f %6.1f\n", m, sz/1e6, r, mm, l, c, p*1024/1e6, p*1024/sz, l/r, l/mm }'
done
