"""Account deletion's pure parts: the outbox event decoded from either envelope shape, and a
closed account outranking its tokens' cached revocation state."""

from __future__ import annotations

import pytest

from dmb.domain.revocation import CLEAR, REVOKED, cached_states
from dmb.stores.change_events import AccountDeleted, decode_event, int_array, topic_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "ids"),
    [("{}", ()), ("{7}", (7,)), ("{3,2,1}", (3, 2, 1)), ([5, 4], (5, 4)), (None, ())],
)
def test_a_bigint_array_as_wal2json_or_debezium_sends_it(value: object, ids: tuple[int]) -> None:
    assert int_array(value) == ids


def test_an_outbox_insert_is_an_account_deleted_event_and_its_delete_is_nothing() -> None:
    topic = topic_of("account_deletions")
    created = {"op": "c", "before": None, "after": {"user_id": "42", "post_ids": "{9,8}"}}
    assert decode_event(topic, created) == AccountDeleted(42, (9, 8))
    assert decode_event(topic, {"op": "d", "before": {"user_id": "42"}, "after": None}) is None


@pytest.mark.parametrize(
    ("token", "account", "state"),
    [
        (CLEAR, REVOKED, True),  # another session's cached "not revoked" no longer counts
        (None, REVOKED, True),
        (CLEAR, None, False),
        (REVOKED, None, True),
        (None, None, None),  # unknown: Postgres decides
    ],
)
def test_a_closed_account_revokes_every_token_whatever_its_own_entry_says(
    token: bytes | None, account: bytes | None, state: bool | None
) -> None:
    assert cached_states(token, account) == state
