#!/usr/bin/env bash
# Prepare a Debian/Ubuntu machine for roadwave; safe to run again (fast when nothing changed).
#  1. Install the mosquitto and influxd executables (plus make and Python venv support
#     if absent) with apt-get. roadwave runs its own server instances, so the packages'
#     system services are kept from starting and stopped if they did start.
#  2. Create .venv (Python >= 3.11, override with PYTHON=...) and pip install -e '.[dev]'
#     whenever pyproject.toml is newer than .venv/.installed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed
POLICY_RC=/usr/sbin/policy-rc.d

say() { printf 'setup: %s\n' "$*"; }
die() {
    printf 'setup: error: %s\n' "$*" >&2
    exit 1
}

# Is executable $1 installed? /usr/sbin is often missing from a normal user's PATH.
have() {
    command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /usr/bin/$1 ]]
}

python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

# Print the apt packages this machine still needs, one per line (tshark only as root).
missing_packages() {
    have mosquitto || echo mosquitto
    have influxd || echo influxdb
    have make || echo make
    # Optional: lets the V2X pcap test check our captures with Wireshark's dissectors.
    [[ $(id -u) -eq 0 ]] && ! have tshark && echo tshark
    if [[ ! -x $VENV/bin/python && $PYTHON == python3 ]]; then
        have python3 || echo python3
        python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || echo python3-venv
    fi
}

# Keep package scripts from starting daemons (invoke-rc.d and deb-systemd-invoke obey
# policy-rc.d). An existing policy, e.g. the deny-all one of Docker images, is kept.
block_service_starts() {
    [[ -e $POLICY_RC ]] && return 0
    printf '#!/bin/sh\n# temporary, from roadwave scripts/setup.sh\nexit 101\n' >"$POLICY_RC"
    chmod 755 "$POLICY_RC"
    trap 'rm -f "$POLICY_RC"' EXIT
}

# Stop the system services of the given packages in case they were started anyway.
stop_services() {
    local name
    for name in "$@"; do
        [[ $name == mosquitto || $name == influxdb ]] || continue
        if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
            systemctl stop "$name" >/dev/null 2>&1 || true
        elif command -v service >/dev/null 2>&1; then
            service "$name" stop >/dev/null 2>&1 || true
        elif [[ -x /etc/init.d/$name ]]; then
            "/etc/init.d/$name" stop >/dev/null 2>&1 || true
        fi
    done
}

install_packages() {
    local -a packages
    mapfile -t packages < <(missing_packages)
    if ((${#packages[@]} == 0)); then
        say "mosquitto and influxd present"
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        die "missing Debian/Ubuntu packages: ${packages[*]}
  install them with:  sudo apt-get update && sudo apt-get install -y ${packages[*]}
  then run 'make setup' again"
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found: install ${packages[*]} (Mosquitto 2.x, InfluxDB 1.x) yourself"
    say "installing ${packages[*]} with apt-get"
    block_service_starts
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
    stop_services "${packages[@]}"
}

setup_venv() {
    if [[ ! -x $VENV/bin/python ]]; then
        command -v "$PYTHON" >/dev/null 2>&1 ||
            die "$PYTHON not found: install Python >= 3.11 or set PYTHON=/path/to/python3.11"
        python_ok "$PYTHON" ||
            die "Python >= 3.11 required but $PYTHON is $("$PYTHON" -V 2>&1); set PYTHON=/path/to/python3.11"
        say "creating $VENV with $("$PYTHON" -V 2>&1)"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" ||
            die "'$PYTHON -m venv' failed: on Debian/Ubuntu install python3-venv"
    fi
    python_ok "$VENV/bin/python" ||
        die "$VENV has $("$VENV/bin/python" -V 2>&1), Python >= 3.11 required: remove $VENV and retry"
    if [[ -f $STAMP && ! pyproject.toml -nt $STAMP ]]; then
        say "$VENV up to date"
        return 0
    fi
    say "pip install -e '.[dev]' into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    touch "$STAMP"
}

install_packages
setup_venv
say "ready"
