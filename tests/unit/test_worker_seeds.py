"""Each worker of a pool draws its rules' chances from a seed of its own, derived from the handle's:
the same seed repeats the same draws, and no two workers drop or duplicate in step."""

from divertgui.engine.rules import Pipeline
from divertgui.engine.worker_pool import worker_seed
from divertgui.engine.worker_session import for_worker

DROP_HALF = [{"kind": "drop", "chance": 50.0}]


def drops(seed: int, count: int = 64) -> list[bool]:
    """Which of `count` draws a 50 % drop rule seeded with `seed` loses."""
    rule = Pipeline.from_dicts(DROP_HALF, seed).rules[0]
    return [rule._lost() for _ in range(count)]


def test_each_worker_has_its_own_seed_and_the_same_one_in_every_run():
    seeds = [worker_seed(7, slot) for slot in range(8)]
    assert len(set(seeds)) == 8
    assert seeds == [worker_seed(7, slot) for slot in range(8)]
    assert worker_seed(8, 0) != worker_seed(7, 0)
    assert all(0 <= seed < 1 << 63 for seed in seeds)


def test_two_workers_of_one_handle_do_not_drop_in_step():
    first, second = drops(worker_seed(7, 0)), drops(worker_seed(7, 1))
    assert first != second
    assert drops(worker_seed(7, 1)) == second


def test_a_worker_seeds_the_rules_it_is_sent_with_its_own_seed():
    command = {"type": "set_rules", "rules": DROP_HALF, "seed": 7, "version": 3}
    assert for_worker(command, 1) == dict(command, seed=worker_seed(7, 1))
    assert for_worker({"type": "set_rules", "rules": DROP_HALF}, 0)["seed"] == worker_seed(0, 0)
    assert command["seed"] == 7
    other = {"type": "set_intercept", "filter": "udp"}
    assert for_worker(other, 1) is other
