#!/usr/bin/env bash
# The signed read path of issue 12 against the bare-axum ceiling, with the out-of-process kit
# (../shared/perf): each of the six commands through the kit's side_by_side.sh, bnr started the
# way the kit's README says (release build, pinned to one core, the dummy's policies imported).
#
# usage: scripts/perf-read-path.sh            # from the repository root
# env (defaults):
#   KIT=/work/shared/perf   the kit (copied to target/perf-kit, which must be writable)
#   BNR=target/release/bnr  the server binary (cargo build --release -p bnr --bin bnr)
#   PROVIDERS=target/providers (cargo xtask plugins)
#   ROUNDS=3 SECS=5 CONNS=32  passed to side_by_side.sh
#   COMMANDS="listZones listBackupOfferings listBackups listVirtualMachines listBackupSchedule queryAsyncJobResult"
#   MODE=ratios             every command against the baseline
#   MODE=overhead           signed listZones on two bnr servers started alike, one with
#                           `--metrics-listen` and RUST_LOG=info (spans on), one without metrics and
#                           RUST_LOG=warn (spans off); ROUNDS alternating runs of each; prints the
#                           median ratio on/off.
# Prints one line per command: `<command> ratio=<median ratio bnr/baseline> ...`.
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
KIT=${KIT:-/work/shared/perf}
BNR=${BNR:-target/release/bnr}
PROVIDERS=${PROVIDERS:-target/providers}
MODE=${MODE:-ratios}
export ROUNDS=${ROUNDS:-3} SECS=${SECS:-5} CONNS=${CONNS:-32}
COMMANDS=${COMMANDS:-listZones listBackupOfferings listBackups listVirtualMachines listBackupSchedule queryAsyncJobResult}
[ -x "$BNR" ] || { echo "perf-read-path: $BNR missing: cargo build --release -p bnr --bin bnr" >&2; exit 1; }
[ -f "$PROVIDERS/bnr_dummy.wasm" ] || { echo "perf-read-path: run cargo xtask plugins" >&2; exit 1; }

# A copy of the kit whose sign() also signs $EXTRA (the kit signs only COMMAND).
kit=target/perf-kit/kit
mkdir -p "$kit"
cp "$KIT"/*.sh "$KIT"/*.py "$kit"/
rm -rf "$kit/axum-baseline" && mkdir -p "$kit/axum-baseline" && cp -r "$KIT/axum-baseline/src" "$KIT/axum-baseline/Cargo.toml" "$kit/axum-baseline/"
# Under target/ of this workspace: the copy is a workspace of its own.
grep -q '^\[workspace\]' "$kit/axum-baseline/Cargo.toml" || printf '\n[workspace]\n' >>"$kit/axum-baseline/Cargo.toml"
sed -i 's/"\$BNR_SECRET" "\$COMMAND"; }/"$BNR_SECRET" "$COMMAND" ${EXTRA:-}; }/' "$kit/side_by_side.sh"
grep -q 'EXTRA' "$kit/side_by_side.sh" || { echo "perf-read-path: cannot patch the kit's sign()" >&2; exit 1; }
export CARGO_TARGET_DIR=$root/target/perf-kit/target

pids=()
dirs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "${dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_bnr LOG_FILTER [extra serve args...] -> sets $url $apikey $secret $vm $job $pid
start_bnr() {
  local filter=$1; shift
  local dir port
  dir=$(mktemp -d -t bnr-perf.XXXXXX); dirs+=("$dir")
  port=$(free_port)
  RUST_LOG=$filter taskset -c 1 "$BNR" serve --listen "127.0.0.1:$port" --data-dir "$dir" \
    --providers-dir "$PROVIDERS" "$@" >"$dir/stdout.log" 2>&1 &
  pid=$!; pids+=("$pid")
  for _ in $(seq 600); do
    [ -f "$dir/admin-keys.json" ] && curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/stdout.log" >&2; exit 1; }
    sleep 0.1
  done
  url=http://127.0.0.1:$port/client/api
  apikey=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["apikey"])' "$dir/admin-keys.json")
  secret=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secretkey"])' "$dir/admin-keys.json")
  eval "$(python3 host/benches/kit/seed.py "$url" "$apikey" "$secret" "$KIT")"
  vm=$VM job=$JOB
}

extra_for() {
  case $1 in
    listBackups) echo "page=1 pagesize=20" ;;
    listBackupSchedule) echo "virtualmachineid=$vm" ;;
    queryAsyncJobResult) echo "jobid=$job" ;;
    *) echo "" ;;
  esac
}

case $MODE in
  ratios)
    start_bnr "${RUST_LOG:-info}"
    echo "# bnr $(git rev-parse --short HEAD) load: $(cut -d' ' -f1-3 /proc/loadavg)"
    for c in $COMMANDS; do
      out=$(BNR_URL=$url BNR_APIKEY=$apikey BNR_SECRET=$secret COMMAND=$c EXTRA="$(extra_for "$c")" \
        "$kit/side_by_side.sh" 2>&1) || { echo "$out" >&2; exit 1; }
      echo "$out" | sed "s/^/# $c: /" >&2
      ratio=$(echo "$out" | sed -n 's/^median ratio bnr\/baseline (requests\/s): //p')
      med=$(echo "$out" | sed -n 's/^median rps: //p')
      echo "$c ratio=$ratio $med"
    done
    ;;
  overhead)
    start_bnr info --metrics-listen "127.0.0.1:$(free_port)"
    on_url=$url on_key=$apikey on_secret=$secret
    start_bnr warn
    off_url=$url off_key=$apikey off_secret=$secret
    on_signed=$(python3 "$kit/signed_url.py" "$on_url" "$on_key" "$on_secret" listZones)
    off_signed=$(python3 "$kit/signed_url.py" "$off_url" "$off_key" "$off_secret" listZones)
    export LOAD_THREADS=2 LOAD_CPUS=0
    "$kit/load.sh" "$on_signed" 2 "$CONNS" >/dev/null
    "$kit/load.sh" "$off_signed" 2 "$CONNS" >/dev/null
    ratios=()
    for r in $(seq "$ROUNDS"); do
      if [ $((r % 2)) = 1 ]; then order="on off"; else order="off on"; fi
      for who in $order; do
        if [ "$who" = on ]; then u=$on_signed; else u=$off_signed; fi
        line=$("$kit/load.sh" "$u" "$SECS" "$CONNS")
        echo "round $r $who $line" >&2
        eval "rps_$who=$(echo "$line" | sed -n 's/^rps=\([0-9]*\).*/\1/p')"
      done
      ratios+=("$(awk -v a="$rps_on" -v b="$rps_off" 'BEGIN { printf "%.3f", a / b }')")
    done
    printf '%s\n' "${ratios[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "metrics+tracing on/off ratio: median=%s rounds=", a[int((NR + 1) / 2)] }'
    echo "${ratios[*]}"
    ;;
  *) echo "perf-read-path: MODE is ratios or overhead" >&2; exit 2 ;;
esac
