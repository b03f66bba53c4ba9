"""A development JWT signing key pair, made on first use under the data folder, never committed.

Ed25519 (JWT `EdDSA`): small keys, fast signatures, and verifiers hold only the public key.
The key id (`kid`) is derived from the public key, so rotating means adding a new file pair.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class DevKeyPair:
    kid: str
    private_pem: str
    public_pem: str

    @classmethod
    def load_or_create(cls, folder: Path) -> DevKeyPair:
        folder.mkdir(parents=True, exist_ok=True)
        private_path = folder / "dev-signing-key.pem"
        if not private_path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            private_path.touch(mode=0o600)
            private_path.write_bytes(pem)
        private_pem = private_path.read_bytes()
        loaded = serialization.load_pem_private_key(private_pem, password=None)
        public_pem = loaded.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        kid = "dev-" + hashlib.sha256(public_pem).hexdigest()[:12]
        return cls(kid=kid, private_pem=private_pem.decode(), public_pem=public_pem.decode())
