#!/bin/sh
# Install llmserver as two systemd services on a Debian or Ubuntu board (arm64 or x86-64).
# Run as root from a checkout: sudo make install-systemd [BACKEND=cpu|openblas|cuda|vulkan|metal]
# (or sudo sh systemd/install.sh). Safe to run again: it upgrades the package and the units and
# never overwrites the settings file or the secrets. Steps and reasons: systemd/README.md.
#
# Environment:
#   PREFIX=/opt/llmserver   where the virtual environment goes (the units run $PREFIX/.venv/bin/llmserver)
#   BACKEND=cpu             llama.cpp's acceleration (make backend-flags shows the build flags)
#   DESTDIR=                a scratch root: files only (no apt, pip, sysusers users, systemctl); for tests
#   SKIP_PACKAGE=1          keep the installed package (units, user, directories and settings only)
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/opt/llmserver}
BACKEND=${BACKEND:-cpu}
DESTDIR=${DESTDIR:-}
SKIP_PACKAGE=${SKIP_PACKAGE:-}
ETC="$DESTDIR/etc/llmserver"

say() { printf '==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (sudo make install-systemd)" >&2
    exit 1
fi

if [ -z "$DESTDIR" ] && [ -z "$SKIP_PACKAGE" ]; then
    say "system packages"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv python3-dev build-essential cmake openssl
    case "$BACKEND" in
        openblas) apt-get install -y -qq libopenblas-dev ;;
        vulkan) apt-get install -y -qq libvulkan-dev glslc ;;
    esac
    say "the package in $PREFIX/.venv (builds llama.cpp for BACKEND=$BACKEND: 5-15 minutes)"
    [ -x "$PREFIX/.venv/bin/python" ] || python3 -m venv "$PREFIX/.venv"
    "$PREFIX/.venv/bin/pip" install --quiet --upgrade pip wheel setuptools
    CMAKE_ARGS=$(make -s -C "$SRC" backend-flags BACKEND="$BACKEND" | sed 's/^.*CMAKE_ARGS=//')
    export CMAKE_ARGS
    # pip builds in the checkout's build/, where setuptools never deletes a module moved away since:
    # start from an empty one, or an upgrade ships stale modules beside their replacements.
    rm -rf "$SRC/build"
    "$PREFIX/.venv/bin/pip" install --quiet "$SRC"
fi

say "the user and the directories (sysusers, tmpfiles)"
install -d -m 0755 "$DESTDIR/etc/sysusers.d" "$DESTDIR/etc/tmpfiles.d" "$DESTDIR/etc/systemd/system"
install -m 0644 "$SRC/systemd/llmserver.sysusers.conf" "$DESTDIR/etc/sysusers.d/llmserver.conf"
install -m 0644 "$SRC/systemd/llmserver.tmpfiles.conf" "$DESTDIR/etc/tmpfiles.d/llmserver.conf"
if [ -n "$DESTDIR" ]; then
    systemd-sysusers --root="$DESTDIR"
    systemd-tmpfiles --create --root="$DESTDIR"
else
    systemd-sysusers
    systemd-tmpfiles --create
fi
GID=$(awk -F: '$1 == "llmserver" { print $3 }' "$DESTDIR/etc/group")

say "secrets in $ETC/credentials (kept when present)"
# root writes them; the llmserver group reads them, so `sudo -u llmserver llmserver vault ...` finds the
# key the proxy has (systemd hands the proxy its own copy through LoadCredential=).
install -d -m 0750 -o 0 -g "$GID" "$ETC/credentials"
for pair in encryption-key:32 session-key:64; do
    name=${pair%%:*}
    bytes=${pair##*:}
    file="$ETC/credentials/$name"
    if [ ! -s "$file" ]; then
        (umask 077 && python3 -c "import secrets; print(secrets.token_hex($bytes))" > "$file")
    fi
    chown 0:"$GID" "$file"
    chmod 0640 "$file"
done

say "settings in $ETC/llmserver.env (kept when present)"
if [ ! -e "$ETC/llmserver.env" ]; then
    install -m 0640 -o 0 -g "$GID" "$SRC/config/llmserver.env.example" "$ETC/llmserver.env"
fi

say "the units"
for unit in llmserver-runtime.service llmserver-proxy.service; do
    sed "s#/opt/llmserver/.venv/bin/llmserver#$PREFIX/.venv/bin/llmserver#" "$SRC/systemd/$unit" > "$DESTDIR/etc/systemd/system/$unit"
    chmod 0644 "$DESTDIR/etc/systemd/system/$unit"
done

if [ -z "$DESTDIR" ]; then
    systemctl daemon-reload
    systemctl enable llmserver-runtime.service llmserver-proxy.service
    say "done. Edit $ETC/llmserver.env (models, bind address, TLS), then:"
    echo "    sudo -u llmserver $PREFIX/.venv/bin/llmserver doctor"
    echo "    systemctl restart llmserver-runtime llmserver-proxy"
else
    say "done (into $DESTDIR)"
fi
