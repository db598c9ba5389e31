"""``cortex-ray logs``: which of Ray's log files belong to an API, and following them."""

from __future__ import annotations

from pathlib import Path

from cortex_ray.cluster.logs import api_log_files, follow, tail


def worker_file(root: Path, pid: int, actor: str, body: str, ext: str = "err") -> Path:
    path = root / f"worker-{'a' * 8}-01000000-{pid}.{ext}"
    path.write_text(f":job_id:01000000\n:actor_name:{actor}\n{body}")
    return path


def test_an_apis_files_are_its_replicas_and_its_processes(tmp_path: Path) -> None:
    mine = worker_file(tmp_path, 10, "ServeReplica:ops:ops", "loaded model a\n")
    out = worker_file(tmp_path, 10, "ServeReplica:ops:ops", "printed\n", ext="out")
    worker_file(tmp_path, 11, "ServeReplica:ops-proxy:ops-proxy", "not mine\n")
    reloader = worker_file(tmp_path, 12, "ModelReloader", "listing\n")
    worker_file(tmp_path, 13, "ModelReloader", "another API's reloader\n")
    (tmp_path / "worker-x-01000000-14.err").write_text("")
    worker_file(tmp_path, 10, "ServeReplica:ops:ops", "", ext="log.out")  # not a worker's output
    quiet = tmp_path / "worker-bbbbbbbb-01000000-12.out"
    quiet.write_text(":job_id:01000000\n:actor_name:ModelReloader\n")  # nothing but Ray's header
    assert set(api_log_files("ops", {12}, tmp_path)) == {mine, out, reloader}
    assert set(api_log_files("ops-proxy", set(), tmp_path)) == {tmp_path / "worker-aaaaaaaa-01000000-11.err"}


def test_tail_and_follow_give_the_new_lines_only(tmp_path: Path) -> None:
    f = worker_file(tmp_path, 10, "ServeReplica:ops:ops", "one\ntwo\n")
    assert tail(f, 2) == [":actor_name:ServeReplica:ops:ops", "one", "two"][-2:]
    lines = follow([f], poll=0.01)
    with open(f, "a") as handle:
        handle.write("three\nfou")
    assert next(lines) == (f, "three")
    with open(f, "a") as handle:
        handle.write("r\n")
    assert next(lines) == (f, "four")
