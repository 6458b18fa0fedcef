# shellcheck shell=bash
# Building the dashboard (dashboard/ → dashboard/dist, which the binary embeds).
# Sourced by scripts/up and scripts/test, never executed, so that a person never
# runs npm by hand.

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ -n "${_NS_DASHBOARD_SH:-}" ]]; then return 0; fi
_NS_DASHBOARD_SH=1

NS_DASHBOARD="$REPO_ROOT/dashboard"

# Vite 8 needs Node.js 20.19 or newer; Debian 12's own nodejs is 18, so an older
# one is named with the fix rather than installed.
dashboard_check_node() {
  command -v node >/dev/null && command -v npm >/dev/null ||
    die "Node.js and npm are needed to build the dashboard: install Node.js 20.19+ (https://nodejs.org or the NodeSource packages)"
  local version
  version=$(node -p 'process.versions.node')
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' ||
    die "Node.js $version is too old for the dashboard build: install Node.js 20.19 or newer"
}

# npm ci when package-lock.json changed since the last install (or never ran).
dashboard_install() {
  dashboard_check_node
  local stamp="$NS_DASHBOARD/node_modules/.nanoscale-lock"
  if [[ -f "$stamp" ]] && cmp -s "$stamp" "$NS_DASHBOARD/package-lock.json"; then
    return 0
  fi
  info "dashboard: npm ci"
  (cd "$NS_DASHBOARD" && CI=true npm ci --no-audit --no-fund --loglevel=error)
  cp "$NS_DASHBOARD/package-lock.json" "$stamp"
}

# Builds dist/ unless it is newer than every source of it (the OpenAPI document
# included, since the API types are generated from it).
dashboard_build() {
  dashboard_install
  local dist="$NS_DASHBOARD/dist/index.html"
  if [[ -f "$dist" ]] && [[ -z "$(find "$NS_DASHBOARD/src" "$NS_DASHBOARD/public" "$NS_DASHBOARD/index.html" \
    "$NS_DASHBOARD/package-lock.json" "$NS_DASHBOARD/vite.config.ts" "$REPO_ROOT/docs/openapi.json" \
    -newer "$dist" -print -quit 2>/dev/null)" ]]; then
    info "dashboard: dist is up to date"
    return 0
  fi
  info "dashboard: npm run build"
  (cd "$NS_DASHBOARD" && npm run --silent build)
}
