# shellcheck shell=bash
# A private, throwaway PostgreSQL cluster for the test run. Sourced.
#
# Why private: the tests get a server we fully control (known role, empty
# database, loopback only, fsync off for speed) without touching the system
# cluster on :5432, whatever state that is in. It is re-created from scratch
# on every run (initdb takes ~1-2 s), which makes re-runs immune to stale
# postmaster.pid files or leftover data, and stopped by an exit hook.
#
# Set NANOSCALE_TEST_POSTGRES_URL yourself to use an existing server instead.

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ -n "${_NS_POSTGRES_SH:-}" ]]; then return 0; fi
_NS_POSTGRES_SH=1

PG_TEST_USER=nanoscale
PG_TEST_PASSWORD=nanoscale
PG_TEST_DB=nanoscale_test
PG_TEST_DIR=""
PG_BINDIR=""

# Newest installed server version's bin dir (Debian: /usr/lib/postgresql/N/bin).
_pg_find_bindir() {
  local d best
  # sort -V: version order, so 16 beats 9
  best="$(for d in /usr/lib/postgresql/*/bin; do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; fi
  done | sort -V | tail -n1)"
  [[ -n "$best" ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
  echo "$best"
}

# initdb/postgres refuse to run as root, so as root everything runs as the
# `postgres` system user (created by the postgresql package). As a normal
# user, the cluster simply belongs to that user.
_pg_as() {
  if ((EUID == 0)); then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# target/test-pg if the postgres user can reach it (every parent directory
# must be searchable by it), else a per-checkout directory under /tmp.
_pg_pick_dir() {
  local preferred="$REPO_ROOT/target/test-pg"
  mkdir -p "$REPO_ROOT/target"
  if ((EUID != 0)) || runuser -u postgres -- test -x "$REPO_ROOT/target" 2>/dev/null; then
    echo "$preferred"
  else
    echo "${TMPDIR:-/tmp}/nanoscale-test-pg-$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1)"
  fi
}

# Stop a server left behind in DIR by an interrupted run. Checks that the pid
# in postmaster.pid really is a postgres process before signalling it: after
# a reboot the pid may belong to something unrelated.
_pg_stop_leftover() {
  local dir=$1 pid
  [[ -f "$dir/postmaster.pid" ]] || return 0
  pid="$(head -n1 "$dir/postmaster.pid")"
  # (a zombie, state Z, is already dead: nothing to stop)
  if [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == postgres* ]] &&
    [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]]; then
    warn "postgres: stopping leftover test server (pid $pid) in $dir"
    _pg_as "$PG_BINDIR/pg_ctl" -D "$dir" -m immediate -w -t 30 stop >/dev/null || true
  fi
}

pg_test_start() {
  if [[ -n "${NANOSCALE_TEST_POSTGRES_URL:-}" ]]; then
    info "postgres: using NANOSCALE_TEST_POSTGRES_URL from the environment"
    export NANOSCALE_TEST_POSTGRES_URL NANOSCALE_TEST_REQUIRE_POSTGRES=1
    return 0
  fi

  PG_BINDIR="$(_pg_find_bindir)"
  PG_TEST_DIR="$(_pg_pick_dir)"
  local port dir=$PG_TEST_DIR
  _pg_stop_leftover "$dir" # before picking a port: it may hold ours
  port="$(free_port "${NANOSCALE_TEST_PG_PORT:-55432}" "$((${NANOSCALE_TEST_PG_PORT:-55432} + 100))")"

  rm -rf "$dir"
  mkdir -p "$dir"
  if ((EUID == 0)); then chown postgres:postgres "$dir"; fi
  chmod 0700 "$dir"

  info "postgres: initdb $dir ($("$PG_BINDIR/postgres" --version))"
  # trust on the unix socket (it sits in the 0700 data dir, so only the
  # cluster owner and root can reach it); passwords over TCP, like production.
  _pg_as "$PG_BINDIR/initdb" -D "$dir" -U postgres --no-locale -E UTF8 \
    --auth-local=trust --auth-host=scram-sha-256 --no-sync --no-instructions >"$dir.initdb.log" 2>&1 ||
    {
      cat "$dir.initdb.log" >&2
      die "postgres: initdb failed"
    }
  rm -f "$dir.initdb.log"

  # Loopback only; socket in the data dir (not /var/run/postgresql, which
  # may not exist without the system service); durability off: it's a
  # throwaway. max_connections leaves room for parallel tests' pools.
  _pg_as tee -a "$dir/postgresql.conf" >/dev/null <<CONF

# --- nanoscale test cluster (scripts/lib/postgres.sh) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF

  on_exit pg_test_stop
  info "postgres: starting on 127.0.0.1:$port"
  if ! _pg_as "$PG_BINDIR/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null; then
    cat "$dir/server.log" >&2 || true
    die "postgres: server did not start"
  fi

  _pg_as "$PG_BINDIR/psql" -h "$dir" -p "$port" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE ROLE $PG_TEST_USER LOGIN CREATEDB PASSWORD '$PG_TEST_PASSWORD';
CREATE DATABASE $PG_TEST_DB OWNER $PG_TEST_USER;
SQL

  export NANOSCALE_TEST_POSTGRES_URL="postgres://$PG_TEST_USER:$PG_TEST_PASSWORD@127.0.0.1:$port/$PG_TEST_DB"
  export NANOSCALE_TEST_REQUIRE_POSTGRES=1
  # Prove the exact URL the tests get works (TCP + password auth).
  "$PG_BINDIR/psql" "$NANOSCALE_TEST_POSTGRES_URL" -X -q -t -A -c 'select 1' >/dev/null ||
    die "postgres: cannot connect with $NANOSCALE_TEST_POSTGRES_URL"
  info "postgres: ready"
}

pg_test_stop() {
  [[ -n "$PG_TEST_DIR" && -f "$PG_TEST_DIR/postmaster.pid" ]] || return 0
  info "postgres: stopping test server"
  _pg_as "$PG_BINDIR/pg_ctl" -D "$PG_TEST_DIR" -m fast -w -t 30 stop >/dev/null ||
    _pg_as "$PG_BINDIR/pg_ctl" -D "$PG_TEST_DIR" -m immediate -w -t 30 stop >/dev/null || true
}
