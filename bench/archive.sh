#!/usr/bin/env bash
# End-to-end benchmark of `wal-archiver archive --once` beside the tools an
# operator would otherwise use, on the same files in the same run:
#   P1  to file://, beside `cp` + `sync`                    goal >= 0.9 x cp's throughput
#   P2  to S3 (s3s-fs on 127.0.0.1), beside `rclone copy`    goal >= 1.2 x rclone's throughput
#   P2b requests and request-body bytes per segment to S3,   goal <= 2 requests, <= 1.01 x the bytes
#       counted by a proxy (bench/count_requests.py), rclone's beside
#   P5  the archiver's peak RSS (GNU time)                   goal <= 64 MiB + concurrency x buffer
#   P6  the watcher at rest (CPU ticks from /proc) and the time to archive a new segment
#   P7  20,000 segments of 16 bytes to file://, beside `cp -a` + `sync`   goal <= 3 x cp's time
# Each round runs every pair, alternating which goes first; the table gives
# the medians. Checksums are on (the default) in every archiver run.
#
#   bench/archive.sh                                   # 64 x 16 MiB segments, 5 rounds
#   ROUNDS=3 COUNT=16 SMALL_COUNT=2000 bench/archive.sh  # a quicker look
#
# Installs what it lacks: s3s-fs (cargo), rclone and GNU time (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-5}"
COUNT="${COUNT:-64}"
SIZE="${SIZE:-16777216}"
CONCURRENCY="${CONCURRENCY:-4}"
SMALL_COUNT="${SMALL_COUNT:-20000}"
SMALL_SIZE=16
# The archiver's upload buffer for P5: a whole segment for a PUT of one
# (up to 64 MiB, store/object.rs SINGLE_PUT_MAX), else an 8 MiB part.
if [ "$SIZE" -le $((64 << 20)) ] && [ "$SIZE" -gt $((8 << 20)) ]; then
  BUFFER_MIB=$(((SIZE + (1 << 20) - 1) >> 20))
else
  BUFFER_MIB=8
fi

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "$@"
  else
    echo "bench/archive.sh: needs $* (apt-get install $*)" >&2
    exit 2
  fi
}
command -v rclone >/dev/null || apt_install rclone
[ -x /usr/bin/time ] || apt_install time
command -v s3s-fs >/dev/null || cargo install s3s-fs --version 0.14.1 --features binary
. bench/common.sh
build_archiver

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wal-archiver-bench.XXXXXX")
cleanup() {
  stop_s3s_fs
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" generate --dir "$WORK/wal" --count "$COUNT" --size "$SIZE" >/dev/null
"$BIN" generate --dir "$WORK/small" --count "$SMALL_COUNT" --size "$SMALL_SIZE" >/dev/null
total_bytes=$((COUNT * SIZE))

# s3s-fs keeps each bucket as a directory under its root.
start_s3s_fs "$WORK/s3"
port=$s3_port

# The archiver reads the standard AWS variables; rclone its own. rclone
# refuses a plain-HTTP endpoint when AWS_CA_BUNDLE is set, so it runs without.
rclone_env=(RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other
  RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=bench RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=benchsecret
  RCLONE_CONFIG_BENCH_ENDPOINT="http://127.0.0.1:$port" RCLONE_CONFIG_BENCH_REGION=us-east-1
  RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true)

results="$WORK/results"
: >"$results"

# run NAME CMD...: times CMD (wall clock, ns) under GNU time and appends
# "NAME seconds max-rss-KiB" to the results. Dirty pages of earlier runs are
# written out first, so that no run pays for another's.
run() {
  local name=$1
  shift
  sync
  local t0 t1
  t0=$(date +%s%N)
  /usr/bin/time -v -o "$WORK/time.txt" "$@" >"$WORK/out.txt" 2>&1 || {
    echo "bench/archive.sh: $name failed:" >&2
    cat "$WORK/out.txt" >&2
    exit 1
  }
  t1=$(date +%s%N)
  local rss
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  echo "$name $(((t1 - t0) / 1000)) $rss" >>"$results"
}

# check_count DIR [N]: DIR holds N segment files (default COUNT), to check
# that each run copied everything.
check_count() {
  local n want=${2:-$COUNT}
  n=$(find "$1" -maxdepth 1 -name 'wal-*.seg' | wc -l)
  if [ "$n" != "$want" ]; then
    echo "bench/archive.sh: $1 holds $n segments, not $want" >&2
    exit 1
  fi
}

p1_cp() {
  rm -rf "$WORK/cp" && mkdir "$WORK/cp"
  run p1-cp bash -c 'cp "$0"/wal/wal-*.seg "$0"/cp/ && sync' "$WORK"
  check_count "$WORK/cp"
}
p1_archiver() {
  rm -rf "$WORK/file-archive" "$WORK/state.json"
  run p1-archiver "$BIN" archive --once --wal-dir "$WORK/wal" --to "file://$WORK/file-archive" \
    --state "$WORK/state.json" --concurrency "$CONCURRENCY"
  check_count "$WORK/file-archive"
}
p2_rclone() {
  rm -rf "$WORK/s3/bench/rclone"
  run p2-rclone env -u AWS_CA_BUNDLE "${rclone_env[@]}" rclone copy "$WORK/wal" bench:bench/rclone \
    --include 'wal-*.seg' --transfers "$CONCURRENCY" --no-check-dest --s3-no-check-bucket --s3-no-head
  check_count "$WORK/s3/bench/rclone"
}
p2_archiver() {
  rm -rf "$WORK/s3/bench/archiver" "$WORK/state.json"
  run p2-archiver env "${s3_env[@]}" "$BIN" archive --once --wal-dir "$WORK/wal" --to s3://bench/archiver \
    --state "$WORK/state.json" --concurrency "$CONCURRENCY"
  check_count "$WORK/s3/bench/archiver"
}
p7_cp() {
  rm -rf "$WORK/small-cp"
  run p7-cp bash -c 'cp -a "$0"/small "$0"/small-cp && sync' "$WORK"
  check_count "$WORK/small-cp" "$SMALL_COUNT"
}
p7_archiver() {
  rm -rf "$WORK/small-archive" "$WORK/small-state.json"
  run p7-archiver "$BIN" archive --once --wal-dir "$WORK/small" --to "file://$WORK/small-archive" \
    --state "$WORK/small-state.json" --concurrency "$CONCURRENCY"
  check_count "$WORK/small-archive" "$SMALL_COUNT"
}
echo "$COUNT segments of $SIZE bytes ($((total_bytes >> 20)) MiB) and $SMALL_COUNT of $SMALL_SIZE bytes," \
  "$ROUNDS rounds, concurrency $CONCURRENCY, in $WORK"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    p1_cp; p1_archiver; p2_rclone; p2_archiver; p7_cp; p7_archiver
  else
    p1_archiver; p1_cp; p2_archiver; p2_rclone; p7_archiver; p7_cp
  fi
  echo "round $round done"
done

# P2b: one more run of each to S3, through a proxy that counts requests and
# body bytes (not timed).
rm -rf "$WORK/s3/bench/counted-archiver" "$WORK/s3/bench/counted-rclone" "$WORK/state.json"
python3 bench/count_requests.py "$port" -- env "${s3_env[@]}" AWS_ENDPOINT=@PROXY@ "$BIN" archive --once \
  --wal-dir "$WORK/wal" --to s3://bench/counted-archiver --state "$WORK/state.json" --concurrency "$CONCURRENCY" >"$WORK/p2b.txt"
check_count "$WORK/s3/bench/counted-archiver"
python3 bench/count_requests.py "$port" -- env -u AWS_CA_BUNDLE "${rclone_env[@]}" RCLONE_CONFIG_BENCH_ENDPOINT=@PROXY@ \
  rclone copy "$WORK/wal" bench:bench/counted-rclone --include 'wal-*.seg' --transfers "$CONCURRENCY" \
  --no-check-dest --s3-no-check-bucket --s3-no-head >>"$WORK/p2b.txt"
check_count "$WORK/s3/bench/counted-rclone"

# P6: the watcher at rest, and how soon it picks up a new segment.
python3 - "$BIN" "$WORK" "${IDLE_SECONDS:-10}" >"$WORK/p6.txt" <<'P6'
import os, signal, statistics, subprocess, sys, time
bin, work, idle = sys.argv[1], sys.argv[2], int(sys.argv[3])
wal, stage, archive = f"{work}/watch", f"{work}/stage", f"{work}/watch-archive"
seg = 1 << 20
def generate(into, start, count):
    subprocess.run([bin, "generate", "--dir", into, "--count", str(count), "--size", str(seg),
                    "--start-lsn", str(start)], check=True, stdout=subprocess.DEVNULL)
def markers():
    try:
        return os.listdir(f"{archive}/_checksums")
    except FileNotFoundError:
        return []
def wait_for(count, limit=30):
    end = time.monotonic() + limit
    while len(markers()) < count:
        if time.monotonic() > end:
            sys.exit(f"the watcher archived {len(markers())} of {count} segments in {limit} s")
        time.sleep(0.001)
generate(wal, 1, 2)
watcher = subprocess.Popen([bin, "archive", "--wal-dir", wal, "--to", f"file://{archive}",
                            "--state", f"{work}/watch-state.json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    wait_for(2)
    time.sleep(2)
    def ticks():
        fields = open(f"/proc/{watcher.pid}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    before = ticks()
    time.sleep(idle)
    used = ticks() - before
    hz = os.sysconf("SC_CLK_TCK")
    latencies = []
    for k in range(5):
        os.makedirs(stage, exist_ok=True)
        generate(stage, (2 + k) * seg + 1, 1)
        name = os.listdir(stage)[0]
        t0 = time.monotonic()
        os.rename(f"{stage}/{name}", f"{wal}/{name}")
        wait_for(3 + k)
        latencies.append((time.monotonic() - t0) * 1000)
        time.sleep(0.5)
finally:
    watcher.send_signal(signal.SIGTERM)
    watcher.wait()
print(f"{used} {idle} {hz} {statistics.median(latencies):.1f} " + " ".join(f"{l:.1f}" for l in latencies))
P6

python3 - "$results" "$total_bytes" "$CONCURRENCY" "$BUFFER_MIB" "$WORK/p6.txt" "$WORK/p2b.txt" "$COUNT" "$SMALL_COUNT" <<'EOF'
import statistics, sys
path, total, concurrency, chunk_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
count, small_count = int(sys.argv[7]), int(sys.argv[8])
used, idle, hz, pickup, *pickups = open(sys.argv[5]).read().split()
runs = {}
for line in open(path):
    name, us, rss = line.split()
    runs.setdefault(name, []).append((int(us) / 1e6, int(rss) / 1024))
med = {k: statistics.median(s for s, _ in v) for k, v in runs.items()}
peak = {k: max(r for _, r in v) for k, v in runs.items()}
mb_s = lambda s: total / s / 1e6
print()
print(f"{'run':<14}{'median s':>10}{'MB/s':>9}{'peak RSS MiB':>14}   every run (s)")
for k in ["p1-cp", "p1-archiver", "p2-rclone", "p2-archiver", "p7-cp", "p7-archiver"]:
    times = " ".join(f"{s:.2f}" for s, _ in runs[k])
    rate = f"{mb_s(med[k]):>9.0f}" if k[:2] != "p7" else f"{small_count / med[k]:>9.0f}"
    print(f"{k:<14}{med[k]:>10.2f}{rate}{peak[k]:>14.1f}   {times}")
print("(MB/s for p1 and p2; segments per second for p7)")
p1 = med["p1-cp"] / med["p1-archiver"]
p2 = med["p2-rclone"] / med["p2-archiver"]
p7 = med["p7-archiver"] / med["p7-cp"]
(arch_req, arch_bytes, *arch_methods), (rc_req, rc_bytes, *rc_methods) = (l.split() for l in open(sys.argv[6]))
budget = 64 + concurrency * chunk_mib
p5 = max(peak["p1-archiver"], peak["p2-archiver"])
verdict = lambda ok: "met" if ok else "NOT met"
print()
print(f"P1 archiver/cp+sync throughput: {p1:.2f} (goal >= 0.9: {verdict(p1 >= 0.9)})")
print(f"P2 archiver/rclone throughput:  {p2:.2f} (goal >= 1.2: {verdict(p2 >= 1.2)})")
# Per run, whatever the count: the listings of the staging area (for
# leftovers) and of the archive, the probe of whether the store checks a
# PUT's checksum and its removal, the chain-start record.
per_run = 5
per_seg, wire = (int(arch_req) - per_run) / count, int(arch_bytes) / total
print(f"P2b archiver to S3: {arch_req} requests ({' '.join(arch_methods)}): {per_run} per run and {per_seg:.2f} per segment; "
      f"{int(arch_bytes)} body bytes, {wire:.4f} x the segments (goal <= 2 and <= 1.01: {verdict(per_seg <= 2 and wire <= 1.01)})")
print(f"    rclone to S3:   {rc_req} requests ({' '.join(rc_methods)}), {int(rc_req) / count:.2f} per segment; "
      f"{int(rc_bytes)} body bytes, {int(rc_bytes) / total:.4f} x the segments")
print(f"P7 {small_count} x 16 B, archiver/cp -a+sync time: {p7:.2f} (goal <= 3: {verdict(p7 <= 3)})")
print(f"P5 archiver peak RSS: {p5:.1f} MiB (goal <= {budget} MiB = 64 + {concurrency} x {chunk_mib} MiB: {verdict(p5 <= budget)})")
cpu = 100 * int(used) / (int(hz) * int(idle))
print(f"P6 watcher at rest: {used} CPU ticks in {idle} s ({cpu:.2f} % of a core); "
      f"new segment archived after {pickup} ms, median of {' '.join(pickups)} "
      f"(goal about 0 % and <= 100 ms: {verdict(cpu < 0.5 and float(pickup) <= 100)})")
EOF
