"""When a consumer commits (actors.change_consumer.CommitPacer): at most once a second under a
steady stream, at once when the stream pauses, never with nothing handled."""

from __future__ import annotations

from actors.change_consumer import CommitPacer


def test_nothing_handled_is_never_due() -> None:
    pacer = CommitPacer(every=1.0, clock=lambda: 100.0)
    assert not pacer.due(at_once=True)
    assert not pacer.due(at_once=False)


def test_a_steady_stream_commits_once_per_interval_counted_from_the_oldest_uncommitted() -> None:
    now = [0.0]
    pacer = CommitPacer(every=1.0, clock=lambda: now[0])
    commits = 0
    for _ in range(50):  # a poll with records every 50 ms for 2.5 s
        pacer.handled()
        if pacer.due(at_once=False):
            pacer.committed()
            commits += 1
        now[0] += 0.05
    assert commits == 2  # at 1.0 s and 2.0 s (per poll it would have been 50)
    assert pacer.pending  # the last half second waits for the next commit


def test_an_empty_poll_commits_what_is_pending_at_once() -> None:
    now = [0.0]
    pacer = CommitPacer(every=1.0, clock=lambda: now[0])
    pacer.handled()
    now[0] += 0.1
    assert not pacer.due(at_once=False)
    assert pacer.due(at_once=True)
    pacer.committed()
    assert not pacer.pending
    assert not pacer.due(at_once=True)
