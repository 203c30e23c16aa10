#!/usr/bin/env bash
# make bench: jwt-guard side by side with Envoy's native jwt_authn, in ONE Envoy process.
#
# Listeners (127.0.0.1, ports picked by the kernel), all answering direct_response 200
# behind their filters (see bench/config.py):
#   none               no filter: the ceiling
#   native             jwt_authn (JWT cache off) + rbac requiring the scope
#   native-cache       the same with jwt_authn's jwt_cache_config
#   jwt-guard          the wasm filter (V8), rule requiring the scope, cache on
#   jwt-guard-nocache  the same with cache.max_entries 0
#   wasm-floor         examples/floor_filter.rs: a proxy-wasm filter that only reads the
#                      headers and the clock, the floor of any such filter (FLOOR_WASM)
#   (jwt-guard-rust    optional, add it to BENCH_LISTENERS: no cache, "crypto": "rust")
# For each listener x {ES256, RS256} x {one repeated token, BENCH_TOKENS distinct tokens}:
# curl checks first (valid token 200, no token 401, token without the scope 403), then
# wrk -t1 -c16 -dBENCH_SECONDS. Prints a table and writes bench/out/results.md.
#
# Environment (all optional):
#   ENVOY_BIN, PYTHON        Envoy binary, Python with PyJWT + cryptography (default: .venv)
#   JWT_GUARD_WASM           the filter (default target/wasm32-wasip1/release/jwt_guard.wasm)
#   BENCH_SECONDS=10         length of each measured run
#   BENCH_WARMUP_SECONDS=1   warm-up per listener and algorithm (not measured)
#   BENCH_ROUNDS=3           rounds, interleaved (every listener in each round); each row is the median
#   BENCH_TOKENS=5000        distinct tokens per algorithm
#   BENCH_CACHE=10000        jwt_cache_size and cache.max_entries (raised to 2 x BENCH_TOKENS)
#   BENCH_CONNECTIONS=16     wrk connections
#   BENCH_LISTENERS=none,native,native-cache,jwt-guard,jwt-guard-nocache
#   BENCH_ALGS=es256,rs256
#   BENCH_WORKERS=2          then, in an Envoy with this many workers, native-cache and jwt-guard
#                            on BENCH_FRESH_TOKENS tokens never seen before (a fresh Envoy each
#                            round): native verifies a token once per worker that sees it,
#                            jwt-guard once (its shared cache); 0 or 1 to skip
#   BENCH_FRESH_TOKENS=5000  distinct tokens per algorithm for that run (a few passes in a run)
#   BENCH_INSTRUCTIONS=1     then instructions per request, Envoy under valgrind's callgrind
#                            (bench/instructions.sh: BENCH_INSTR_SECONDS, _WARMUP_SECONDS,
#                            _TOKENS); 0 to skip
#   BENCH_PIN=1              on 2+ CPUs: Envoy on CPU 0, wrk on CPU 1 (taskset); 0 to let them float
#   BENCH_OUT=bench/out
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${BENCH_OUT:-$BENCH/out}
RUN_SECONDS=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP_SECONDS:-1}
ROUNDS=${BENCH_ROUNDS:-3}
TOKENS=${BENCH_TOKENS:-5000}
CACHE=${BENCH_CACHE:-10000}
CONNS=${BENCH_CONNECTIONS:-16}
LISTENERS=${BENCH_LISTENERS:-none,wasm-floor,native,native-cache,jwt-guard,jwt-guard-nocache}
WORKERS=${BENCH_WORKERS:-2}
FRESH=${BENCH_FRESH_TOKENS:-5000}
ALGS=${BENCH_ALGS:-es256,rs256}
WASM=${JWT_GUARD_WASM:-$ROOT/target/wasm32-wasip1/release/jwt_guard.wasm}
FLOOR_WASM=${FLOOR_WASM:-$ROOT/target/wasm32-wasip1/release/examples/floor_filter.wasm}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
if [[ -z "${ENVOY_BIN:-}" ]]; then
  if [[ -x $ROOT/.venv/bin/envoy ]]; then ENVOY_BIN=$ROOT/.venv/bin/envoy; else ENVOY_BIN=envoy; fi
fi
export ENVOY_BIN

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- tools ----------------------------------------------------------------------------
if ! command -v wrk >/dev/null || ! command -v curl >/dev/null; then
  log "installing wrk and curl"
  command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
  command -v curl >/dev/null || (apt-get update && apt-get install -y curl)
fi
command -v "$ENVOY_BIN" >/dev/null || die "no Envoy at '$ENVOY_BIN' (run 'make venv' or set ENVOY_BIN)"
"$PYTHON" -c 'import jwt, cryptography' 2>/dev/null || die "$PYTHON lacks PyJWT/cryptography (run 'make venv' or set PYTHON)"
[[ -f $WASM ]] || die "no filter at $WASM (run 'make build')"
[[ ,$LISTENERS, != *,wasm-floor,* || -f $FLOOR_WASM ]] || die "no floor filter at $FLOOR_WASM (run 'make bench')"
[[ $RUN_SECONDS =~ ^[0-9]+$ && $RUN_SECONDS -ge 1 ]] || die "BENCH_SECONDS must be a whole number >= 1"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || die "BENCH_ROUNDS must be a whole number >= 1"
if (( CACHE < 2 * TOKENS )); then
  # jwt-guard's cache keeps two generations of max_entries/2: the distinct set must fit in one.
  CACHE=$(( 2 * TOKENS ))
  log "BENCH_CACHE raised to $CACHE (2 x BENCH_TOKENS) so the primed token set stays cached"
fi
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
# Envoy and wrk on their own CPUs: steadier numbers than letting the scheduler mix them.
ENVOY_CPU=()
WRK_CPU=()
if [[ ${BENCH_PIN:-1} == 1 ]] && (( $(nproc) >= 2 )) && command -v taskset >/dev/null; then
  ENVOY_CPU=(taskset -c 0)
  WRK_CPU=(taskset -c 1)
fi

# ---- Envoy lifecycle -----------------------------------------------------------------
ENVOY_PID=""
ADMIN=""
declare -A PORT=()

stop_envoy() {
  if [[ -n $ENVOY_PID ]]; then
    kill "$ENVOY_PID" 2>/dev/null || true
    wait "$ENVOY_PID" 2>/dev/null || true
    ENVOY_PID=""
  fi
}
trap stop_envoy EXIT
trap 'exit 130' INT TERM

# start_envoy NAME CONFIG: starts Envoy, waits for admin /ready and every listener.
start_envoy() {
  local name=$1 cfg=$2 addr_file=$OUT/$1.admin-address deadline t0
  rm -f "$addr_file"
  t0=$(date +%s.%N)
  "${ENVOY_CPU[@]}" "$ENVOY_BIN" -c "$cfg" --concurrency "${CONCURRENCY:-1}" --disable-hot-restart \
    --admin-address-path "$addr_file" -l warning >"$OUT/envoy-$name.log" 2>&1 &
  ENVOY_PID=$!
  deadline=$(( $(date +%s) + 60 ))
  until [[ -s $addr_file ]] && [[ $(curl -s --max-time 2 "http://$(cat "$addr_file")/ready" || true) == LIVE ]]; do
    if ! kill -0 "$ENVOY_PID" 2>/dev/null; then
      tail -n 30 "$OUT/envoy-$name.log" >&2
      ENVOY_PID=""
      die "Envoy ($name) exited during start-up; log: $OUT/envoy-$name.log"
    fi
    (( $(date +%s) < deadline )) || { tail -n 30 "$OUT/envoy-$name.log" >&2; die "Envoy ($name) not ready after 60 s"; }
    sleep 0.1
  done
  ADMIN=$(cat "$addr_file")
  # Start-up: launch to admin /ready (every listener's filters configured: for the wasm
  # listeners, the VMs created and the plugin config loaded).
  STARTUP_S=$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.2f", t1 - t0 }')
  PORT=()
  local l p
  while read -r l p; do PORT[$l]=$p; done < <("$PYTHON" "$BENCH/report.py" ports "$ADMIN")
  for l in "${!PORT[@]}"; do
    until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:${PORT[$l]}/" || true) =~ ^[1-5][0-9][0-9]$ ]]; do
      (( $(date +%s) < deadline )) || die "listener $l (port ${PORT[$l]}) does not answer"
      sleep 0.1
    done
  done
  log "Envoy ($name) ready: pid $ENVOY_PID, admin $ADMIN, listeners: $(for l in "${!PORT[@]}"; do printf '%s=%s ' "$l" "${PORT[$l]}"; done)"
}

status_of() { # PORT [TOKEN]
  local args=(-s -o /dev/null -w '%{http_code}' --max-time 10)
  [[ -n ${2:-} ]] && args+=(-H "Authorization: Bearer $2")
  curl "${args[@]}" "http://127.0.0.1:$1/" || true
}

expect() { # LISTENER WHAT WANT_REGEX [TOKEN]
  local got
  got=$(status_of "${PORT[$1]}" "${4:-}")
  [[ $got =~ ^($3)$ ]] || die "$1: $2 answered $got, expected $3: not benchmarking an error path"
}

# ---- tokens and configs --------------------------------------------------------------
mkdir -p "$OUT"
rm -rf "$OUT/wrk" "$OUT/tokens" "$OUT/runs.tsv" "$OUT/memory.jsonl" "$OUT/results.md" "$OUT/instructions.tsv"
mkdir -p "$OUT/wrk"
IFS=, read -r -a LIST <<<"$LISTENERS"
# The several-workers run needs both cached listeners.
WORKERS_RUN=0
if [[ $WORKERS =~ ^[0-9]+$ ]] && (( WORKERS > 1 )) && [[ ,$LISTENERS, == *,native-cache,* && ,$LISTENERS, == *,jwt-guard,* ]]; then
  WORKERS_RUN=1
fi
log "minting keys and tokens ($TOKENS distinct per algorithm$( ((WORKERS_RUN)) && echo ", $FRESH fresh"))"
"$PYTHON" "$BENCH/mint.py" --out "$OUT" --count "$TOKENS" --fresh "$(( WORKERS_RUN ? FRESH : 0 ))" >&2

IFS=, read -r -a ALG_LIST <<<"$ALGS"
BASE_LIST=()
HAS_WASM=0
for l in "${LIST[@]}"; do
  if [[ $l == jwt-guard* || $l == wasm-* ]]; then HAS_WASM=1; else BASE_LIST+=("$l"); fi
done
((${#BASE_LIST[@]})) || BASE_LIST=(none)

gen_config() { # OUTFILE LISTENERS
  "$PYTHON" "$BENCH/config.py" --out "$1" --listeners "$2" --jwks "$OUT/jwks.json" \
    --claims "$OUT/claims.json" --wasm "$WASM" --floor-wasm "$FLOOR_WASM" --cache "$CACHE"
}
gen_config "$OUT/envoy.json" "$LISTENERS"
# Caches (both sides) that hold every fresh token: 2x for jwt-guard's two generations.
WORKERS_CACHE=$(( 2 * FRESH > CACHE ? 2 * FRESH : CACHE ))
(( WORKERS_RUN )) && "$PYTHON" "$BENCH/config.py" --out "$OUT/envoy-workers.json" \
  --listeners native-cache,jwt-guard --jwks "$OUT/jwks.json" --claims "$OUT/claims.json" \
  --wasm "$WASM" --cache "$WORKERS_CACHE"
gen_config "$OUT/envoy-baseline.json" "$(IFS=,; echo "${BASE_LIST[*]}")"

mem() { "$PYTHON" "$BENCH/report.py" mem --pid "$ENVOY_PID" --admin "$ADMIN" --label "$1" --startup "${STARTUP_S:-}" --out "$OUT/memory.jsonl"; }

# ---- memory baseline: the same Envoy without the wasm listeners ----------------------
if (( HAS_WASM )); then
  start_envoy baseline "$OUT/envoy-baseline.json"
  mem baseline-ready
  STARTUP_S=""
  stop_envoy
fi

# ---- the bench -----------------------------------------------------------------------
start_envoy bench "$OUT/envoy.json"
mem full-ready
STARTUP_S=""

ONE_ES=$(head -n1 "$OUT/tokens/es256-one.txt")
ONE_RS=$(head -n1 "$OUT/tokens/rs256-one.txt")
NOSCOPE=$(head -n1 "$OUT/tokens/es256-noscope.txt")

envoy_cpu_ticks() { awk '{print $14 + $15}' "/proc/$ENVOY_PID/stat"; }

run_wrk() { # LISTENER ALG SET PRIMED ROUND
  local l=$1 alg=$2 set=$3 base=$OUT/wrk/$1.$2.$3.r$5 t0 t1 c0 c1
  curl -s "http://$ADMIN/stats" >"$base.before.stats"
  log "round $5: $l $alg $set: wrk ${RUN_SECONDS}s"
  c0=$(envoy_cpu_ticks)
  t0=$(date +%s.%N)
  "${WRK_CPU[@]}" wrk -t1 -c"$CONNS" -d"${RUN_SECONDS}s" --latency -s "$BENCH/tokens.lua" \
    "http://127.0.0.1:${PORT[$l]}/" -- "$OUT/tokens/$alg-$set.txt" >"$base.txt" 2>&1 \
    || die "wrk failed: $(cat "$base.txt")"
  t1=$(date +%s.%N)
  c1=$(envoy_cpu_ticks)
  curl -s "http://$ADMIN/stats" >"$base.after.stats"
  # Envoy's CPU use during the run (clock ticks / wall time): ~100% on one CPU when the
  # filter is the bottleneck; clearly less, with other load on the machine, means noise.
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$l" "$alg" "$set" "$base.txt" "$4" "$5" \
    "$(awk -v c=$(( c1 - c0 )) -v hz="$(getconf CLK_TCK)" -v t0="$t0" -v t1="$t1" \
        'BEGIN { printf "%.0f", 100 * c / hz / (t1 - t0) }')" >>"$OUT/runs.tsv"
  grep -E 'Requests/sec|Non-2xx' "$base.txt" | sed 's/^/    /' >&2 || true
}

for l in "${LIST[@]}"; do
  [[ -n ${PORT[$l]:-} ]] || die "listener $l missing from Envoy"
  # Never benchmark an error path: the same checks as a real client would see.
  if [[ $l == none || $l == wasm-floor ]]; then
    expect "$l" "no token" 200
  else
    expect "$l" "ES256 token" 200 "$ONE_ES"
    expect "$l" "RS256 token" 200 "$ONE_RS"
    expect "$l" "first distinct ES256 token" 200 "$(head -n1 "$OUT/tokens/es256-many.txt")"
    expect "$l" "first distinct RS256 token" 200 "$(head -n1 "$OUT/tokens/rs256-many.txt")"
    expect "$l" "no token" 401
    expect "$l" "token without the scope" 403 "$NOSCOPE"
  fi
  for alg in "${ALG_LIST[@]}"; do
    [[ -f $OUT/tokens/$alg-one.txt ]] || die "unknown algorithm '$alg' in BENCH_ALGS (es256, rs256)"
  done
done

# Warm-up (not measured), then the caches filled with the whole distinct set (each token
# checked to get 200), so the "many" runs measure cache hits, not a mix that depends on how
# fast a first pass went.
for l in "${LIST[@]}"; do
  for alg in "${ALG_LIST[@]}"; do
    "${WRK_CPU[@]}" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$BENCH/tokens.lua" \
      "http://127.0.0.1:${PORT[$l]}/" -- "$OUT/tokens/$alg-one.txt" \
      >"$OUT/wrk/$l.$alg.warmup.txt" 2>&1 || die "wrk warm-up failed on $l"
    if [[ $l == native-cache || $l == jwt-guard ]]; then
      log "$l $alg many: priming the cache"
      "$PYTHON" "$BENCH/prime.py" "${PORT[$l]}" "$OUT/tokens/$alg-many.txt" >&2 \
        || die "$l: not every distinct $alg token was accepted"
    fi
  done
done

# Each round runs every listener on one scenario back to back, so the runs a ratio compares
# are seconds apart and share the machine's state (report.py takes the median of each
# round's ratio).
for round in $(seq 1 "$ROUNDS"); do
  for alg in "${ALG_LIST[@]}"; do
    for set in one many; do
      for l in "${LIST[@]}"; do
        primed=0
        [[ $set == many && ( $l == native-cache || $l == jwt-guard ) ]] && primed=1
        run_wrk "$l" "$alg" "$set" "$primed" "$round"
      done
    done
  done
done

mem full-end
stop_envoy

# ---- several workers, tokens never seen before ------------------------------------------
# A fresh Envoy each round (empty caches), the fresh tokens cycled in order: every token is
# first seen by one worker and later by the others.
if (( WORKERS_RUN )); then
  for round in $(seq 1 "$ROUNDS"); do
    CONCURRENCY=$WORKERS start_envoy "workers-r$round" "$OUT/envoy-workers.json"
    for alg in "${ALG_LIST[@]}"; do
      for l in native-cache jwt-guard; do
        run_wrk "$l" "$alg" fresh 0 "$round"
      done
    done
    stop_envoy
  done
fi

# ---- instructions per request (callgrind): the comparison noise cannot move ------------
if [[ ${BENCH_INSTRUCTIONS:-1} != 0 ]]; then
  OUT=$OUT ENVOY_BIN=$ENVOY_BIN PYTHON=$PYTHON LISTENERS=$LISTENERS ALGS=$ALGS \
    bash "$BENCH/instructions.sh"
fi

"$PYTHON" "$BENCH/report.py" table --out "$OUT" --wasm "$WASM" --seconds "$RUN_SECONDS" \
  --tokens "$TOKENS" --cache "$CACHE" --connections "$CONNS" --loadavg "$LOADAVG" --rounds "$ROUNDS" \
  --workers "$(( WORKERS_RUN ? WORKERS : 0 ))" --fresh "$FRESH" --workers-cache "$WORKERS_CACHE" \
  --pinned "$( ((${#ENVOY_CPU[@]})) && echo yes || echo no)"
