from hypothesis import given, settings
from hypothesis import strategies as st

from stream.idtable import MIN_SLOTS, IdTable

# Few distinct low bits, so keys collide and probe runs wrap around the end of the table.
keys = st.one_of(
    st.integers(1, 40),
    st.integers(1, 40).map(lambda k: k * MIN_SLOTS - 1),
    st.integers(1, 2**64 - 1),
)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.sampled_from(["put", "delete"]), keys, st.integers(-(2**63), 2**63 - 1)),
        max_size=3000,
    )
)
def test_table_behaves_as_a_dict(ops):
    table, model = IdTable(), {}
    for op, key, value in ops:
        if op == "put":
            table.put(key, value)
            model[key] = value
        else:
            assert table.delete(key) == (model.pop(key, None) is not None)
    assert len(table) == len(model)
    assert {k: table.get(k) for k in table} == model
    assert all(table.get(k) == v for k, v in model.items())
    assert table.get(2**64 - 1) == model.get(2**64 - 1)


def test_table_grows_and_keeps_every_entry_through_deletions():
    table = IdTable()
    model = {}
    for k in range(1, 20_000):
        key = (k * 0x9E3779B97F4A7C15) % 2**64 or 1
        table.put(key, -k)
        model[key] = -k
        if k % 3 == 0:
            victim = ((k // 2) * 0x9E3779B97F4A7C15) % 2**64
            assert table.delete(victim) == (model.pop(victim, None) is not None)
    assert len(table) == len(model) and {k: table.get(k) for k in table} == model


@settings(max_examples=200)
@given(
    st.lists(st.tuples(keys, st.integers(0, 2**40)), max_size=300),
    st.lists(st.lists(keys, max_size=1500), max_size=4),
)
def test_a_run_of_keys_is_put_as_one_put_each_in_order(before, runs):
    table, model = IdTable(), {}
    for key, value in before:
        table.put(key, value)
        model[key] = value
    for n, run in enumerate(runs):
        first = n << 16
        table.put_run(run, first)
        for i, key in enumerate(run):  # a later equal key wins
            model[key] = first + i
    assert len(table) == len(model)
    assert {k: table.get(k) for k in table} == model
