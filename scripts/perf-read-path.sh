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
#   MODE=compare            before/after: two bnr binaries (BASE_BNR, the build before the change,
#                           and BNR) and the baseline, all pinned to CPU 1, loaded in turn with
#                           the order rotated each round (load hits them alike); the baseline
#                           answers with the after server's body. Prints a markdown table:
#                           per command the three per-round ratios before and after, their
#                           medians, and the median req/s and p99 of each server.
#   MODE=overhead           two bnr servers started alike but for what is measured (SPLIT), loaded
#                           in turn, ROUNDS alternating runs of each, for each of COMMANDS
#                           (default here: listZones); prints the median ratio on/off:
#     SPLIT=all (default)   on: `--metrics-listen` and RUST_LOG=info (the api_request span);
#                           off: no metrics and RUST_LOG=warn (spans off)
#     SPLIT=span            RUST_LOG=info against RUST_LOG=warn, metrics off on both
#     SPLIT=metrics         `--metrics-listen` against none, RUST_LOG=warn on both
#   BNR_ARGS=               more `bnr serve` arguments for BNR (every mode), e.g.
#                           `--no-kept-answers` to measure reads that are not answered from memory
#   BASE_ARGS=              the same for BASE_BNR (MODE=compare)
#   BASE_PROVIDERS=$PROVIDERS  the providers BASE_BNR loads (built from its own tree when the
#                           provider interface version changed since)
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

# CPU time (clock ticks) a process has used: its share of a run is the difference over the run.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_bnr LOG_FILTER [extra serve args...] -> sets $url $apikey $secret $vm $job $pid
# (the binary is $SERVER_BIN, default $BNR; its providers $SERVER_PROVIDERS, default $PROVIDERS)
start_bnr() {
  local filter=$1; shift
  local dir port
  dir=$(mktemp -d -t bnr-perf.XXXXXX); dirs+=("$dir")
  port=$(free_port)
  RUST_LOG=$filter taskset -c 1 "${SERVER_BIN:-$BNR}" serve --listen "127.0.0.1:$port" --data-dir "$dir" \
    --providers-dir "${SERVER_PROVIDERS:-$PROVIDERS}" "$@" >"$dir/stdout.log" 2>&1 &
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
    # shellcheck disable=SC2086
    start_bnr "${RUST_LOG:-info}" ${BNR_ARGS:-}
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
  compare)
    BASE_BNR=${BASE_BNR:?set BASE_BNR to the bnr binary built before the change}
    [ -x "$BASE_BNR" ] || { echo "perf-read-path: $BASE_BNR missing" >&2; exit 1; }
    echo "# building axum-baseline (release)" >&2
    cargo build --release --quiet --manifest-path "$kit/axum-baseline/Cargo.toml"
    baseline_bin=$CARGO_TARGET_DIR/release/axum-baseline
    # shellcheck disable=SC2086 # the arguments are separate words
    SERVER_BIN=$BASE_BNR SERVER_PROVIDERS=${BASE_PROVIDERS:-$PROVIDERS} start_bnr "${RUST_LOG:-info}" ${BASE_ARGS:-}
    b_url=$url b_key=$apikey b_secret=$secret b_vm=$vm b_job=$job b_pid=$pid
    # shellcheck disable=SC2086
    SERVER_BIN=$BNR start_bnr "${RUST_LOG:-info}" ${BNR_ARGS:-}
    a_url=$url a_key=$apikey a_secret=$secret a_vm=$vm a_job=$job a_pid=$pid
    export LOAD_THREADS=2 LOAD_CPUS=0
    echo "# before: $BASE_BNR ${BASE_ARGS:-}  after: $BNR ${BNR_ARGS:-} ($(git rev-parse --short HEAD))  ${SECS}s x $ROUNDS rounds, $CONNS connections"
    echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| command | before: ratio per round | before median | after: ratio per round | after median | req/s before / after / bare | p99 ms before / after / bare | server CPU % before / after / bare |"
    echo "|---|---|---:|---|---:|---|---|---|"
    for c in $COMMANDS; do
      vm=$b_vm job=$b_job
      # shellcheck disable=SC2046 # the extra parameters are separate words
      before_signed=$(python3 "$kit/signed_url.py" "$b_url" "$b_key" "$b_secret" "$c" $(extra_for "$c"))
      vm=$a_vm job=$a_job
      # shellcheck disable=SC2046
      after_signed=$(python3 "$kit/signed_url.py" "$a_url" "$a_key" "$a_secret" "$c" $(extra_for "$c"))
      body=${dirs[-1]}/$c.json
      curl -sS -f -o "$body" "$after_signed" || { echo "perf-read-path: $c on the after server failed" >&2; exit 1; }
      curl -sS -f -o /dev/null "$before_signed" || { echo "perf-read-path: $c on the before server failed" >&2; exit 1; }
      taskset -c 1 "$baseline_bin" --listen 127.0.0.1:0 --verify-signature "$a_secret" --body "$body" >"$body.base" 2>&1 &
      base_pid=$!; pids+=("$base_pid")
      for _ in $(seq 100); do grep -q '^listening on ' "$body.base" 2>/dev/null && break; sleep 0.05; done
      base_ep=$(sed -n 's/^listening on //p' "$body.base")
      [ -n "$base_ep" ] || { cat "$body.base" >&2; exit 1; }
      vm=$a_vm job=$a_job
      # shellcheck disable=SC2046
      bare_signed=$(python3 "$kit/signed_url.py" "$base_ep" "$a_key" "$a_secret" "$c" $(extra_for "$c"))
      for u in "$before_signed" "$after_signed" "$bare_signed"; do "$kit/load.sh" "$u" 2 "$CONNS" >/dev/null; done
      : >"$body.runs"
      orders=("before after bare" "after bare before" "bare before after")
      for r in $(seq "$ROUNDS"); do
        for who in ${orders[$(((r - 1) % 3))]}; do
          case $who in
            before) u=$before_signed p=$b_pid ;;
            after) u=$after_signed p=$a_pid ;;
            bare) u=$bare_signed p=$base_pid ;;
          esac
          t0=$(cpu_ticks "$p")
          line=$("$kit/load.sh" "$u" "$SECS" "$CONNS")
          cpu=$(awk -v a="$t0" -v b="$(cpu_ticks "$p")" -v hz="$hz" -v s="$SECS" 'BEGIN { printf "%.0f", 100 * (b - a) / hz / s }')
          echo "# $c round $r $who $line cpu=$cpu% load=$(cut -d' ' -f1 /proc/loadavg)" >&2
          echo "$r $who $line cpu=$cpu" >>"$body.runs"
        done
      done
      kill "$base_pid" 2>/dev/null || true; wait "$base_pid" 2>/dev/null || true
      awk -v cmd="$c" '
        { for (i = 3; i <= NF; i++) if (split($i, kv, "=") == 2) v[kv[1]] = kv[2]
          rps[$2, $1] = v["rps"]; p99[$2, $1] = v["p99_ms"]; cpu[$2, $1] = v["cpu"]; if ($1 > n) n = $1 }
        function median(a, n,   i, j, t, b) { for (i = 1; i <= n; i++) b[i] = a[i]
          for (i = 2; i <= n; i++) for (j = i; j > 1 && b[j-1] > b[j]; j--) { t = b[j]; b[j] = b[j-1]; b[j-1] = t }
          return n % 2 ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2 }
        END {
          for (r = 1; r <= n; r++) {
            rb[r] = rps["before", r] / rps["bare", r]; ra[r] = rps["after", r] / rps["bare", r]
            sb = sb (r > 1 ? ", " : "") sprintf("%.2f", rb[r]); sa = sa (r > 1 ? ", " : "") sprintf("%.2f", ra[r])
            qb[r] = rps["before", r]; qa[r] = rps["after", r]; qx[r] = rps["bare", r]
            pb[r] = p99["before", r]; pa[r] = p99["after", r]; px[r] = p99["bare", r]
            cb[r] = cpu["before", r]; ca[r] = cpu["after", r]; cx[r] = cpu["bare", r]
          }
          printf "| `%s` | %s | %.2f | %s | %.2f | %.1fk / %.1fk / %.1fk | %.2f / %.2f / %.2f | %d / %d / %d |\n", cmd,
            sb, median(rb, n), sa, median(ra, n), median(qb, n) / 1000, median(qa, n) / 1000, median(qx, n) / 1000,
            median(pb, n), median(pa, n), median(px, n), median(cb, n), median(ca, n), median(cx, n) }' "$body.runs"
    done
    echo
    echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    ;;
  overhead)
    case ${SPLIT:-all} in
      all) on_log=info on_metrics=1 off_log=warn off_metrics=0 ;;
      span) on_log=info on_metrics=0 off_log=warn off_metrics=0 ;;
      metrics) on_log=warn on_metrics=1 off_log=warn off_metrics=0 ;;
      *) echo "perf-read-path: SPLIT is all, span or metrics" >&2; exit 2 ;;
    esac
    metrics_args() { [ "$1" = 1 ] && echo "--metrics-listen 127.0.0.1:$(free_port)"; true; }
    # shellcheck disable=SC2046,SC2086
    start_bnr "$on_log" $(metrics_args "$on_metrics") ${BNR_ARGS:-}
    on_url=$url on_key=$apikey on_secret=$secret on_vm=$vm on_job=$job
    # shellcheck disable=SC2046,SC2086
    start_bnr "$off_log" $(metrics_args "$off_metrics") ${BNR_ARGS:-}
    off_url=$url off_key=$apikey off_secret=$secret off_vm=$vm off_job=$job
    export LOAD_THREADS=2 LOAD_CPUS=0
    echo "# overhead SPLIT=${SPLIT:-all} ${BNR_ARGS:-} on: RUST_LOG=$on_log metrics=$on_metrics  off: RUST_LOG=$off_log metrics=$off_metrics  load: $(cut -d' ' -f1-3 /proc/loadavg)"
    for c in ${OVERHEAD_COMMANDS:-listZones}; do
      vm=$on_vm job=$on_job
      # shellcheck disable=SC2046
      on_signed=$(python3 "$kit/signed_url.py" "$on_url" "$on_key" "$on_secret" "$c" $(extra_for "$c"))
      vm=$off_vm job=$off_job
      # shellcheck disable=SC2046
      off_signed=$(python3 "$kit/signed_url.py" "$off_url" "$off_key" "$off_secret" "$c" $(extra_for "$c"))
      "$kit/load.sh" "$on_signed" 2 "$CONNS" >/dev/null
      "$kit/load.sh" "$off_signed" 2 "$CONNS" >/dev/null
      ratios=()
      for r in $(seq "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then order="on off"; else order="off on"; fi
        for who in $order; do
          if [ "$who" = on ]; then u=$on_signed; else u=$off_signed; fi
          line=$("$kit/load.sh" "$u" "$SECS" "$CONNS")
          echo "# $c round $r $who $line load=$(cut -d' ' -f1 /proc/loadavg)" >&2
          eval "rps_$who=$(echo "$line" | sed -n 's/^rps=\([0-9]*\).*/\1/p')"
        done
        ratios+=("$(awk -v a="$rps_on" -v b="$rps_off" 'BEGIN { printf "%.3f", a / b }')")
      done
      printf '%s\n' "${ratios[@]}" | sort -n | awk -v c="$c" '{ a[NR] = $1 } END { printf "%s on/off ratio: median=%s rounds=", c, a[int((NR + 1) / 2)] }'
      echo "${ratios[*]}"
    done
    ;;
  *) echo "perf-read-path: MODE is ratios, compare or overhead" >&2; exit 2 ;;
esac
