#!/bin/sh
# NanoScale node installer, served by a control plane at /install.sh:
#
#   curl -fsSL @SERVER_URL@/install.sh | sh -s -- --join <token>
#
# Fetches the control plane's own nanoscale binary (no outside download), joins
# the cluster with the one-time token, and starts the node agent: as a systemd
# unit where systemd runs, else supervised by `nanoscale node run`. The agent runs
# as the unprivileged `nanoscale` user (with CAP_NET_BIND_SERVICE only, for the
# proxy's ports); what needs root it asks of `nanoscale helper`, through one exact
# sudo rule written here and checked with visudo. Safe to run again: what is
# already done is left as it is. --uninstall reverses it.
#
# Options:
#   --join TOKEN           one-time join token (nanoscale node add)
#   --data-dir DIR         keep everything of this node under DIR (binary, state,
#                          apps, logs); nothing outside DIR is touched, so several
#                          nodes can share one machine [default: /var/lib/nanoscale]
#   --name NAME            node name [default: this host's name]
#   --label KEY=VALUE      node label, repeatable (placement rules match them)
#   --proxy-listen A:P     external proxy listener [default: 0.0.0.0:80]
#   --internal-listen A:P  internal service network [default: 127.0.0.1:80]
#   --dns-listen A:P       *.svc.internal DNS responder [default: 127.0.0.153:53]
#   --swap-file-mib MIB    on a host with under 2 GiB of RAM and no swap, let the
#                          agent make a swap file of MIB MiB before it builds
#                          (16-65536; without it the agent only warns)
#   --supervisor S         what runs the apps: builtin (a small supervisor per
#                          app, any host) or systemd (a hardened unit per app;
#                          where systemd runs this host) [default: builtin]
#   --uninstall            stop this node's agent, proxy and apps and remove it
set -eu

SERVER_URL='@SERVER_URL@'
CLUSTER_ADDR='@CLUSTER_ADDR@'

TOKEN=""
DATA_DIR=""
NAME=""
LABELS=""
PROXY_LISTEN="0.0.0.0:80"
INTERNAL_LISTEN="127.0.0.1:80"
DNS_LISTEN="127.0.0.153:53"
UNINSTALL=0
SWAP_FILE_MIB=""
SUPERVISOR=builtin

say() { printf 'nanoscale: %s\n' "$*"; }
die() { printf 'nanoscale: error: %s\n' "$*" >&2; exit 1; }

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --join) need_value "$@"; TOKEN="$2"; shift 2 ;;
        --data-dir) need_value "$@"; DATA_DIR="$2"; shift 2 ;;
        --name) need_value "$@"; NAME="$2"; shift 2 ;;
        --label) need_value "$@"; LABELS="$LABELS $2"; shift 2 ;;
        --proxy-listen) need_value "$@"; PROXY_LISTEN="$2"; shift 2 ;;
        --internal-listen) need_value "$@"; INTERNAL_LISTEN="$2"; shift 2 ;;
        --dns-listen) need_value "$@"; DNS_LISTEN="$2"; shift 2 ;;
        --swap-file-mib) need_value "$@"; SWAP_FILE_MIB="$2"; shift 2 ;;
        --supervisor) need_value "$@"; SUPERVISOR="$2"; shift 2 ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help) sed -n '2,30p' "$0" 2>/dev/null || true; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root: curl -fsSL $SERVER_URL/install.sh | sudo sh -s -- ..."

# Checked before anything is done, so a typo changes nothing.
if [ -n "$SWAP_FILE_MIB" ]; then
    case "$SWAP_FILE_MIB" in
        *[!0-9]*) die "--swap-file-mib must be a number of MiB, 16 to 65536 (got '$SWAP_FILE_MIB')" ;;
    esac
    if [ "${#SWAP_FILE_MIB}" -gt 5 ] || [ "$SWAP_FILE_MIB" -lt 16 ] || [ "$SWAP_FILE_MIB" -gt 65536 ]; then
        die "--swap-file-mib must be a number of MiB, 16 to 65536 (got '$SWAP_FILE_MIB')"
    fi
fi

if [ -n "$DATA_DIR" ]; then
    case "$DATA_DIR" in
        /*) ;;
        *) die "--data-dir must be an absolute path" ;;
    esac
    # It is written into a sudo rule, where these are the only safe characters.
    case "$DATA_DIR" in
        *[!A-Za-z0-9/._-]*) die "--data-dir may hold only letters, digits and / . _ - (got '$DATA_DIR')" ;;
    esac
    BIN_DIR="$DATA_DIR/bin"
    OWN_USER=0
else
    DATA_DIR=/var/lib/nanoscale
    BIN_DIR=/usr/local/bin
    OWN_USER=1
fi
BIN="$BIN_DIR/nanoscale"
UNIT=/etc/systemd/system/nanoscale-agent.service
PID_FILE="$DATA_DIR/node.pid"
AGENT_USER=nanoscale
# One sudo rule per node; sudo skips files in sudoers.d whose name holds a dot.
if [ "$OWN_USER" -eq 1 ]; then
    SUDOERS=/etc/sudoers.d/nanoscale
else
    SUDOERS="/etc/sudoers.d/nanoscale-$(printf '%s' "$DATA_DIR" | sha256sum | cut -c1-12)"
fi
use_systemd() { [ "$OWN_USER" -eq 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# Every process of this node runs $BIN, or the shim written out of it (by the
# privileged helper into $DATA_DIR/helper/bin/nanoscale-shim-<hash>, or by an
# agent that does not sandbox into $DATA_DIR/agent/bin), with this node's data
# dir in its arguments.
node_pids() {
    for proc in /proc/[0-9]*; do
        exe=$(readlink "$proc/exe" 2>/dev/null || true)
        case "$exe" in
            "$BIN" | "$DATA_DIR"/helper/bin/nanoscale-shim-* | "$DATA_DIR"/agent/bin/nanoscale-shim-*) ;;
            *) continue ;;
        esac
        if tr '\0' '\n' < "$proc/cmdline" 2>/dev/null | grep -q "^$DATA_DIR"; then
            echo "${proc#/proc/}"
        fi
    done
}

case "$SUPERVISOR" in
    builtin) ;;
    systemd) [ "$UNINSTALL" -eq 1 ] || use_systemd \
        || die "--supervisor systemd needs systemd running this host, and the node's own data dir (no --data-dir)" ;;
    *) die "--supervisor must be builtin or systemd (got '$SUPERVISOR')" ;;
esac

if [ "$UNINSTALL" -eq 1 ]; then
    if use_systemd && [ -f "$UNIT" ]; then
        systemctl disable --now nanoscale-agent.service >/dev/null 2>&1 || true
        rm -f "$UNIT"
        systemctl daemon-reload || true
        say "removed the systemd unit"
    fi
    pids=$(node_pids)
    if [ -n "$pids" ]; then
        # The supervisor first (so nothing restarts), then the agent, proxy and
        # shims; a shim stops its app when it is told to stop.
        kill -TERM $pids 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            [ -z "$(node_pids)" ] && break
            sleep 0.5
        done
        pids=$(node_pids)
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        say "stopped this node's processes"
    fi
    # Apps that run as systemd units (--supervisor systemd), now that no agent
    # starts them again: their units are runtime units named after the instance.
    units=0
    for marker in "$DATA_DIR"/apps/*/instances/*/systemd.unit; do
        [ -f "$marker" ] || continue
        unit="nanoscale-$(basename "$(dirname "$marker")").service"
        systemctl stop "$unit" >/dev/null 2>&1 || true
        systemctl reset-failed "$unit" >/dev/null 2>&1 || true
        rm -f "/run/systemd/system/$unit"
        units=$((units + 1))
    done
    if [ "$units" -gt 0 ]; then
        systemctl daemon-reload || true
        say "stopped and removed $units app unit(s)"
    fi
    if [ -x "$BIN" ] && [ "$(id -u)" -eq 0 ]; then
        # NanoScale's own firewall table and its apps' users go through the
        # helper the agent uses: nothing else of the host is touched.
        if command -v nft >/dev/null 2>&1 && nft list table inet nanoscale >/dev/null 2>&1; then
            "$BIN" helper --data-dir "$DATA_DIR" \
                '{"op":"apply_firewall","plan":{"mode":"A","open_tcp_ports":[],"ssh_from":[]}}' >/dev/null \
                && say "removed NanoScale's firewall table (inet nanoscale)"
        fi
        # A swap file the agent made is on until switched off (rm cannot free it).
        if [ -e "$DATA_DIR/helper/swapfile" ]; then
            "$BIN" helper --data-dir "$DATA_DIR" '{"op":"remove_swap"}' >/dev/null \
                && say "switched off and removed this node's swap file"
        fi
        # Only the host's own node removes ns-* users: nodes made with --data-dir
        # may share this host (and its users) with others.
        if [ "$OWN_USER" -eq 1 ] && [ -d "$DATA_DIR/apps" ]; then
            for dir in "$DATA_DIR"/apps/*/; do
                [ -d "$dir" ] || continue
                service=$(basename "$dir")
                "$BIN" helper --data-dir "$DATA_DIR" "{\"op\":\"remove_app_user\",\"service\":\"$service\"}" >/dev/null 2>&1 \
                    && say "removed the user of $service"
            done
        fi
    fi
    if [ -f "$SUDOERS" ]; then
        rm -f "$SUDOERS"
        say "removed the agent's sudo rule ($SUDOERS)"
    fi
    if [ -f /etc/hosts ] && grep -q "^# BEGIN nanoscale $DATA_DIR/" /etc/hosts; then
        sed -i "\\|^# BEGIN nanoscale $DATA_DIR/|,\\|^# END nanoscale $DATA_DIR/|d" /etc/hosts
        say "removed this node's block from /etc/hosts"
    fi
    rm -rf "$DATA_DIR"
    say "removed $DATA_DIR"
    if [ "$OWN_USER" -eq 1 ]; then
        rm -f "$BIN"
        if id nanoscale >/dev/null 2>&1; then
            userdel nanoscale 2>/dev/null || true
            say "removed the nanoscale user"
        fi
    fi
    say "uninstalled; remove the node from the cluster with: nanoscale node rm <name>"
    exit 0
fi

[ -n "$CLUSTER_ADDR" ] || die "the control plane at $SERVER_URL has its cluster listener off; start it with --cluster-listen"
command -v curl >/dev/null 2>&1 || die "curl is needed"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is needed (coreutils)"

# The control plane's binary must run here.
remote=$(curl -fsSL "$SERVER_URL/api/v1/cluster/binary/sha256") || die "cannot reach $SERVER_URL"
want_sha=${remote%% *}
remote_arch=$(echo "$remote" | awk '{print $2}')
arch=$(uname -m)
[ "$arch" = "$remote_arch" ] || die "this server is $arch but the control plane runs $remote_arch; NanoScale serves only its own binary"

# The agent's user, shared by every node of this host (nodes made with
# --data-dir included).
if ! id "$AGENT_USER" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home --shell /usr/sbin/nologin "$AGENT_USER" 2>/dev/null \
        || useradd -r -U -d "$DATA_DIR" -M -s /sbin/nologin "$AGENT_USER"
    say "created the $AGENT_USER system user"
fi
# sudo (and setpriv, where systemd does not start the agent) let the agent run
# unprivileged; without them it runs as root, as it says.
if ! command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q sudo >/dev/null 2>&1; then
        say "installed sudo (the agent's way to its privileged helper)"
    fi
fi
SUDO=$(command -v sudo 2>/dev/null || true)
SETPRIV=$(command -v setpriv 2>/dev/null || true)
AS_ROOT=0
if [ -z "$SUDO" ] || ! command -v visudo >/dev/null 2>&1; then
    AS_ROOT=1
    say "warning: sudo is not installed; the agent runs as root (install sudo and run this again to change that)"
elif ! use_systemd && [ -z "$SETPRIV" ]; then
    AS_ROOT=1
    say "warning: setpriv (util-linux) is not installed; the agent runs as root (install it and run this again to change that)"
fi
# Security modes B and C need nftables; install it where apt can, or say what
# is missing (the node then reports the modes as unavailable).
if ! command -v nft >/dev/null 2>&1 && [ ! -x /usr/sbin/nft ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nftables >/dev/null 2>&1; then
        say "installed nftables (for security modes B and C)"
    else
        say "warning: nftables is not installed; security modes B and C stay unavailable on this node until it is"
    fi
fi
umask 077
# The data dir and the binary are root's: sudo runs that binary as root, and the
# helper keeps its own files in $DATA_DIR/helper. The agent's group may enter it.
mkdir -p "$DATA_DIR" "$DATA_DIR/apps" "$BIN_DIR"
chown "root:$AGENT_USER" "$DATA_DIR"
chmod 750 "$DATA_DIR"
chmod 700 "$DATA_DIR/apps"
chmod 755 "$BIN_DIR"

have_sha=""
[ -x "$BIN" ] && have_sha=$(sha256sum "$BIN" | awk '{print $1}')
if [ "$have_sha" = "$want_sha" ]; then
    say "$BIN is already the control plane's binary"
else
    [ -n "$TOKEN" ] || die "$BIN is missing or differs from the control plane's binary, and downloading it needs --join TOKEN (make one with: nanoscale node add)"
    # The join token authorizes the download; curl reads it from stdin, never
    # from its arguments (the process list is world-readable).
    printf 'header = "Authorization: Bearer %s"\n' "$TOKEN" \
        | curl -fsSL -K - -o "$BIN.download" "$SERVER_URL/api/v1/cluster/binary" \
        || die "downloading the binary failed (is the join token still valid? make a new one with: nanoscale node add)"
    got=$(sha256sum "$BIN.download" | awk '{print $1}')
    if [ "$got" != "$want_sha" ]; then
        rm -f "$BIN.download"
        die "the downloaded binary's SHA-256 is $got, expected $want_sha"
    fi
    chmod 755 "$BIN.download"
    mv -f "$BIN.download" "$BIN"
    say "installed $BIN"
fi

if [ -f "$DATA_DIR/agent/cluster/node.json" ]; then
    say "this node already joined the cluster (remove $DATA_DIR to join again)"
else
    [ -n "$TOKEN" ] || die "--join TOKEN is needed (make one with: nanoscale node add)"
    set -- join --cluster "$CLUSTER_ADDR" --data-dir "$DATA_DIR"
    [ -n "$NAME" ] && set -- "$@" --name "$NAME"
    for label in $LABELS; do set -- "$@" --label "$label"; done
    # The token goes through the environment, never the process list.
    NANOSCALE_JOIN_TOKEN="$TOKEN" "$BIN" "$@"
fi

# The agent's own state is its user's. A node a root agent ran before keeps its
# apps: the agent's records become its user's; the shims' directories stay
# root's, readable by the agent's group (as the helper makes new ones).
HELPER_COMMAND=""
if [ "$AS_ROOT" -eq 0 ]; then
    mkdir -p "$DATA_DIR/agent" "$DATA_DIR/proxy"
    chown -R "$AGENT_USER:$AGENT_USER" "$DATA_DIR/agent" "$DATA_DIR/proxy"
    chown "$AGENT_USER:$AGENT_USER" "$DATA_DIR/apps"
    chmod 750 "$DATA_DIR/apps"
    for service in "$DATA_DIR"/apps/*/; do
        [ -d "$service" ] || continue
        chown "$AGENT_USER:$AGENT_USER" "$service"
        for part in releases instances builds logs volumes; do
            if [ -d "$service$part" ]; then chown "$AGENT_USER:$AGENT_USER" "$service$part"; fi
        done
        if [ -d "${service}source.git" ]; then chown -R "$AGENT_USER:$AGENT_USER" "${service}source.git"; fi
        for shim in "$service"instances/*/ "$service"builds/*/ "$service"logs/*/; do
            [ -d "$shim" ] || continue
            chgrp -R "$AGENT_USER" "$shim"
            chmod -R g+rX,g-w,o-rwx "$shim"
            find "$shim" -type d -exec chmod g+s {} +
        done
    done
    if [ -n "$SETPRIV" ] && ! "$SETPRIV" --reuid "$AGENT_USER" --regid "$AGENT_USER" --init-groups test -w "$DATA_DIR/agent"; then
        die "the $AGENT_USER user cannot reach $DATA_DIR: a directory above it is closed to others; choose another --data-dir or open the parents (chmod o+x)"
    fi
    # Exactly one command, with these arguments and no others (the operation
    # goes to its stdin). Checked by visudo before it is put in place.
    HELPER_COMMAND="$SUDO -n $BIN helper --data-dir $DATA_DIR -"
    printf 'Defaults:%s !log_allowed, !pam_session\n%s ALL=(root) NOPASSWD: %s helper --data-dir %s -\n' \
        "$AGENT_USER" "$AGENT_USER" "$BIN" "$DATA_DIR" > "$SUDOERS.tmp"
    chmod 440 "$SUDOERS.tmp"
    if ! visudo -cf "$SUDOERS.tmp" >/dev/null; then
        rm -f "$SUDOERS.tmp"
        die "visudo refused the agent's sudo rule; nothing was changed"
    fi
    mv -f "$SUDOERS.tmp" "$SUDOERS"
    say "the agent runs as $AGENT_USER; its one sudo rule is $SUDOERS (checked by visudo)"
fi

set -- --data-dir "$DATA_DIR" --proxy-listen "$PROXY_LISTEN" --internal-listen "$INTERNAL_LISTEN" --dns-listen "$DNS_LISTEN"
if [ "$OWN_USER" -eq 1 ]; then set -- "$@" --hosts-file /etc/hosts; fi
set -- "$@" --supervisor "$SUPERVISOR"
# An unprivileged agent reads its units' output from the journal.
JOURNAL_GROUP=""
if [ "$SUPERVISOR" = systemd ] && getent group systemd-journal >/dev/null 2>&1; then
    JOURNAL_GROUP="
SupplementaryGroups=systemd-journal"
fi
# The agent reads it from its environment (`node run` passes it on); in the unit
# it is a flag of the agent's own.
AGENT_EXTRA=""
if [ -n "$SWAP_FILE_MIB" ]; then
    AGENT_EXTRA="--swap-file-mib $SWAP_FILE_MIB"
    export NANOSCALE_SWAP_FILE_MIB="$SWAP_FILE_MIB"
fi

UNIT_USER=""
if [ "$AS_ROOT" -eq 0 ]; then
    UNIT_USER="
User=$AGENT_USER
Group=$AGENT_USER
Environment=HOME=$DATA_DIR/agent
Environment=\"NANOSCALE_HELPER_COMMAND=$HELPER_COMMAND\"
# The proxy (started by the agent) binds the HTTP ports; nothing else is kept.
AmbientCapabilities=CAP_NET_BIND_SERVICE$JOURNAL_GROUP"
fi
if use_systemd; then
    cat > "$UNIT.tmp" <<EOF
[Unit]
Description=NanoScale node agent
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$BIN agent $* $AGENT_EXTRA
WorkingDirectory=$DATA_DIR$UNIT_USER
Restart=always
RestartSec=2
# Apps run under their own shims and outlive agent restarts.
KillMode=process

[Install]
WantedBy=multi-user.target
EOF
    mv -f "$UNIT.tmp" "$UNIT"
    systemctl daemon-reload
    systemctl enable nanoscale-agent.service >/dev/null 2>&1
    systemctl restart nanoscale-agent.service
    say "agent running as systemd unit nanoscale-agent.service"
else
    if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        say "agent already running (pid $(cat "$PID_FILE"))"
    else
        cd "$DATA_DIR"
        if [ "$AS_ROOT" -eq 0 ]; then
            HOME="$DATA_DIR/agent" NANOSCALE_HELPER_COMMAND="$HELPER_COMMAND" \
                setsid "$SETPRIV" --reuid "$AGENT_USER" --regid "$AGENT_USER" --init-groups \
                --inh-caps +net_bind_service --ambient-caps +net_bind_service \
                "$BIN" node run "$@" >> "$DATA_DIR/node.log" 2>&1 < /dev/null &
        else
            setsid "$BIN" node run "$@" >> "$DATA_DIR/node.log" 2>&1 < /dev/null &
        fi
        echo $! > "$PID_FILE"
        say "agent running under nanoscale node run (pid $!, log $DATA_DIR/node.log)"
    fi
fi
say "done: this server is a node of the cluster at $SERVER_URL"
