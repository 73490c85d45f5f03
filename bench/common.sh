# Sourced by the benchmarks (from the repository's top).
#
#   build_archiver      builds the release binary (and the wasm target it
#                       needs) and sets `BIN` to it
#   start_s3s_fs ROOT   starts an s3s-fs server on 127.0.0.1 over ROOT (a bucket is a directory under
#                       it; `bench` is made), sets `s3_port`, `s3_pid` and
#                       `s3_env` (the AWS variables the archiver reads), and
#                       waits until it answers
#   stop_s3s_fs         stops it and waits for it, so that its root can go

s3_pid=

build_archiver() {
  rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
  cargo build --release --quiet -p wal-archiver
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  BIN="$target_dir/release/wal-archiver"
}

start_s3s_fs() {
  local root=$1
  s3_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$root/bench"
  s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key bench --secret-key benchsecret "$root" >"$root.log" 2>&1 &
  s3_pid=$!
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$s3_port/" && break
    sleep 0.1
  done
  s3_env=(AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
    AWS_ENDPOINT="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true)
}

stop_s3s_fs() {
  if [ -n "$s3_pid" ]; then
    kill "$s3_pid" 2>/dev/null || true
    wait "$s3_pid" 2>/dev/null || true
    s3_pid=
  fi
}
