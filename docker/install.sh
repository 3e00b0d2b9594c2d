#!/bin/sh
# Run by docker/Dockerfile.cloud and docker/Dockerfile.edge (as root, at build time):
# install roadwave from /opt/roadwave and create the user the containers run as.
set -eu

# uid and gid 1883 are those of the broker's user in the eclipse-mosquitto image: the broker
# can then read the key `roadwave pki broker-config` writes (mode 0600) in the compose stack,
# with no step running as root.
groupadd --system --gid 1883 roadwave
useradd --system --uid 1883 --gid roadwave --no-create-home --home-dir /var/lib/roadwave \
    --shell /usr/sbin/nologin roadwave

# Editable, so the package runs from /opt/roadwave with dbc/ beside it, where
# roadwave.REFERENCE_DBC (the simulator's default DBC) looks for it.
pip install --no-cache-dir --root-user-action=ignore --editable /opt/roadwave
python -m compileall -q /opt/roadwave/roadwave /opt/roadwave/edge /opt/roadwave/cloud \
    /opt/roadwave/firmware_bridge

# State: spools, buffers, dead letters, the PKI. A named volume mounted here starts out with
# this folder's owner and mode.
install -d -o roadwave -g roadwave -m 0750 /var/lib/roadwave
