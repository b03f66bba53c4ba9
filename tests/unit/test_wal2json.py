"""The wal2json v2 decoder on messages shaped like the plugin's output (pure logic)."""

from __future__ import annotations

import json

from dmb.stores.cdc import decode, lsn_number, lsn_text
from dmb.stores.wal2json import Decoder, LogicalMessage, Skipped, Transaction


def _m(**fields: object) -> str:
    return json.dumps(fields)


def _cols(**values: object) -> list[dict[str, object]]:
    return [{"name": k, "type": "text", "value": v} for k, v in values.items()]


def test_update_whose_old_content_holds_decoder_keywords_is_read_intact() -> None:
    decoder = Decoder()
    tricky = "old-key: new-tuple: 'x'' \n\"q\" \x01"
    assert decoder.feed("0/1", _m(action="B", xid=7)) is None
    assert (
        decoder.feed(
            "0/2",
            _m(
                action="U",
                xid=7,
                schema="public",
                table="posts",
                identity=_cols(id=1, content=tricky),
                columns=_cols(id=1, content=tricky + "!"),
            ),
        )
        is None
    )
    done = decoder.feed("0/3", _m(action="C", xid=7, timestamp="2026-12-02 14:26:00.5+00"))
    assert isinstance(done, Transaction)
    (change,) = done.changes
    assert change.op == "u"
    assert change.before == {"id": 1, "content": tricky}
    assert change.after == {"id": 1, "content": tricky + "!"}
    assert change.commit_ms == done.commit_ms > 0
    assert done.lsn == "0/3"


def test_uncaptured_things_are_skipped_with_a_reason() -> None:
    decoder = Decoder()
    decoder.feed("0/1", _m(action="B", xid=1))
    other = decoder.feed("0/2", _m(action="I", schema="public", table="users", columns=[]))
    truncate = decoder.feed("0/3", _m(action="T", schema="public", table="likes"))
    message = decoder.feed("0/4", _m(action="M", transactional=True, prefix="x", content="y"))
    assert [s.reason for s in (other, truncate, message) if isinstance(s, Skipped)] == [
        "table",
        "truncate",
        "message",
    ]
    done = decoder.feed("0/5", _m(action="C", xid=1))
    assert isinstance(done, Transaction)
    assert done.changes == []


def test_registered_message_prefixes_are_surfaced() -> None:
    decoder = Decoder(message_prefixes=["dmb.trace"])
    decoder.feed("0/1", _m(action="B", xid=2))
    decoder.feed("0/2", _m(action="M", transactional=True, prefix="dmb.trace", content="t1"))
    done = decoder.feed("0/3", _m(action="C", xid=2))
    assert isinstance(done, Transaction)
    assert done.messages == [LogicalMessage("dmb.trace", "t1", "0/2", True)]
    loose = decoder.feed(
        "0/4", _m(action="M", transactional=False, prefix="dmb.trace", content="t")
    )
    assert isinstance(loose, LogicalMessage)


def test_a_batch_advances_to_commits_and_to_messages_outside_transactions_only() -> None:
    rows = [
        ("0/10", _m(action="B", xid=5)),
        ("0/11", _m(action="I", xid=5, schema="public", table="posts", columns=_cols(id=1))),
        ("0/12", _m(action="I", xid=5, schema="public", table="blocks", columns=_cols(id=2))),
        ("0/13", _m(action="C", xid=5, timestamp="2026-12-02 14:00:00.5+00")),
        ("0/20", _m(action="M", transactional=False, prefix="x", content="y")),
        ("0/30", _m(action="B", xid=6)),
        ("0/31", _m(action="T", xid=6, schema="public", table="scratch")),
    ]
    batch = decode(rows)
    assert [c.after for c in batch.changes] == [{"id": 1}]
    assert [s.reason for s in batch.skipped] == ["table", "message", "truncate"]
    assert batch.last_lsn == "0/20"  # not into transaction 6, still open
    assert batch.last_commit_ms == 1796220000500


def test_a_stream_position_prints_as_postgres_prints_a_pg_lsn_and_back() -> None:
    assert lsn_text(0x16_B374D848) == "16/B374D848"
    assert lsn_text(0x10) == "0/10"
    for text in ("0/0", "0/10", "16/B374D848", "FFFFFFFF/FFFFFFFF"):
        assert lsn_text(lsn_number(text)) == text
