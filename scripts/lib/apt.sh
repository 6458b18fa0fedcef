# shellcheck shell=bash
# Idempotent Debian package installation. Sourced, never executed.
#
# Fast path: if every package is already installed we never touch apt (no
# `apt-get update`), so re-runs cost a few dpkg-query calls.

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ -n "${_NS_APT_SH:-}" ]]; then return 0; fi
_NS_APT_SH=1

# Every Debian package the test suite needs:
#   postgresql      server binaries (initdb, pg_ctl) for the throwaway test cluster
#   prometheus      only for /usr/bin/promtool (scripts/promtool.sh); no daemon
#   wrk             HTTP load generator used by the benchmark/soak tests
#   git, curl, ca-certificates   basics the scripts and tests call
#   bind9-dnsutils  dig, for the internal DNS responder's tests
#   iproute2        ip netns, veth and bridges for the whole-cluster test
#   nghttp2-client  h2load, an HTTP/2 client for the proxy's tests
#   chromium        headless browser for the dashboard e2e run (driven by playwright-core)
#   nftables        the firewall of security modes B and C (nft), in the firewall tests
#   nmap            scans a node from another namespace in the firewall test
#   passwd          useradd/userdel for the per-service users of the sandbox
#   ufw             the firewall test's ufw path (run in a namespace of its own)
#   systemd         systemd-analyze, which verifies and rates the generated units
#   systemd-container  systemd-nspawn, which boots systemd as PID 1 in a container
#                   so the generated units are run by a real systemd
#   sudo            how an agent that is not root reaches its privileged helper
#                   (one exact rule, checked with visudo) in the unprivileged test
NS_TEST_APT_PACKAGES=(postgresql prometheus wrk nginx-light git curl ca-certificates bind9-dnsutils nghttp2-client iproute2 chromium nftables nmap passwd ufw systemd systemd-container sudo)

apt_pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# During our installs, /usr/sbin/policy-rc.d answers 101 ("action forbidden")
# so that package maintainer scripts do not start daemons: `postgresql` would
# start the system cluster on :5432 and `prometheus` its server on :9090, and
# without systemd as PID 1 invoke-rc.d falls back to SysV scripts that can
# hang or fail the install. Any policy-rc.d already present (Docker images
# ship one) is moved aside and restored afterwards.
_NS_POLICY=/usr/sbin/policy-rc.d
_NS_POLICY_SAVED=/usr/sbin/policy-rc.d.nanoscale-saved
_NS_POLICY_MARK='nanoscale-test-policy'

_apt_restore_policy() {
  if grep -qs "$_NS_POLICY_MARK" "$_NS_POLICY"; then rm -f "$_NS_POLICY"; fi
  if [[ -e "$_NS_POLICY_SAVED" ]]; then mv -f "$_NS_POLICY_SAVED" "$_NS_POLICY"; fi
}

_apt_block_service_starts() {
  _apt_restore_policy # undo leftovers of an interrupted earlier run first
  if [[ -e "$_NS_POLICY" ]]; then mv "$_NS_POLICY" "$_NS_POLICY_SAVED"; fi
  printf '#!/bin/sh\n# %s: temporary, written by scripts/lib/apt.sh\nexit 101\n' \
    "$_NS_POLICY_MARK" >"$_NS_POLICY"
  chmod 0755 "$_NS_POLICY"
  on_exit _apt_restore_policy
}

# ensure_apt_packages PKG... : install whichever of PKG are missing.
ensure_apt_packages() {
  local missing=() pkg
  # put back the machine's own policy if an interrupted run left ours
  if ((EUID == 0)); then _apt_restore_policy; fi
  for pkg in "$@"; do
    apt_pkg_installed "$pkg" || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    info "apt: already installed: $*"
    return 0
  fi
  if ((EUID != 0)); then
    die "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
  fi

  info "apt: installing ${missing[*]}"
  _apt_block_service_starts
  local apt_opts=(-q -o DPkg::Lock::Timeout=300
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  # stdin from /dev/null: CI has no stdin and nothing here may prompt.
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update </dev/null
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends \
    "${missing[@]}" </dev/null
  _apt_restore_policy

  for pkg in "${missing[@]}"; do
    apt_pkg_installed "$pkg" || die "apt: $pkg still not installed after apt-get install"
  done
  _apt_stop_prometheus_daemon
}

# Belt and braces: if a prometheus server got started anyway (e.g. a policy
# we restored allowed it), stop it through the package's own init script,
# which only acts on the daemon it started (its pidfile).
_apt_stop_prometheus_daemon() {
  if [[ -x /etc/init.d/prometheus ]] && /etc/init.d/prometheus status >/dev/null 2>&1; then
    warn "the prometheus package started its daemon; stopping it (we only need promtool)"
    /etc/init.d/prometheus stop || true
  fi
}

# ensure_python_venv_support: `python3 -m venv` needs ensurepip, which Debian
# splits into python3-venv (pyenv/upstream builds have it built in).
ensure_python_venv_support() {
  if ! command -v python3 >/dev/null 2>&1; then
    ensure_apt_packages python3 python3-venv
  elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    ensure_apt_packages python3-venv
  fi
}

ensure_test_apt_packages() {
  ensure_apt_packages "${NS_TEST_APT_PACKAGES[@]}"
  # The deploy-engine tests build and run fixture apps in Python and Node. Only
  # installed when missing: a machine may have Node from elsewhere (nodesource).
  command -v python3 >/dev/null || ensure_apt_packages python3
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    ensure_apt_packages nodejs npm
  fi
  command -v promtool >/dev/null || die "promtool not on PATH after installing prometheus"
  ensure_python_venv_support
}
