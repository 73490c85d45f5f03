#!/usr/bin/env bash
# Where one PUT stops paying (P10): 1 GiB of segments of each size in SIZES
# (MiB) archived to S3 (s3s-fs on 127.0.0.1, which checks the checksum a
# PUT carries), each in one PUT (`--single-put-max` = the segment size) and
# staged in 8 MiB parts (`--single-put-max 0`: a multipart upload to a
# staging key, its CRC32C read back, a create-only copy), in the same run.
# For each: the time and the archiver's peak RSS (GNU time). One PUT holds a
# whole segment per upload in memory; staging holds 8 MiB parts. The default
# threshold (64 MiB) is chosen from this table.
#
#   bench/threshold.sh                        # 4, 16, 64, 256 MiB; 3 rounds
#   ROUNDS=1 SIZES="16 64" bench/threshold.sh
#
# Installs what it lacks: s3s-fs (cargo), GNU time (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
SIZES="${SIZES:-4 16 64 256}"
CONCURRENCY="${CONCURRENCY:-4}"
TOTAL_MIB=1024

command -v s3s-fs >/dev/null || cargo install s3s-fs --version 0.14.1 --features binary --locked
if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq time; else echo "bench/threshold.sh: needs GNU time (apt-get install time)" >&2; exit 2; fi
fi
. bench/common.sh
build_archiver

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wal-archiver-threshold.XXXXXX")
cleanup() {
  stop_s3s_fs
  rm -rf "$WORK"
}
trap cleanup EXIT

for mib in $SIZES; do
  "$BIN" generate --dir "$WORK/wal-$mib" --count $((TOTAL_MIB / mib)) --size $((mib << 20)) >/dev/null
done

start_s3s_fs "$WORK/s3"

results="$WORK/results"
: >"$results"

# one MIB MODE ROUND: appends "MIB MODE microseconds max-rss-KiB".
one() {
  local mib=$1 mode=$2 round=$3 max name
  if [ "$mode" = one-put ]; then max=$((mib << 20)); else max=0; fi
  name="$mib-$mode-$round"
  sync
  local t0 t1
  t0=$(date +%s%N)
  env "${s3_env[@]}" /usr/bin/time -v -o "$WORK/time.txt" "$BIN" archive --once --concurrency "$CONCURRENCY" \
    --single-put-max "$max" --wal-dir "$WORK/wal-$mib" --to "s3://bench/$name" --state "$WORK/state-$name.json" >"$WORK/out.txt" 2>&1 || {
    echo "bench/threshold.sh: $mib MiB $mode failed:" >&2
    cat "$WORK/out.txt" >&2
    exit 1
  }
  t1=$(date +%s%N)
  # One PUT only where the store was found to check it: else both modes stage.
  if [ "$mode" = one-put ] && ! grep -q "checks the checksum of each PUT" "$WORK/out.txt"; then
    echo "bench/threshold.sh: the store was not found to check a PUT's checksum; nothing went in one PUT:" >&2
    cat "$WORK/out.txt" >&2
    exit 1
  fi
  grep -q "archived $((TOTAL_MIB / mib)) segments" "$WORK/out.txt" || {
    echo "bench/threshold.sh: $mib MiB $mode did not archive every segment:" >&2
    cat "$WORK/out.txt" >&2
    exit 1
  }
  echo "$mib $mode $(((t1 - t0) / 1000)) $(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")" >>"$results"
  rm -rf "$WORK/s3/bench/$name" "$WORK/state-$name.json"
}

for round in $(seq 1 "$ROUNDS"); do
  for mib in $SIZES; do
    if [ $((round % 2)) = 1 ]; then
      one "$mib" one-put "$round"
      one "$mib" staged "$round"
    else
      one "$mib" staged "$round"
      one "$mib" one-put "$round"
    fi
  done
done

python3 - "$results" "$ROUNDS" "$TOTAL_MIB" "$CONCURRENCY" <<'EOF'
import statistics, sys
path, rounds, total, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
runs = {}
for line in open(path):
    mib, mode, us, rss = line.split()
    runs.setdefault((int(mib), mode), []).append((int(us) / 1e6, int(rss) / 1024))
print(f"P10 one PUT or staged: {total} MiB to s3s-fs per run, concurrency {concurrency}, medians of {rounds} rounds")
print(f"{'segment':>8} {'one PUT s':>10} {'staged s':>9} {'staged/one':>11} {'one PUT RSS MiB':>16} {'staged RSS MiB':>15}")
for mib in sorted({m for m, _ in runs}):
    one = statistics.median(t for t, _ in runs[(mib, "one-put")])
    staged = statistics.median(t for t, _ in runs[(mib, "staged")])
    rss_one = statistics.median(r for _, r in runs[(mib, "one-put")])
    rss_staged = statistics.median(r for _, r in runs[(mib, "staged")])
    print(f"{mib:>5} MiB {one:>10.2f} {staged:>9.2f} {staged / one:>11.2f} {rss_one:>16.1f} {rss_staged:>15.1f}")
EOF
