# shellcheck shell=bash
# Shared helpers for the scripts in scripts/. Sourced, never executed.
#
# Provides: REPO_ROOT, logging (banner/info/warn/die), an exit-hook stack
# (several libraries need cleanup but bash has only one EXIT trap), step
# running with timing, and a loopback free-port finder.

if [[ -n "${_NS_COMMON_SH:-}" ]]; then return 0; fi
_NS_COMMON_SH=1

# shellcheck disable=SC2034 # used by the scripts that source this
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# --- logging -----------------------------------------------------------------
# Everything goes to stderr so that functions can print results on stdout.
banner() { printf '\n==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf '\nerror: %s\n' "$*" >&2
  exit 1
}

# Name the failing command when `set -e` aborts: a bare non-zero exit from a
# 300-line setup is otherwise hard to place. errtrace makes it fire inside
# functions too.
set -o errtrace
trap 'printf "error: command failed (exit %s) at %s:%s: %s\n" "$?" "${BASH_SOURCE[0]##*/}" "$LINENO" "$BASH_COMMAND" >&2' ERR

# --- exit hooks --------------------------------------------------------------
# `on_exit CMD...` registers cleanup; hooks run last-registered-first on any
# exit (success, failure, Ctrl-C). _NS_EXIT_RC holds the script's exit status
# so hooks can e.g. print a server log only on failure.
_NS_EXIT_HOOKS=()
_NS_EXIT_RC=0
on_exit() { _NS_EXIT_HOOKS+=("$*"); }
_ns_run_exit_hooks() {
  _NS_EXIT_RC=$?
  trap - ERR
  set +e
  local i
  for ((i = ${#_NS_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
    eval "${_NS_EXIT_HOOKS[i]}"
  done
  exit "$_NS_EXIT_RC"
}
trap _ns_run_exit_hooks EXIT
# Turn signals into a normal exit so the EXIT hooks (stop postgres, kill the
# server) still run.
trap 'exit 130' INT
trap 'exit 143' TERM

# --- steps -------------------------------------------------------------------
# run_step NAME CMD... : banner, run an *external* command, report its time,
# and stop the whole script on failure. (Only for external commands: bash
# disables `set -e` inside functions called from a `||` context.)
run_step() {
  local name=$1
  shift
  banner "$name"
  info "\$ $*"
  local start=$SECONDS rc=0
  "$@" || rc=$?
  if ((rc != 0)); then
    printf '\n==> FAILED: %s (exit %s after %ss)\n' "$name" "$rc" "$((SECONDS - start))" >&2
    exit "$rc"
  fi
  info "ok: $name ($((SECONDS - start))s)"
}

# format_duration SECONDS -> "3m07s"
format_duration() { printf '%dm%02ds' "$(($1 / 60))" "$(($1 % 60))"; }

# --- ports -------------------------------------------------------------------
# port_in_use PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port [FIRST [LAST]]: print the first port in [FIRST, LAST] that nothing
# listens on. Without arguments, probes random high ports, so that concurrent
# runs rarely pick the same one. (There is an unavoidable race between probing
# and the server binding; a clash fails loudly at start-up rather than silently.)
free_port() {
  local port i
  if (($# >= 1)); then
    for ((port = $1; port <= ${2:-$1}; port++)); do
      if ! port_in_use "$port"; then
        echo "$port"
        return 0
      fi
    done
  else
    # Below the kernel's ephemeral range: a port in it can be taken at any moment
    # as the local end of some outgoing connection, and then bind fails even
    # though nothing listens there (seen after a fleet benchmark).
    local low
    low="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
    ((low > 12000)) || low=32768
    for ((i = 0; i < 100; i++)); do
      port=$((10000 + RANDOM % (low - 10000)))
      if ! port_in_use "$port"; then
        echo "$port"
        return 0
      fi
    done
  fi
  die "no free TCP port found on 127.0.0.1"
}

# json_field FIELD < JSON : print a top-level string field of a JSON document.
# (python3 is always present here: the schemathesis venv needs it anyway.)
json_field() {
  python3 -c '
import json, sys
doc = json.load(sys.stdin)
value = doc.get(sys.argv[1]) if isinstance(doc, dict) else None
if not isinstance(value, str) or not value:
    sys.exit("field %r missing from response: %s" % (sys.argv[1], json.dumps(doc)[:500]))
print(value)
' "$1"
}
