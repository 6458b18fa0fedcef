#!/usr/bin/env bash
# Lints the control plane's Prometheus exposition (GET /metrics) with
# `promtool check metrics`: parse errors, bad names, missing HELP, counters
# without _total, etc. Any complaint fails the script.
#
# Usage: scripts/promtool.sh
# Env:   NANOSCALE_BIN  use this binary instead of building one
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$REPO_ROOT/scripts/lib/apt.sh"
source "$REPO_ROOT/scripts/lib/server.sh"

ensure_apt_packages prometheus # provides promtool; no-op when installed
server_build
server_start

# Some traffic first, so request metrics (counters, histograms) exist and
# get linted too, not just the process gauges.
for path in /health/ready /api/v1/openapi.json /api/v1/does-not-exist; do
  curl -s -o /dev/null --max-time 10 "$SERVER_URL$path" || true
done

METRICS="$SERVER_TMP/metrics.txt"
fetch_metrics() { # fetch_metrics [curl args...] -> HTTP status on stdout
  curl -sS -o "$METRICS" -w '%{http_code}' --max-time 10 "$@" "$SERVER_URL/metrics"
}
status="$(fetch_metrics)"
if [[ "$status" == 401 || "$status" == 403 ]]; then
  info "promtool: /metrics wants auth ($status); retrying with an admin API token"
  token="$(server_api_token)"
  status="$(fetch_metrics -H "Authorization: Bearer $token")"
fi
[[ "$status" == 200 ]] || die "promtool: GET /metrics returned HTTP $status: $(head -c 500 "$METRICS")"
[[ -s "$METRICS" ]] || die "promtool: GET /metrics returned an empty body"
info "promtool: $(grep -c -v '^#' "$METRICS") samples, $(grep -c '^# TYPE' "$METRICS") metric families"

# promtool exits non-zero on problems; also treat any output as a failure so
# that nothing it reports can slip through.
rc=0
out="$(promtool check metrics <"$METRICS" 2>&1)" || rc=$?
if ((rc != 0)) || [[ -n "$out" ]]; then
  printf '%s\n' "$out" >&2
  die "promtool check metrics found problems (exit $rc)"
fi
info "promtool: check metrics: no problems"
