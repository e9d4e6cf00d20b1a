"""``manage.py vault_pkcs11_init``: create the vault's master key or the CA's key pair in a token.

``--master-key`` generates an AES-256 key (CKA_TOKEN, CKA_SENSITIVE, not CKA_EXTRACTABLE, encrypt
and decrypt only) labelled ``TESSERA_PKCS11_KEY_LABEL``; with ``--new``, the rewrap target's
``TESSERA_VAULT_NEW_PKCS11_*`` instead. ``--ca-key [LABEL]`` generates an ECDSA P-256 key pair
whose private half never leaves the token, and prints the public key. Existing keys are never
overwritten. The token itself is initialised with the vendor's tool (``softhsm2-util
--init-token``). The vault's start-up check is skipped for this command (keys.vault).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys.errors import VaultConfigurationError
from keys.pkcs11 import (
    DEFAULT_CA_KEY_LABEL,
    NEW_PREFIX,
    PREFIX,
    Pkcs11Config,
    create_master_key,
    create_signing_key,
)


class Command(BaseCommand):
    help = "Create the vault's master key (--master-key) or the CA's signing key pair (--ca-key) in a PKCS#11 token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--master-key", action="store_true", help="generate the AES-256 master key")
        parser.add_argument(
            "--ca-key",
            nargs="?",
            const=DEFAULT_CA_KEY_LABEL,
            metavar="LABEL",
            help=f"generate an ECDSA P-256 key pair (default label {DEFAULT_CA_KEY_LABEL})",
        )
        parser.add_argument(
            "--new", action="store_true", help="use TESSERA_VAULT_NEW_PKCS11_* (a rewrap's target key)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["master_key"] and not options["ca_key"]:
            raise CommandError("say what to create: --master-key and/or --ca-key [LABEL]")
        try:
            if options["new"]:
                config = Pkcs11Config.from_env(prefix=NEW_PREFIX, fallback_prefix=PREFIX)
            else:
                config = Pkcs11Config.from_env()
            if options["master_key"]:
                key_id = create_master_key(config)
                self.stdout.write(
                    self.style.SUCCESS(
                        f"created the master key {config.key_label!r} in token {config.token!r}: key id {key_id}"
                    )
                )
            if options["ca_key"]:
                signer = create_signing_key(config, options["ca_key"])
                spki = signer.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                digest = hashes.Hash(hashes.SHA256())
                digest.update(spki)
                pem = signer.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                self.stdout.write(
                    self.style.SUCCESS(
                        f"created the key pair {options['ca_key']!r} in token {config.token!r}: key id "
                        f"{signer.key_id}, public key SHA-256 {digest.finalize().hex()}"
                    )
                )
                self.stdout.write(pem.decode().rstrip())
        except VaultConfigurationError as exc:
            raise CommandError(str(exc)) from None
