#!/usr/bin/env bash
# Where the time of 1 MiB sequential O_DIRECT writes goes (issue 19, part 1). Runs fio's variants and SharedStore's
# io_uring scheduler (through `SharedStore.Bench --device-probe`) alternately, ROUNDS times, on the device bench file,
# and prints one line per run: MB/s, CPU per 1 MiB write, the disk's requests (from /sys/block/DEV/stat: how many
# requests the 1 MiB writes became, and their mean size) and the io-wq workers seen. With PERF=1 it also samples
# SharedStore's process with perf (software clock; this VM has no hardware counters) for the malloc and huge-page
# buffers and prints the share of the kernel functions that differ.
#
# Needs root (vm.nr_hugepages for fio's --iomem=shmhuge, /proc/self/pagemap for the physical runs), fio, python3, and a
# Release build of tools/SharedStore.Bench. Usage:
#   bash tools/SharedStore.Bench/Devices/investigate-seqwrite.sh [ROUNDS] [SECONDS]
# The file is the device bench's (2 GiB, /var/tmp/sharedstore-bench/devices-2048m.dat; run a device-* scenario once
# to create it). The results of the runs behind docs/DEVICES.md are listed there.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-3}
FILE=/var/tmp/sharedstore-bench/devices-2048m.dat
BENCH=${BENCH:-tools/SharedStore.Bench/bin/Release/net10.0/SharedStore.Bench} # or a copy of the build, so work can go on beside a long run
[ -f "$FILE" ] || { echo "missing $FILE: run 'SharedStore.Bench device-uring-seqwrite-1m' once first" >&2; exit 2; }
[ -x "$BENCH" ] || { echo "missing $BENCH: dotnet build tools/SharedStore.Bench -c Release" >&2; exit 2; }
DEV=$(basename "$(df --output=source "$FILE" | tail -1)")
[ -f "/sys/block/$DEV/stat" ] || DEV=$(lsblk -no pkname "/dev/$DEV" | head -1)

# Huge pages for fio's --iomem=shmhuge (the same hugetlb memory as mmaphuge, without a hugetlbfs mount; fio 3.33
# corrupts its heap with mmaphuge, --thread and numjobs > 1). The reservation is put back on exit.
old_huge=$(cat /proc/sys/vm/nr_hugepages)
free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
[ "$free" -lt 40 ] && echo $((old_huge + 40 - free)) > /proc/sys/vm/nr_hugepages
trap 'echo "$old_huge" > /proc/sys/vm/nr_hugepages' EXIT

stat_w() { awk '{print $5, $7, $6}' "/sys/block/$DEV/stat"; } # write requests, sectors, merges

report_disk() { # before after
  read -r i0 s0 m0 <<<"$1"; read -r i1 s1 m1 <<<"$2"
  local ios=$((i1 - i0)) kib=0
  [ "$ios" -gt 0 ] && kib=$(( (s1 - s0) * 512 / ios / 1024 ))
  printf 'disk %6d req %5d KiB/req %5d merged' "$ios" "$kib" $((m1 - m0))
}

fio_run() { # label depth extra...
  local label=$1 depth=$2; shift 2
  local before after out
  before=$(stat_w)
  out=$(fio --name=v --filename="$FILE" --ioengine=io_uring --direct=1 --rw=write --bs=1m --iodepth="$depth" \
    --numjobs=1 --size=2g --time_based --runtime="${SECONDS_PER_RUN}s" --ramp_time=1s --hipri=0 --thread \
    --output-format=json "$@" 2>&1)
  after=$(stat_w)
  python3 - "$label" "$out" <<'EOF'
import json, sys
label, text = sys.argv[1], sys.argv[2]
j = json.loads(text[text.index('{'):])['jobs'][0]
w = j['write']
cpu_us = (j['usr_cpu'] + j['sys_cpu']) / 100 * j['elapsed'] * 1e6 / max(1, w['total_ios'])
print(f"fio  {label:<30} {w['bw_bytes'] / 1e6:7.0f} MB/s {cpu_us:6.1f} us-cpu/op  ", end='')
EOF
  report_disk "$before" "$after"; echo
}

ours_run() { # label probe-args...
  local label=$1; shift
  local before after out
  before=$(stat_w)
  out=$("$BENCH" --device-probe --file "$FILE" --seconds "$SECONDS_PER_RUN" "$@" 2>&1)
  after=$(stat_w)
  read -r mbps _ _ _ cpu _ wrk runs <<<"$out"
  printf 'ours %-30s %7s MB/s %6s us-cpu/op  ' "$label" "$mbps" "$cpu"
  report_disk "$before" "$after"; echo "  $wrk $runs"
}

echo "# $(date -u +%FT%TZ) $(uname -r) disk $DEV max_segments $(cat /sys/block/$DEV/queue/max_segments) THP $(cat /sys/kernel/mm/transparent_hugepage/enabled)"
echo "# load at start: $(cat /proc/loadavg)"
# One line per run: kind|label|options. Each round runs them in a new random order: the disk's speed depends on what
# ran just before (the host caches writes and drains behind the guest's back), so a fixed order would give each
# variant a fixed neighbour and a fixed bias. The output is sorted back into this order.
runs=(
  "fio|qd8 malloc (plain)|8"
  "ours|qd8 NativeMemory.AlignedAlloc|--qd 8 --buffers malloc"
  "fio|qd8 shmhuge|8 --iomem=shmhuge"
  "ours|qd8 DeviceBuffers|--qd 8 --buffers huge"
  "ours|qd8 DeviceBuffers fixed-batch|--qd 8 --buffers huge --batch fixed"
  "ours|qd8 DeviceBuffers no-batch|--qd 8 --buffers huge --batch none"
  "fio|qd8 fixedbufs|8 --fixedbufs"
  "fio|qd8 registerfiles|8 --registerfiles"
  "fio|qd8 shmhuge+fixedbufs+regf|8 --iomem=shmhuge --fixedbufs --registerfiles"
  "fio|qd4 shmhuge|4 --iomem=shmhuge"
  "ours|qd4 DeviceBuffers|--qd 4 --buffers huge"
  "fio|qd16 shmhuge|16 --iomem=shmhuge"
  "ours|qd16 DeviceBuffers|--qd 16 --buffers huge"
)
position=0
for r in $(seq 1 "$ROUNDS"); do
  echo "## round $r (load $(cut -d' ' -f1-3 /proc/loadavg))"
  for i in $(seq 0 $((${#runs[@]} - 1)) | shuf); do
    IFS='|' read -r kind label opts <<<"${runs[$i]}"
    # shellcheck disable=SC2086 # opts are words
    if [ "$kind" = fio ]; then line=$(fio_run "$label" $opts); else line=$(ours_run "$label" $opts); fi
    printf '%02d %s (ran %d.)\n' "$i" "$line" "$((++position))"
  done | sort -n | cut -c4-
done
echo "# load at end: $(cat /proc/loadavg)"

if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then
  for buffers in malloc huge; do
    "$BENCH" --device-probe --file "$FILE" --seconds $((SECONDS_PER_RUN + 2)) --qd 8 --buffers "$buffers" >/tmp/sharedstore-probe.$$ 2>&1 &
    pid=$!
    sleep 1.5
    perf record -F 999 -g -p "$pid" -o /tmp/sharedstore-perf.$$ -- sleep "$SECONDS_PER_RUN" >/dev/null 2>&1 || true
    wait "$pid"
    echo "## perf, buffers=$buffers: $(cat /tmp/sharedstore-probe.$$)"
    perf report -i /tmp/sharedstore-perf.$$ --children --sort sym --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+% +[0-9.]+% .*(io_cqring_wait|io_submit_sqes|gup_fast_fallback|bio_iov_iter_get_pages|iomap_dio_bio_end_io|virtqueue_notify|iowrite16|blk_mq_submit_bio|finish_task_switch|handle_softirqs)$' |
      awk '{printf "   %-28s %s of samples (children)\n", $NF, $1}'
    echo "   samples: $(perf report -i /tmp/sharedstore-perf.$$ --stdio 2>/dev/null | awk '/^# Samples/ {print $3; exit}')"
    rm -f /tmp/sharedstore-perf.$$ /tmp/sharedstore-probe.$$
  done
fi
