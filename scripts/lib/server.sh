# shellcheck shell=bash
# Start/stop a throwaway NanoScale control plane for black-box checks
# (scripts/schemathesis.sh, scripts/promtool.sh). Sourced, never executed.
#
#   server_build            cargo build -p nanoscale (skipped if NANOSCALE_BIN is set)
#   server_start            start on a free loopback port with a temp data dir;
#                           sets SERVER_URL, SERVER_PID; stops it at exit
#   server_api_token        bootstrap the admin and print an admin API token
#
# NANOSCALE_BIN=/path/to/binary overrides the binary (and skips the build).

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ -n "${_NS_SERVER_SH:-}" ]]; then return 0; fi
_NS_SERVER_SH=1

SERVER_BIN="${NANOSCALE_BIN:-$REPO_ROOT/target/debug/nanoscale}"
SERVER_READY_TIMEOUT="${NANOSCALE_READY_TIMEOUT:-30}"
SERVER_ADMIN_JSON='{"username":"admin","password":"correct-horse-battery"}'
SERVER_URL=""
SERVER_PID=""
SERVER_TMP=""
SERVER_LOG=""

server_build() {
  if [[ -n "${NANOSCALE_BIN:-}" ]]; then
    info "server: using NANOSCALE_BIN=$SERVER_BIN (no build)"
  else
    info "server: cargo build -p nanoscale"
    (cd "$REPO_ROOT" && cargo build -p nanoscale)
  fi
  [[ -x "$SERVER_BIN" ]] || die "server: $SERVER_BIN is not an executable"
}

server_start() {
  SERVER_TMP="$(mktemp -d "${TMPDIR:-/tmp}/nanoscale-e2e.XXXXXX")"
  SERVER_LOG="$SERVER_TMP/server.log"
  on_exit server_stop
  local port
  # shellcheck disable=SC2119 # no range: a random free port
  port="$(free_port)"
  SERVER_URL="http://127.0.0.1:$port"

  info "server: $SERVER_BIN up --listen 127.0.0.1:$port (log: $SERVER_LOG)"
  # setsid: own process group, so server_stop also gets anything it spawns.
  # (Non-interactive bash does not make background jobs group leaders, so
  # setsid does not fork and $! is the server itself.)
  # --no-agent: the fuzzer deploys services with arbitrary git URLs; an agent would
  # try to fetch them from the internet. The agent has its own whole-system tests.
  NANOSCALE_LOG="${NANOSCALE_LOG:-warn}" setsid "$SERVER_BIN" up --no-agent --data-dir "$SERVER_TMP/data" --listen "127.0.0.1:$port" \
    >"$SERVER_LOG" 2>&1 </dev/null &
  SERVER_PID=$!
  _server_wait_ready
}

_server_wait_ready() {
  local deadline=$((SECONDS + SERVER_READY_TIMEOUT)) code
  while :; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      die "server: exited before becoming ready (its log follows)"
    fi
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$SERVER_URL/health/ready" || true)"
    if [[ "$code" == 200 ]]; then
      info "server: ready at $SERVER_URL"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      die "server: /health/ready not 200 after ${SERVER_READY_TIMEOUT}s (last: ${code:-no answer})"
    fi
    sleep 0.2
  done
}

# Exit hook: TERM the process group, give it 10 s, then KILL; print the log
# if the script is failing, so CI output says why; remove the temp dir.
server_stop() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null
    local i
    for ((i = 0; i < 100; i++)); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      warn "server: did not exit on SIGTERM within 10s; killing"
      kill -KILL -- "-$SERVER_PID" 2>/dev/null || kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    wait "$SERVER_PID" 2>/dev/null
  fi
  # also anything it left in its group after it exited itself
  [[ -n "$SERVER_PID" ]] && kill -KILL -- "-$SERVER_PID" 2>/dev/null
  if [[ "$_NS_EXIT_RC" != 0 && -s "$SERVER_LOG" ]]; then
    printf '\n==> server log (%s), last 200 lines:\n' "$SERVER_LOG" >&2
    tail -n 200 "$SERVER_LOG" >&2
  fi
  [[ -n "$SERVER_TMP" ]] && rm -rf "$SERVER_TMP"
  SERVER_PID=""
}

# server_api_token: create the admin, log in (session cookie + CSRF token),
# and use that session to mint an admin API token, printed on stdout. The
# token, sent as `Authorization: Bearer`, is what the black-box tools use:
# unlike a session, it needs no CSRF header and survives a logout.
server_api_token() {
  local jar="$SERVER_TMP/cookies.txt" login csrf created
  local curl_json=(curl -sS --fail-with-body --max-time 10 -H 'content-type: application/json')

  "${curl_json[@]}" -X POST -d "$SERVER_ADMIN_JSON" "$SERVER_URL/api/v1/setup" >/dev/null ||
    die "server: POST /api/v1/setup failed"
  login="$("${curl_json[@]}" -c "$jar" -b "$jar" -X POST -d "$SERVER_ADMIN_JSON" \
    "$SERVER_URL/api/v1/auth/login")" || die "server: POST /api/v1/auth/login failed"
  csrf="$(json_field csrf_token <<<"$login")"
  created="$("${curl_json[@]}" -c "$jar" -b "$jar" -H "X-CSRF-Token: $csrf" -X POST \
    -d '{"name":"schemathesis","role":"admin"}' "$SERVER_URL/api/v1/tokens")" ||
    die "server: POST /api/v1/tokens failed"
  json_field token <<<"$created"
}
