"""benchmarks/profile.py's CPU table: every process counted once, under the role it plays."""

from benchmarks.profile import cpu_report

# pid, command line, CPU seconds at the first look (None: started after it), at the second
PROCESSES = [
    (1, "ray::ServeReplica:gateway:Gateway", 10.0, 12.0),
    (2, "ray::ServeReplica:feed:FeedService", 5.0, 6.5),
    (3, "ray::ServeReplica:posts:PostService", 1.0, 2.0),
    (4, "ray::FeedConsumer", 0.0, 0.75),
    (5, "/venv/bin/raylet --node", 0.0, 0.5),
    (6, "postgres: dmb dmb 127.0.0.1(1) idle", 0.0, 0.25),
    (7, "ray::ServeController.listen_for_change", None, 0.125),
]


def test_every_process_lands_in_one_group_and_the_request_path_replicas_stand_alone() -> None:
    before = {pid: (line, sec) for pid, line, sec, _ in PROCESSES if sec is not None}
    after = {pid: (line, sec) for pid, line, _, sec in PROCESSES}

    spent, heaviest = cpu_report(before, after, {"Gateway": 1, "FeedService": 2}, top=3)

    assert spent["Gateway"] == 2.0
    assert spent["FeedService"] == 1.5
    assert spent["other Serve replicas of ours (posts, users, ...)"] == 1.0
    assert spent["feed pipeline (relay, consumers, fan-out, flusher, broker)"] == 0.75
    assert spent["postgres + redis"] == 0.25
    assert spent["Ray's own processes (raylet, GCS, controller, agents)"] == 0.625
    assert sum(spent.values()) == 6.125  # each of the seven processes once
    assert [sec for sec, _ in heaviest] == [2.0, 1.5, 1.0]
