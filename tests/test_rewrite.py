"""`pack`: how merge rewrites and compaction group files into files of about a target size."""

from hypothesis import given
from hypothesis import strategies as st

from lakeflow.ops.rewrite import pack

items = st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 50)), max_size=30)


def size(item):
    return item[1]


def group(item):
    return item[0]


@given(items, st.integers(1, 100))
def test_pack_cuts_greedy_runs_of_one_group_within_the_target(things, target):
    runs = pack(things, size, target, group)
    assert [x for run in runs for x in run] == things  # order kept, nothing lost
    for i, run in enumerate(runs):
        assert run and len({group(x) for x in run}) == 1
        assert len(run) == 1 or sum(map(size, run)) <= target
        if i + 1 < len(runs):  # the next run starts only where this one could not grow
            nxt = runs[i + 1][0]
            assert group(nxt) != group(run[0]) or sum(map(size, run)) + size(nxt) > target


@given(items, st.integers(1, 100))
def test_pack_without_groups_cuts_by_size_alone(things, target):
    one_group = [("a", n) for _, n in things]
    assert [len(run) for run in pack(things, size, target)] == [
        len(run) for run in pack(one_group, size, target, group)]
