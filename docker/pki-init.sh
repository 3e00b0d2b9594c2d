#!/bin/sh
# The compose stack's fleet PKI, run by the one-shot `pki` service (docker/README.md).
#
# First run: the fleet CA, a key and certificate for the broker and for every identity of
# the registry, and the broker's TLS configuration and ACL. Later runs keep the CA and the
# certificates, sign a fresh CRL (it lasts 30 days; an expired CRL locks every client out)
# and write the broker's files again from the registry. Every step is a `roadwave pki`
# command; the paths below are those of the `pki` container.
set -eu

STATE=${ROADWAVE_STATE_DIR:-/var/lib/roadwave}
REGISTRY=${ROADWAVE_REGISTRY:-/etc/roadwave/registry.toml}
PKI=$STATE/pki

# issue ROLE IDENTITY [OPTION...]: a key and certificate, unless the identity has one already.
issue() {
    role=$1 identity=$2
    shift 2
    if [ ! -f "$PKI/issued/$identity/cert.pem" ]; then
        roadwave pki issue --dir "$PKI" --role "$role" "$@" "$identity"
    fi
}

if [ ! -f "$PKI/ca/ca.pem" ]; then
    roadwave pki init --dir "$PKI"
fi
roadwave pki crl --dir "$PKI"

# The broker's certificate names `mosquitto` (the host name inside the stack), localhost and
# 127.0.0.1, and ROADWAVE_BROKER_HOST if set: the name or address vehicles outside use.
issue broker mosquitto ${ROADWAVE_BROKER_HOST:+--name "$ROADWAVE_BROKER_HOST"}
issue service ingest
issue service alerts
issue vehicle RWDEM0SM9SR007919
issue vehicle RWDEM0SM5SR015838
issue vehicle RWDEM0SM1SR023757
issue partner garage-north

# The broker container mounts $STATE/broker at /mosquitto/config.
roadwave pki broker-config --dir "$PKI" --registry "$REGISTRY" --broker mosquitto \
    --out "$STATE/broker" --paths-as /mosquitto/config --data-dir /mosquitto/data
