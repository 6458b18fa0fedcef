# shellcheck shell=bash
# The Python virtualenv with the test-suite's Python tools (schemathesis).
# Sourced, never executed.
#
# The venv lives in target/test-venv (ignored by git, removed by `cargo
# clean`). It is rebuilt only when scripts/requirements-test.txt or the
# base interpreter changes; otherwise reuse costs one tiny python call.

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

if [[ -n "${_NS_VENV_SH:-}" ]]; then return 0; fi
_NS_VENV_SH=1

TEST_VENV="${NANOSCALE_TEST_VENV:-$REPO_ROOT/target/test-venv}"
TEST_REQUIREMENTS="$REPO_ROOT/scripts/requirements-test.txt"
SCHEMATHESIS="$TEST_VENV/bin/schemathesis"

# The schemathesis version pinned in the requirements file.
schemathesis_pin() {
  sed -n 's/^schemathesis==\([^ ;#]*\).*/\1/p' "$TEST_REQUIREMENTS"
}

_venv_stamp_wanted() {
  # requirements content + the exact base interpreter the venv was made from
  printf '%s %s\n' "$(sha256sum <"$TEST_REQUIREMENTS" | cut -d' ' -f1)" \
    "$(python3 -c 'import sys; print(sys.version.split()[0], sys.base_prefix)')"
}

ensure_test_venv() {
  local pin stamp="$TEST_VENV/.nanoscale-requirements"
  pin="$(schemathesis_pin)"
  [[ -n "$pin" ]] || die "no schemathesis==VERSION line in $TEST_REQUIREMENTS"
  ensure_python_venv_support

  # Reuse: stamp matches, and the venv's interpreter still runs and reports
  # the pinned schemathesis (importlib.metadata does not import the package,
  # so this stays fast).
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$(_venv_stamp_wanted)" ]] &&
    [[ "$("$TEST_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" == "$pin" ]]; then
    info "venv: reusing $TEST_VENV (schemathesis $pin)"
    return 0
  fi

  info "venv: creating $TEST_VENV with schemathesis $pin"
  rm -rf "$TEST_VENV"
  mkdir -p "$(dirname "$TEST_VENV")"
  python3 -m venv "$TEST_VENV"
  "$TEST_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$TEST_REQUIREMENTS"
  [[ "$("$SCHEMATHESIS" --version)" == *" $pin" ]] ||
    die "venv: $SCHEMATHESIS --version does not report $pin"
  _venv_stamp_wanted >"$stamp"
  info "venv: ready ($("$SCHEMATHESIS" --version))"
}
