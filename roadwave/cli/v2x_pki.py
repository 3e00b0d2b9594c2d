"""``roadwave v2x-pki``: V2X signing material (ETSI TS 103 097) for ``[v2x.security]``.

``root`` creates a V2X root authority: ``root.key.pem`` (0600, keep it off the vehicles)
and ``root.oer``, its self-signed certificate, which every vehicle lists as ``trusted``.
``ticket`` makes a station key and an authorization ticket issued by that root,
permitting CAMs and DENMs: ``station.key.pem`` (0600) and ``station.oer`` for the
vehicle's ``key`` and ``ticket``. These are test-grade credentials: a deployment gets
its tickets from its V2X PKI (enrolment and authorization authorities), not from here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from edge.v2x.certificates import Authority, Validity, generate_authority, issue_ticket
from edge.v2x.timebase import timestamp_its_from_unix_ms
from roadwave.pki import write_file_atomically, write_private_key

ROOT_KEY, ROOT_CERTIFICATE = "root.key.pem", "root.oer"
STATION_KEY, TICKET = "station.key.pem", "station.oer"


def add_subparser(subparsers: Any) -> None:
    """Register ``roadwave v2x-pki``."""
    parser = subparsers.add_parser(
        "v2x-pki",
        help="V2X root and authorization tickets for signed CAM/DENM ([v2x.security])",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    commands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND", required=True)
    root = commands.add_parser("root", help="create a V2X root authority in DIR")
    root.add_argument("--dir", type=Path, required=True, help="folder for root.key.pem and root.oer")
    root.add_argument("--name", default="roadwave V2X root", help="the root's name")
    root.add_argument("--days", type=int, default=3650, help="validity from now (default 3650)")
    root.set_defaults(func=run_root)
    ticket = commands.add_parser("ticket", help="a station key and an authorization ticket from the root")
    ticket.add_argument("--root", type=Path, required=True, help="the folder `v2x-pki root` wrote")
    ticket.add_argument("--out", type=Path, required=True, help="folder for station.key.pem and station.oer")
    ticket.add_argument(
        "--days", type=int, default=7, help="validity from now (default 7: tickets are short-lived)"
    )
    ticket.set_defaults(func=run_ticket)


def _validity(days: int) -> Validity:
    if days < 1:
        raise ValueError(f"--days must be at least 1, got {days}")
    return Validity(timestamp_its_from_unix_ms(time.time_ns() // 1_000_000) // 1000, days * 86_400)


def _fail(exc: Exception) -> int:
    print(f"roadwave v2x-pki: {exc}", file=sys.stderr)
    return 2


def run_root(args: argparse.Namespace) -> int:
    """``roadwave v2x-pki root``."""
    key_path = args.dir / ROOT_KEY
    if key_path.exists():
        return _fail(ValueError(f"{key_path} exists: a root is created once; remove it to start over"))
    try:
        authority = generate_authority(_validity(args.days), args.name)
        write_private_key(key_path, authority.private_key)
        write_file_atomically(args.dir / ROOT_CERTIFICATE, authority.certificate, 0o644)
    except (OSError, ValueError) as exc:
        return _fail(exc)
    print(json.dumps({"key": str(key_path), "certificate": str(args.dir / ROOT_CERTIFICATE)}))
    return 0


def run_ticket(args: argparse.Namespace) -> int:
    """``roadwave v2x-pki ticket``."""
    try:
        root_key = load_pem_private_key((args.root / ROOT_KEY).read_bytes(), password=None)
        if not isinstance(root_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{args.root / ROOT_KEY} is not an elliptic-curve key")
        authority = Authority(root_key, (args.root / ROOT_CERTIFICATE).read_bytes())
        station_key = ec.generate_private_key(ec.SECP256R1())
        ticket = issue_ticket(authority, station_key.public_key(), _validity(args.days))
        write_private_key(args.out / STATION_KEY, station_key)
        write_file_atomically(args.out / TICKET, ticket, 0o644)
    except (OSError, ValueError) as exc:
        return _fail(exc)
    print(json.dumps({"key": str(args.out / STATION_KEY), "ticket": str(args.out / TICKET)}))
    return 0
