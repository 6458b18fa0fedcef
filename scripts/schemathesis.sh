#!/usr/bin/env bash
# Property-based API conformance test: runs schemathesis against the control
# plane's own OpenAPI document (GET /api/v1/openapi.json), so the spec and the
# handlers cannot drift apart and no generated input makes a handler 500.
#
# Usage: scripts/schemathesis.sh [extra schemathesis run options...]
#   e.g. scripts/schemathesis.sh --seed 42 --phases fuzzing
# Env:   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation (default 50)
#        NANOSCALE_BIN              use this binary instead of building one
# Report: target/schemathesis/junit.xml (schemathesis runs in that directory,
#         so relative paths in extra options are relative to it)
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$REPO_ROOT/scripts/lib/venv.sh"
source "$REPO_ROOT/scripts/lib/server.sh"

MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
# Operations we do not fuzz, and why:
#   .../events/stream, .../logs/stream
#                      SSE: the response never ends, so every case would just
#                      run into the request timeout (their bad inputs are tested
#                      in crates/nanoscale/tests/deploy.rs and rbac.rs).
#   .../auth/logout    ends the caller's session. We authenticate with a
#                      bearer token, so there is nothing there worth the risk
#                      of the credential being revoked mid-run, which would
#                      turn the rest of the run into 401s.
# One regex, matched against the document's path keys (without any `servers`
# base path, hence no /api/v1 prefix in it): schemathesis 4.32 keeps only the
# last of repeated --exclude-path-regex options.
EXCLUDE_PATH_REGEX='/(events/stream|logs/stream|auth/logout)$'
REPORT_DIR="$REPO_ROOT/target/schemathesis"

ensure_test_venv
server_build
server_start
TOKEN="$(server_api_token)"
info "schemathesis: got an admin API token"

args=(run "$SERVER_URL/api/v1/openapi.json"
  # Send requests to the server we started while keeping any base path from
  # the document's `servers` (--url would replace that path too).
  --origin "$SERVER_URL"
  --checks "$CHECKS"
  --max-examples "$MAX_EXAMPLES"
  --header "Authorization: Bearer $TOKEN"
  --exclude-path-regex "$EXCLUDE_PATH_REGEX"
  # a hung handler should fail its case, not hang CI
  --request-timeout 10
  # don't write a .hypothesis example database into the checkout
  --generation-database none
  --report junit --report-junit-path "$REPORT_DIR/junit.xml"
  --no-color)

mkdir -p "$REPORT_DIR"
info "schemathesis: $("$SCHEMATHESIS" --version), max $MAX_EXAMPLES examples per operation"
# Print the command line, without the secret.
printf '    $ schemathesis' >&2
printf ' %q' "${args[@]//$TOKEN/<token>}" "$@" >&2
printf '\n' >&2
# Run from the report dir: schemathesis keeps the failing cases for
# `st replay <id>` in ./.schemathesis/, which must not land in the checkout.
# (So replay with: cd target/schemathesis && ../test-venv/bin/st replay <id>.)
# Not exec: the EXIT hook must still stop the server (and print its log if
# schemathesis failed).
cd "$REPORT_DIR"
"$SCHEMATHESIS" "${args[@]}" "$@"
