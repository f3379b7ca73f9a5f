"""The worker pool's arithmetic: how many workers, and counters summed once each."""

import os

import pytest

from divertgui import cli
from divertgui.engine.address import Flag
from divertgui.engine.worker_pool import WorkerPool, WorkerPoolError, add_counters, worker_count


def test_auto_is_the_cores_this_process_may_use():
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    assert worker_count("3") == 3
    with pytest.raises(ValueError):
        worker_count("many")


def test_the_option_refuses_what_is_not_a_count(capsys):
    assert cli.main(["passthru", "udp", "--workers", "0"]) == 2
    assert "0 is outside 1..64" in capsys.readouterr().err
    assert cli.main(["conditions", "udp", "--lag", "5", "--workers", "lots"]) == 2
    assert "not a number of workers or auto: 'lots'" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["netfilter", "tcp", "--workers", "auto"]).workers >= 1


def test_counters_and_rule_tables_are_summed():
    total = {}
    add_counters(total, {"diverted": 3, "rules": [{"name": "lag", "matched": 2}], "first_send_error": "a"})
    add_counters(total, {"diverted": 4, "rules": [{"name": "lag", "matched": 5}], "first_send_error": "b"})
    assert total == {"diverted": 7, "rules": [{"name": "lag", "matched": 7}], "first_send_error": "a"}


def test_handles_without_packets_to_share_are_refused():
    with pytest.raises(WorkerPoolError, match="SNIFF"):
        WorkerPool("udp", print, 2, flags=Flag.SNIFF)
    with pytest.raises(WorkerPoolError, match="at least 1"):
        WorkerPool("udp", print, 0)


def test_every_worker_keeps_its_own_name_within_the_kernels_15_bytes():
    from divertgui.engine.worker_pool import worker_name
    names = [worker_name(slot).encode()[:15] for slot in range(cli.MAX_WORKERS)]
    assert len(set(names)) == cli.MAX_WORKERS
