"""Certificate authority and confidential key loading throughput on ONE core:
``.venv/bin/python -m bench.ca [--seconds S] [--rounds N]``.

Pins itself to one CPU, then measures in interleaved rounds (each figure the median of
``--rounds``; a ratio is computed within its round, so machine load hits both sides alike):

ceilings, raw ``cryptography`` operations (P-256):
- ``ecdh``: a fresh key pair + one ECDH exchange (what one side of a key agreement costs);
- ``sign``: ECDSA-SHA-256 signatures; ``verify``: ECDSA verifications;

the CA (``keys.ca``, on a throw-away embedded database: SQLite, vault with a generated master key):
- ``certify``: ``casd_certify`` of a fresh SE key (SEs made before the timed loop) — the X.509 and
  the GP ``7F21`` certificate, each signed by the CA key opened from the vault for that signature,
  the row and its audit event;
- ``issue (crypto only)``: the two certificates built and signed, no database;

confidential key loading (``gp.keyload``):
- ``build``: a package for one SE and SD (ephemeral key, ECDH, X9.63 KDF, AES key wrap, ECDSA by
  the provider's OCE key, expected receipt) — the provider's side;
- ``open``: parse, OCE chain check to the CA key (``gp.gpcert.verify_chain``), signature check,
  ECDH with the CASD key, unwrap, KCVs, receipt — the card's side (the software SE's logic, with
  the CASD key in memory);

and the ratio of each to its ceiling: what one operation costs in raw primitives (certify: 2
signs; build: 1 ecdh + 1 sign; open: 1 ECDH exchange + 2 verifies).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rate(fn: Callable[[], Any], seconds: float) -> float:
    fn()  # warm
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def _django(tmp: Path, database_url: str = "") -> None:
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "1",
            "TESSERA_VAR_DIR": str(tmp),
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("TESSERA_VAULT_MASTER_KEY", None)
    os.environ.pop("TESSERA_VAULT_MASTER_KEY_FILE", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--no-input", verbosity=0)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ca")
    parser.add_argument("--seconds", type=float, default=1.0, help="per figure per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--db",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="a fresh PostgreSQL database on 127.0.0.1:5432 (falls back to SQLite when unreachable)",
    )
    args = parser.parse_args()
    db_name, database_url = "", ""
    if args.db == "postgres":
        from tests.e2e.conftest import PG_HOST, PG_PORT, _create_database, port_open

        if port_open(PG_HOST, PG_PORT):
            db_name = f"tessera_bench_ca_{os.getpid()}"
            _create_database(db_name)
            database_url = f"postgres://postgres@{PG_HOST}:{PG_PORT}/{db_name}"
        else:
            args.db = "sqlite (PostgreSQL unreachable)"
    try:
        return _run(args, database_url)
    finally:
        if db_name:
            from django.db import connections

            connections.close_all()
            from tests.e2e.conftest import _drop_database

            _drop_database(db_name)


def _run(args: argparse.Namespace, database_url: str) -> int:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    with tempfile.TemporaryDirectory(prefix="tessera-bench-ca-") as tmp:
        _django(Path(tmp), database_url)
        from django.utils import timezone

        from gp import keyload
        from gp.gpcert import verify_chain
        from keys import ca as ca_services
        from keys import gp_ca, x509_ca
        from keys.ca import ca_signer
        from tenants.access import Actor
        from tenants.models import MemberRole, OrgRole
        from tests import factories as f

        ca_org = f.OrganisationFactory(slug="bench-ca", roles=[OrgRole.CONTROLLING_AUTHORITY])
        sei = f.OrganisationFactory(slug="bench-sei", roles=[OrgRole.SE_ISSUER])
        provider = f.OrganisationFactory(slug="bench-sp", roles=[OrgRole.SERVICE_PROVIDER])
        users = {
            o.slug: f.MembershipFactory(org=o, role=MemberRole.OWNER).user for o in (ca_org, sei, provider)
        }
        ca_actor = Actor(user=users["bench-ca"], org=ca_org, member_role=MemberRole.OWNER)
        sp_actor = Actor(user=users["bench-sp"], org=provider, member_role=MemberRole.OWNER)
        authority = ca_services.ca_create(actor=ca_actor, name="Bench CA")
        signer = ca_signer(authority)
        ca_private = None  # the CA key stays in the vault; the card side needs only the public key
        ca_public = signer.public_key()

        # the provider's OCE certificate, through the service (CSR)
        from cryptography import x509 as cx509
        from cryptography.x509.oid import NameOID

        oce_key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            cx509.CertificateSigningRequestBuilder()
            .subject_name(cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "bench")]))
            .sign(oce_key, hashes.SHA256())
        )
        from cryptography.hazmat.primitives.serialization import Encoding

        oce_cert = ca_services.oce_request(actor=sp_actor, csr_pem=csr.public_bytes(Encoding.PEM).decode())
        oce_chain = [bytes(oce_cert.der)]

        casd_key = ec.generate_private_key(ec.SECP256R1())
        se_id, sd_aid = b"\x11" * 10, bytes.fromhex("A0000001515350AA01")
        keys_ = (os.urandom(16), os.urandom(16), os.urandom(16))
        counter = [0]

        def build() -> keyload.BuiltPackage:
            counter[0] += 1
            return keyload.build_package_with_receipt(
                casd_public_key=casd_key.public_key(),
                se_id=se_id,
                sd_aid=sd_aid,
                kvn=0x31,
                keys=keys_,
                counter=counter[0],
                oce_private_key=oce_key,
                oce_certificates=oce_chain,
            )

        sample = build()

        def open_() -> None:
            opened = keyload.open_package(
                keyload.parse_package(sample.package),
                ecdh=keyload.ecdh_with(casd_key),
                se_id=se_id,
                sd_aid=sd_aid,
                last_counter=0,
                ca_public_key=ca_public,
                verify_chain=verify_chain,
            )
            keyload.verify_receipt(opened.receipt, expected_receipt=sample.expected_receipt)

        # SEs to certify, made up front (the timed loop is casd_certify alone, plus its key pair)
        from devices.models import SecureElement

        pool_size = int(800 * args.seconds * (args.rounds + 1))
        SecureElement.objects.bulk_create(
            SecureElement(issuer=sei, serial=f"BENCH{n:011d}") for n in range(pool_size)
        )
        ses = iter(SecureElement.objects.filter(issuer=sei).select_related("issuer", "supplier"))

        def certify() -> None:
            ca_services.casd_certify(
                actor=ca_actor,
                secure_element=next(ses),
                public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
            )

        issuer_name = cx509.load_der_x509_certificate(
            bytes(authority.root_certificate)
        ).subject.public_bytes()

        def issue_crypto() -> None:
            key = ec.generate_private_key(ec.SECP256R1()).public_key()
            now = x509_ca.second(timezone.now())
            later = now + timezone.timedelta(days=365)
            x509_ca.certificate_build(
                signer=signer,
                issuer_name=issuer_name,
                issuer_key_id=bytes.fromhex(authority.kloc_id),
                subject_name=x509_ca.name_der(common_name="SE"),
                subject_public_key=x509_ca.spki_der(key),
                serial=x509_ca.random_serial(),
                not_before=now,
                not_after=later,
                profile=x509_ca.CASD,
            )
            gp_ca.gp_certificate_build(
                signer=signer,
                ca_identifier=bytes.fromhex(authority.kloc_id),
                serial=x509_ca.random_serial(),
                subject_identifier=b"\x01" * 8,
                public_key=key,
                not_before=now,
                not_after=later,
            )

        peer = ec.generate_private_key(ec.SECP256R1()).public_key()
        message = os.urandom(200)
        sig_key = ec.generate_private_key(ec.SECP256R1())
        signature = sig_key.sign(message, ec.ECDSA(hashes.SHA256()))

        def raw_ecdh() -> None:
            ec.generate_private_key(ec.SECP256R1()).exchange(ec.ECDH(), peer)

        def raw_exchange() -> None:
            casd_key.exchange(ec.ECDH(), peer)

        def raw_sign() -> None:
            sig_key.sign(message, ec.ECDSA(hashes.SHA256()))

        def raw_verify() -> None:
            sig_key.public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))

        figures: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        ops = {
            "ecdh (keygen + exchange)": raw_ecdh,
            "ecdh exchange only": raw_exchange,
            "ecdsa sign": raw_sign,
            "ecdsa verify": raw_verify,
            "CA certify (service, DB)": certify,
            "CA issue (crypto only)": issue_crypto,
            "package build": build,
            "package open + receipt": open_,
        }
        for _ in range(args.rounds):
            r = {name: _rate(fn, args.seconds) for name, fn in ops.items()}
            for name, value in r.items():
                figures.setdefault(name, []).append(value)
            # ceilings: what the primitives alone would allow for one operation
            ceil_cert = 1 / (2 / r["ecdsa sign"])
            ceil_build = 1 / (1 / r["ecdh (keygen + exchange)"] + 1 / r["ecdsa sign"])
            ceil_open = 1 / (1 / r["ecdh exchange only"] + 2 / r["ecdsa verify"])
            ratios.setdefault("CA certify (service, DB)", []).append(
                r["CA certify (service, DB)"] / ceil_cert
            )
            ratios.setdefault("CA issue (crypto only)", []).append(r["CA issue (crypto only)"] / ceil_cert)
            ratios.setdefault("package build", []).append(r["package build"] / ceil_build)
            ratios.setdefault("package open + receipt", []).append(r["package open + receipt"] / ceil_open)
        del ca_private

    print(
        f"bench.ca: one CPU (pinned), {args.rounds} rounds x {args.seconds:g} s, medians, database {args.db}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    for name, values in figures.items():
        line = f"  {name:28} {statistics.median(values):9.0f} /s"
        if name in ratios:
            line += f"   {statistics.median(ratios[name]):6.3f} of its ceiling"
        print(line)
    print(
        "  ceilings: certify = 2 ECDSA signs (X.509 + 7F21); build = 1 keygen+ECDH + 1 sign; "
        "open = 1 ECDH + 2 verifies (OCE certificate, package signature)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
