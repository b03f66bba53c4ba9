"""TokenVerifier remembers verified tokens until they expire, and only those exact tokens."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dmb.domain.identity import AccessTokenIssuer, TokenVerifier
from dmb.errors import Unauthenticated
from dmb.settings import Settings, load_settings


@pytest.fixture(scope="module")
def settings() -> Settings:
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return load_settings(
        environ={},
        jwt_private_key=private_pem,
        jwt_public_keys={"k1": public_pem},
        jwt_active_kid="k1",
    )


def _counting(verifier: TokenVerifier) -> list[str]:
    """Count the full (signature) verifications the verifier performs."""
    calls: list[str] = []
    full = verifier._verify

    def counted(token: str) -> object:
        calls.append(token)
        return full(token)

    verifier._verify = counted  # type: ignore[method-assign,assignment]
    return calls


def test_a_verified_token_is_not_verified_again(settings: Settings) -> None:
    token = AccessTokenIssuer(settings).issue(42).token
    verifier = TokenVerifier(settings)
    calls = _counting(verifier)
    first, second = verifier.verify_signature(token), verifier.verify_signature(token)
    assert first == second
    assert first.user_id == 42
    assert len(calls) == 1


def test_a_tampered_copy_of_a_cached_token_is_refused(settings: Settings) -> None:
    token = AccessTokenIssuer(settings).issue(42).token
    verifier = TokenVerifier(settings)
    verifier.verify_signature(token)
    last = token[-2]
    tampered = token[:-2] + ("A" if last != "A" else "B") + token[-1]
    with pytest.raises(Unauthenticated):
        verifier.verify_signature(tampered)


def test_a_cached_token_is_checked_in_full_again_once_expired(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = AccessTokenIssuer(settings).issue(42).token
    verifier = TokenVerifier(settings)
    verifier.verify_signature(token)
    calls = _counting(verifier)
    later = time.time() + settings.jwt_access_ttl_seconds + settings.jwt_leeway_seconds + 5
    monkeypatch.setattr(time, "time", lambda: later)
    verifier.verify_signature(token)  # PyJWT's own clock decides; the cache did not answer
    assert calls == [token]


def test_the_cache_keeps_at_most_its_size(settings: Settings) -> None:
    issuer = AccessTokenIssuer(settings)
    verifier = TokenVerifier(settings)
    verifier.CACHE_SIZE = 3
    calls = _counting(verifier)
    tokens = [issuer.issue(user).token for user in range(1, 6)]
    for token in tokens:
        verifier.verify_signature(token)
    verifier.verify_signature(tokens[0])  # evicted (oldest): verified again
    verifier.verify_signature(tokens[-1])  # still cached
    assert len(calls) == 6
