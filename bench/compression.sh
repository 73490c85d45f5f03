#!/usr/bin/env bash
# Compression benchmark (P9): `wal-archiver archive --once` of WAL-like
# segments (`generate --content wal`: record headers, keys and small values)
# with --compression none, zstd:1 and zstd:3, to file:// and to S3 (s3s-fs on
# 127.0.0.1), in the same run. For each: the bytes the archive stores and
# the throughput, beside the uncompressed run to the same destination.
# Loopback costs nothing per byte, unlike any network to a real store: when
# run as root with tc, the S3 runs are repeated over a loopback limited to
# LINK_RATE (default 1gbit, a token bucket on `lo` for those runs only;
# anything else on this machine's loopback is slowed meanwhile).
#   goal: zstd:1 stores <= 40 % of the bytes, and archives to S3 no slower
#         than without compression (time ratio <= 1.0)
# Each round runs every setting, rotating which goes first; the table gives
# the medians. Checksums are on (the default) in every run.
#
#   bench/compression.sh                          # 64 x 16 MiB = 1 GiB, 3 rounds
#   ROUNDS=1 COUNT=16 bench/compression.sh        # a quicker look
#
# Installs what it lacks: s3s-fs (cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
COUNT="${COUNT:-64}"
SIZE="${SIZE:-16777216}"
CONCURRENCY="${CONCURRENCY:-4}"
LINK_RATE="${LINK_RATE:-1gbit}"
SETTINGS=(none zstd:1 zstd:3)

command -v s3s-fs >/dev/null || cargo install s3s-fs --version 0.14.1 --features binary --locked
. bench/common.sh
build_archiver

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wal-archiver-zstd-bench.XXXXXX")
link_set=
link_on() {
  tc qdisc add dev lo root tbf rate "$LINK_RATE" burst 1mb latency 100ms
  link_set=1
}
link_off() {
  [ -n "$link_set" ] && tc qdisc del dev lo root 2>/dev/null || true
  link_set=
}
cleanup() {
  link_off
  stop_s3s_fs
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" generate --dir "$WORK/wal" --count "$COUNT" --size "$SIZE" --content wal >/dev/null
total_bytes=$((COUNT * SIZE))

start_s3s_fs "$WORK/s3"

results="$WORK/results"
: >"$results"

# stored DIR: the bytes of the segment objects in DIR (plain or .zst).
stored() {
  find "$1" -maxdepth 1 -type f \( -name 'wal-*.seg' -o -name 'wal-*.seg.zst' \) -printf '%s\n' | awk '{s += $1} END {print s + 0}'
}

# one DEST SETTING ROUND: archives the WAL directory to a fresh archive and
# appends "DEST SETTING microseconds stored-bytes" to the results.
one() {
  local dest=$1 setting=$2 round=$3 name url dir
  name="${setting/:/}-$round"
  if [ "$dest" = file ]; then
    dir="$WORK/archive-$name"
    url="file://$dir"
  else
    dir="$WORK/s3/bench/$name"
    url="s3://bench/$name"
  fi
  sync
  local t0 t1
  t0=$(date +%s%N)
  env "${s3_env[@]}" "$BIN" archive --once --concurrency "$CONCURRENCY" --compression "$setting" \
    --wal-dir "$WORK/wal" --to "$url" --state "$WORK/state-$dest-$name.json" >"$WORK/out.txt" 2>&1 || {
    echo "bench/compression.sh: $dest $setting failed:" >&2
    cat "$WORK/out.txt" >&2
    exit 1
  }
  t1=$(date +%s%N)
  grep -q "archived $COUNT segments" "$WORK/out.txt" || {
    echo "bench/compression.sh: $dest $setting did not archive every segment:" >&2
    cat "$WORK/out.txt" >&2
    exit 1
  }
  echo "$dest $setting $(((t1 - t0) / 1000)) $(stored "$dir")" >>"$results"
  rm -rf "$dir" "$WORK/state-$dest-$name.json"
}

limited=
if [ "$(id -u)" = 0 ] && command -v tc >/dev/null && [ -z "$(tc qdisc show dev lo | grep -v noqueue)" ]; then
  limited=1
else
  echo "bench/compression.sh: not root, no tc, or lo already shaped: no runs over a limited link" >&2
fi

for round in $(seq 1 "$ROUNDS"); do
  n=${#SETTINGS[@]}
  for i in $(seq 0 $((n - 1))); do
    setting=${SETTINGS[$(((i + round - 1) % n))]}
    one file "$setting" "$round"
    one s3 "$setting" "$round"
    if [ -n "$limited" ]; then
      link_on
      one "s3@$LINK_RATE" "$setting" "$round"
      link_off
    fi
  done
done

python3 - "$results" "$total_bytes" "$ROUNDS" <<'EOF'
import statistics, sys
path, total, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = {}
for line in open(path):
    dest, setting, us, stored = line.split()
    runs.setdefault((dest, setting), []).append((int(us) / 1e6, int(stored)))
print(f"P9 compression: {total / 2**20:.0f} MiB of WAL-like segments, medians of {rounds} rounds")
print(f"{'destination':<12} {'setting':<8} {'seconds':>8} {'MiB/s':>8} {'stored MiB':>11} {'stored %':>9} {'time / none':>12}")
dests = ["file", "s3"] + sorted({d for d, _ in runs} - {"file", "s3"})
for dest in dests:
    base = statistics.median(t for t, _ in runs[(dest, "none")])
    for setting in ("none", "zstd:1", "zstd:3"):
        times = [t for t, _ in runs[(dest, setting)]]
        stored = statistics.median(s for _, s in runs[(dest, setting)])
        t = statistics.median(times)
        print(f"{dest:<12} {setting:<8} {t:>8.2f} {total / 2**20 / t:>8.0f} {stored / 2**20:>11.1f} {100 * stored / total:>8.1f}% {t / base:>12.2f}"
              + ("   rounds: " + ", ".join(f"{x:.2f}" for x in times) if rounds > 1 else ""))
z1 = statistics.median(s for _, s in runs[("s3", "zstd:1")]) / total
print(f"P9 zstd:1 stores {100 * z1:.1f} % (goal <= 40 %: {'met' if z1 <= 0.40 else 'NOT met'})")
for dest in dests[1:]:
    r = statistics.median(t for t, _ in runs[(dest, "zstd:1")]) / statistics.median(t for t, _ in runs[(dest, "none")])
    print(f"P9 zstd:1 to {dest} takes {r:.2f} x the time without (goal <= 1.0: {'met' if r <= 1.0 else 'NOT met'})")
EOF
