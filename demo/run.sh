#!/usr/bin/env bash
# The jwt-guard demo: a local OAuth2/OIDC provider (oidc-provider), an echo upstream, and
# Envoy with the filter. Called by `make run` from the repository root, with ENVOY_BIN and
# PYTHON set. DEMO_SMOKE=1 runs the curl lines itself, checks the answers and exits 0/1.
# Ports: DEMO_PORT (Envoy, 8080), DEMO_ADMIN_PORT (9901), DEMO_IDP_PORT (9000),
# DEMO_UPSTREAM_PORT (8081); envoy/envoy.yaml holds the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_BIN=${ENVOY_BIN:-.venv/bin/envoy}
PYTHON=${PYTHON:-python3}
LOGS=$(mktemp -d -t jwt-guard-demo.XXXXXX)
PIDS=()
PORT=${DEMO_PORT:-8080}
ADMIN_PORT=${DEMO_ADMIN_PORT:-9901}
export IDP_PORT=${DEMO_IDP_PORT:-9000}
export UPSTREAM_PORT=${DEMO_UPSTREAM_PORT:-8081}
API=http://127.0.0.1:$PORT
IDP=http://127.0.0.1:$IDP_PORT

cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "demo: stopping"; exit 130' INT TERM

# Polls `check` (bounded, ~30 s); fails at once if the process died, with the log tails.
wait_for() {
  local what=$1 pid=$2 check=$3; shift 3
  for _ in $(seq 300); do
    if eval "$check" >/dev/null 2>&1; then return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "demo: $what did not come up" >&2
  for log in "$@"; do
    if [[ -s $log ]]; then echo "--- last lines of $log:" >&2; tail -n 30 "$log" >&2; fi
  done
  exit 1
}

for port in "$PORT" "$UPSTREAM_PORT" "$IDP_PORT" "$ADMIN_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is already in use (another demo running?)" >&2
    exit 1
  fi
done

node demo/idp/idp.mjs >"$LOGS/idp.log" 2>&1 & idp=$!; PIDS+=($idp)
"$PYTHON" demo/upstream.py >"$LOGS/upstream.log" 2>&1 & upstream=$!; PIDS+=($upstream)
wait_for "the identity provider" $idp "grep -q 'IDP READY' '$LOGS/idp.log'" "$LOGS/idp.log"
wait_for "the upstream" $upstream "grep -q 'UPSTREAM READY' '$LOGS/upstream.log'" "$LOGS/upstream.log"
# envoy/envoy.yaml with the chosen ports (the same file when they are the defaults).
sed -e "s/port_value: 8080/port_value: $PORT/" -e "s/port_value: 9901/port_value: $ADMIN_PORT/" \
    -e "s/port_value: 8081/port_value: $UPSTREAM_PORT/" -e "s/port_value: 9000/port_value: $IDP_PORT/" \
    -e "s#127.0.0.1:9000#127.0.0.1:$IDP_PORT#g" envoy/envoy.yaml >"$LOGS/envoy.yaml"
# Envoy logs to envoy.log; why it refuses a config goes to stderr, hence envoy.out.
# The access log (one JSON line per request, jwt-guard's decision in it) is Envoy's stdout,
# envoy.out, flushed every half second.
"$ENVOY_BIN" -c "$LOGS/envoy.yaml" --disable-hot-restart --concurrency 2 -l info \
  --file-flush-interval-msec 500 --log-path "$LOGS/envoy.log" >"$LOGS/envoy.out" 2>&1 & PIDS+=($!)
wait_for "Envoy" $! "curl -sf http://127.0.0.1:$ADMIN_PORT/ready" "$LOGS/envoy.log" "$LOGS/envoy.out"

TOKEN_CMD="curl -s -u demo-client:demo-secret -d grant_type=client_credentials -d scope=workflow:read $IDP/token | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'"

if [[ "${DEMO_SMOKE:-}" == 1 ]]; then
  TOKEN=$(eval "$TOKEN_CMD") || { echo "demo: no token from the IdP; see $LOGS/idp.log" >&2; exit 1; }
  failed=0
  # check STATUS TEXT-IN-BODY LABEL CURL-ARGS...
  check() {
    local want=$1 text=$2 label=$3; shift 3
    local out got
    out=$(curl -s -w '\n%{http_code}' "$@")
    got=${out##*$'\n'}
    if [[ "$got" == "$want" && "$out" == *"$text"* ]]; then
      echo "ok    $want  $label"
    else
      echo "FAIL  $label: got $got, want $want with $text in the body:" >&2
      echo "${out%$'\n'*}" | head -n 20 >&2
      failed=1
    fi
  }
  auth="Authorization: Bearer $TOKEN"
  check 200 '"x-client-id": "demo-client"' "GET /workflows with demo-client's token" \
    -H "$auth" $API/workflows
  check 403 '"insufficient_scope"' "POST /workflows with demo-client's token" \
    -X POST -H "$auth" $API/workflows
  check 401 '"unauthorized"' "GET /workflows without a token" $API/workflows
  check 200 '"path": "/health"' "GET /health without a token" $API/health
  # The access log carries the verified identity from jwt-guard's filter state.
  logged() { grep '"client_id":"demo-client"' "$LOGS/envoy.out" | grep -q '"decision":"allow"'; }
  for _ in $(seq 50); do logged && break; sleep 0.1; done
  if logged; then
    echo "ok         access log line with jwt-guard's decision and client_id"
  else
    echo "FAIL  no access log line with decision allow and client_id demo-client in envoy.out" >&2
    tail -n 5 "$LOGS/envoy.out" >&2
    failed=1
  fi
  if [[ $failed == 1 ]]; then
    echo "demo: last lines of $LOGS/envoy.log:" >&2
    tail -n 30 "$LOGS/envoy.log" >&2
    exit 1
  fi
  echo "demo smoke: all answers as expected"
  rm -rf "$LOGS"
  exit 0
fi

cat <<EOT

jwt-guard demo is up (logs in $LOGS; the access log is envoy.out).
  Envoy + jwt-guard  $API    (admin: http://127.0.0.1:$ADMIN_PORT/stats?filter=jwt_guard)
  identity provider  $IDP    (discovery: /.well-known/openid-configuration, keys: /jwks)
  upstream (echo)    http://127.0.0.1:$UPSTREAM_PORT

Get a token for demo-client (allowed scope: workflow:read):
  export TOKEN=\$($TOKEN_CMD)

Allowed (200; the upstream echoes the x-client-id and x-scopes headers jwt-guard added):
  curl -i -H "Authorization: Bearer \$TOKEN" $API/workflows

Needs workflow:write, which demo-client lacks (403 insufficient_scope, AUTH_102):
  curl -i -X POST -H "Authorization: Bearer \$TOKEN" $API/workflows

No token (401, AUTH_100):
  curl -i $API/workflows

Public route, no token needed (200):
  curl -i $API/health

A client that has workflow:write: admin-client / admin-secret with -d 'scope=workflow:read workflow:write'.

Press Ctrl-C to stop.
EOT
# Ends on Ctrl-C, or as soon as one of the three exits (then say which).
set +e
wait -n
echo "demo: a component exited; logs in $LOGS" >&2
exit 1
