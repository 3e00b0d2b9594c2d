"""``roadwave pki``: the fleet CA, client and broker certificates, revocation, broker configuration.

Subcommands: ``init``, ``issue``, ``request`` (on the party's own machine), ``issue-csr``,
``revoke``, ``crl``, ``list`` and ``broker-config``. A CA key encrypted at ``init`` is
unlocked with the passphrase in ``ROADWAVE_CA_PASSPHRASE``. Results are JSON lines on
stdout; refused input exits with status 2 and a message on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roadwave import pki
from roadwave.configfile import ConfigError
from roadwave.registry import FleetRegistry
from roadwave.services import MosquittoConfigError, mosquitto_config, write_broker_files

PASSPHRASE_VARIABLE = "ROADWAVE_CA_PASSPHRASE"
DEFAULT_BROKER_PORT = 8883


def add_subparser(subparsers: Any) -> None:
    """Register ``roadwave pki`` and its subcommands."""
    parser = subparsers.add_parser(
        "pki",
        help="fleet CA: issue and revoke certificates, generate the broker's TLS config and ACL",
        description="The fleet's X.509 PKI and the Mosquitto TLS configuration (docs/security.md). "
        f"The CA key's passphrase, if any, comes from {PASSPHRASE_VARIABLE}.",
    )
    commands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=text, description=text)
        if name != "request":
            sub.add_argument("--dir", type=Path, required=True, help="the PKI directory")
        sub.set_defaults(func=run)
        return sub

    init = command("init", run_init, "create the fleet CA, an empty index and an empty CRL")
    init.add_argument("--name", default="roadwave fleet CA", help="the CA's Common Name")
    init.add_argument("--days", type=int, default=pki.CA_DAYS, help=f"validity (default {pki.CA_DAYS})")
    init.add_argument(
        "--permit",
        action="append",
        default=[],
        metavar="NAME",
        help="name constraint: a DNS domain or IP network brokers must be in (repeatable)",
    )

    issue = command("issue", run_issue, "make a key here and issue a certificate (writes a bundle folder)")
    _add_issue_options(issue)
    issue.add_argument("identity", help="VIN, partner id, service id or broker host name")

    request = command("request", run_request, "on the party's own machine: make a key and a signing request")
    request.add_argument("--role", choices=pki.ROLES, required=True)
    request.add_argument("--out", type=Path, required=True, help="folder for key.pem (0600) and request.csr")
    request.add_argument("identity", help="VIN, partner id, service id or broker host name")

    issue_csr = command("issue-csr", run_issue_csr, "issue a certificate for a signing request")
    _add_issue_options(issue_csr)
    issue_csr.add_argument("--identity", help="refuse the request unless it names this identity")
    issue_csr.add_argument("request", type=Path, help="the PEM signing request (from `roadwave pki request`)")

    revoke = command("revoke", run_revoke, "revoke certificates and rewrite the CRL")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", help="the serial number (hex, as `list` shows it)")
    which.add_argument("--identity", help="every valid certificate of this identity")
    revoke.add_argument("--reason", choices=pki.REVOCATION_REASONS, default="unspecified")

    crl = command("crl", run_crl, "sign a fresh CRL (before the current one's next update)")
    crl.add_argument("--days", type=int, default=pki.CRL_DAYS, help=f"validity (default {pki.CRL_DAYS})")

    listing = command("list", run_list, "every certificate issued, one JSON line each, then the CRL's dates")
    listing.add_argument("--valid", action="store_true", help="only the certificates valid now")

    broker = command(
        "broker-config",
        run_broker_config,
        "write a Mosquitto TLS configuration, its certificates, CRL and the ACL from a fleet registry",
    )
    broker.add_argument("--registry", type=Path, required=True, help="the fleet registry TOML")
    broker.add_argument("--broker", required=True, help="the broker's identity (issued with --role broker)")
    broker.add_argument("--out", type=Path, required=True, help="folder to write the files to")
    broker.add_argument("--port", type=int, default=DEFAULT_BROKER_PORT, help="listener port (default 8883)")
    broker.add_argument("--bind", default="0.0.0.0", help="listener address (default 0.0.0.0)")
    broker.add_argument(
        "--paths-as", type=Path, help="the --out folder as the broker sees it (e.g. in a container)"
    )
    broker.add_argument(
        "--data-dir", type=Path, default=Path("/var/lib/mosquitto"), help="the broker's persistence folder"
    )
    broker.add_argument("--owner", help="user (or user:group) the broker runs as, to own its key")
    broker.add_argument(
        "--client-id-from-identity",
        action="store_true",
        help="use_username_as_clientid: no session takeover, one connection per identity",
    )


def _add_issue_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", choices=pki.ROLES, required=True)
    parser.add_argument("--days", type=int, default=pki.CERT_DAYS, help=f"validity (default {pki.CERT_DAYS})")
    parser.add_argument(
        "--name",
        action="append",
        default=[],
        dest="names",
        metavar="HOST",
        help="broker only: another DNS name or IP address it is reached at (repeatable)",
    )


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_VARIABLE)
    return value.encode() if value else None


def _open(args: argparse.Namespace) -> pki.FleetPki:
    return pki.FleetPki(args.dir, passphrase=_passphrase())


def _print(document: dict[str, Any]) -> None:
    print(json.dumps(document), flush=True)


def _issued(fleet_pki: pki.FleetPki, issued: pki.IssuedCertificate) -> dict[str, Any]:
    bundle = fleet_pki.bundle(issued.identity)
    return {
        **issued.as_json(),
        "cert_file": str(bundle.cert_file),
        "key_file": None if bundle.key_file is None else str(bundle.key_file),
        "ca_file": str(bundle.ca_file),
    }


def _refusing_bad_input(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn refused input into exit status 2 with the reason on stderr."""

    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (pki.PkiError, ConfigError, MosquittoConfigError, OSError) as exc:
            print(f"roadwave pki: {exc}", file=sys.stderr)
            return 2

    return guarded


@_refusing_bad_input
def run_init(args: argparse.Namespace) -> int:
    """``roadwave pki init``."""
    fleet_pki = pki.FleetPki.init(
        args.dir, name=args.name, days=args.days, permitted_names=args.permit, passphrase=_passphrase()
    )
    _print({"ca_file": str(fleet_pki.ca_file), "crl_file": str(fleet_pki.crl_file)})
    return 0


@_refusing_bad_input
def run_issue(args: argparse.Namespace) -> int:
    """``roadwave pki issue``."""
    fleet_pki = _open(args)
    issued = fleet_pki.issue(args.role, args.identity, days=args.days, broker_names=args.names)
    _print(_issued(fleet_pki, issued))
    return 0


@_refusing_bad_input
def run_request(args: argparse.Namespace) -> int:
    """``roadwave pki request``."""
    key_file, request_file = args.out / "key.pem", args.out / "request.csr"
    pki.create_request(args.role, args.identity, key_file, request_file)
    _print({"key_file": str(key_file), "request_file": str(request_file)})
    return 0


@_refusing_bad_input
def run_issue_csr(args: argparse.Namespace) -> int:
    """``roadwave pki issue-csr``."""
    fleet_pki = _open(args)
    issued = fleet_pki.issue_from_request(
        args.request.read_bytes(), args.role, identity=args.identity, days=args.days, broker_names=args.names
    )
    _print(_issued(fleet_pki, issued))
    return 0


@_refusing_bad_input
def run_revoke(args: argparse.Namespace) -> int:
    """``roadwave pki revoke``."""
    fleet_pki = _open(args)
    if args.serial is not None:
        try:
            serial = int(args.serial, 16)
        except ValueError as exc:
            raise pki.PkiError(f"--serial {args.serial!r} is not a hexadecimal number") from exc
        revoked = [fleet_pki.revoke(serial, args.reason)]
    else:
        revoked = fleet_pki.revoke_identity(args.identity, args.reason)
    for record in revoked:
        _print(record.as_json())
    return 0


@_refusing_bad_input
def run_crl(args: argparse.Namespace) -> int:
    """``roadwave pki crl``."""
    fleet_pki = _open(args)
    fleet_pki.write_crl(args.days)
    _print(_crl_summary(fleet_pki))
    return 0


def _crl_summary(fleet_pki: pki.FleetPki) -> dict[str, Any]:
    """The CRL's dates; ``days_left`` is what remains before the broker refuses everyone."""
    crl = fleet_pki.crl()
    next_update = crl.next_update_utc
    return {
        "crl_file": str(fleet_pki.crl_file),
        "revoked": len(crl),
        "last_update": pki.iso_time(crl.last_update_utc),
        "next_update": None if next_update is None else pki.iso_time(next_update),
        "days_left": None if next_update is None else (next_update - dt.datetime.now(dt.UTC)).days,
    }


@_refusing_bad_input
def run_list(args: argparse.Namespace) -> int:
    """``roadwave pki list``."""
    fleet_pki = _open(args)
    for record in fleet_pki.certificates():
        status = record.status()
        if not args.valid or status == "valid":
            _print({**record.as_json(), "status": status})
    _print(_crl_summary(fleet_pki))
    return 0


@_refusing_bad_input
def run_broker_config(args: argparse.Namespace) -> int:
    """``roadwave pki broker-config``."""
    if not 1 <= args.port <= 65535:
        raise pki.PkiError(f"--port must be 1-65535, got {args.port}")
    for option, path in (("--paths-as", args.paths_as), ("--data-dir", args.data_dir)):
        if path is not None and not path.is_absolute():
            raise pki.PkiError(f"{option} must be an absolute path as the broker sees it, got {path}")
    fleet_pki = _open(args)
    registry = FleetRegistry.load(args.registry)
    out: Path = args.out
    write_broker_files(
        fleet_pki,
        registry,
        args.broker,
        out,
        paths_as=args.paths_as,
        owner=args.owner,
        client_id_from_identity=args.client_id_from_identity,
        config=lambda tls: mosquitto_config(args.port, args.bind, args.data_dir, tls=tls),
    )
    roles = registry.roles()
    valid = {record.identity: record for record in fleet_pki.certificates() if record.status() == "valid"}
    _print(
        {
            "config_file": str(out / "mosquitto.conf"),
            "acl_file": str(out / "acl"),
            "identities": len(roles),
            "without_valid_certificate": sorted(
                identity
                for identity, role in roles.items()
                if identity not in valid or valid[identity].role != role
            ),
        }
    )
    return 0
