"""BoundedLRUQueue: never blocks producers, evicts oldest, wakes on close."""

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicechat.session.bounded_queue import BoundedLRUQueue, QueueClosed


class Item:
    def __init__(self, value: int, generation: int) -> None:
        self.value, self.generation = value, generation


def test_put_evicts_oldest_and_counts():
    q = BoundedLRUQueue[int](3)
    for i in range(5):
        q.put(i)
    assert q.snapshot() == [2, 3, 4]
    assert q.evicted == 2


def test_put_returns_the_evicted_item():
    q = BoundedLRUQueue[str](1)
    assert q.put("a") is None
    assert q.put("b") == "a"


def test_get_times_out_when_empty():
    q = BoundedLRUQueue[int](2)
    with pytest.raises(TimeoutError):
        q.get(timeout=0.01)


def test_close_wakes_a_blocked_consumer():
    q = BoundedLRUQueue[int](2)
    raised = threading.Event()
    started = threading.Event()

    def consume() -> None:
        started.set()
        try:
            q.get()
        except QueueClosed:
            raised.set()

    t = threading.Thread(target=consume)
    t.start()
    assert started.wait(5)
    q.close()
    assert raised.wait(5)
    t.join(5)
    assert not t.is_alive()


def test_items_queued_before_close_can_still_be_taken():
    q = BoundedLRUQueue[int](4)
    q.put(1)
    q.close()
    q.put(2)  # ignored after close
    assert q.get(timeout=1) == 1
    with pytest.raises(QueueClosed):
        q.get(timeout=1)


def test_clear_and_drop_older_generations():
    q = BoundedLRUQueue[object](10)
    items = [Item(i, gen) for i, gen in enumerate([1, 2, 1, 3])]
    for it in items:
        q.put(it)
    q.put("control")  # no generation: never stale
    assert q.drop_older_than(2) == 2
    assert [getattr(x, "value", x) for x in q.snapshot()] == [1, 3, "control"]
    assert q.dropped_stale == 2
    assert q.clear() == 3
    assert len(q) == 0


def test_drop_older_than_respects_kinds():
    q = BoundedLRUQueue[object](10)
    q.put(Item(0, 0))
    q.put(Item(1, 0))
    assert q.drop_older_than(5, kinds=(str,)) == 0
    assert q.drop_older_than(5, kinds=(Item,)) == 2


def test_on_put_hook_is_called_per_put():
    calls = []
    q = BoundedLRUQueue[int](1, on_put=lambda: calls.append(1))
    q.put(1)
    q.put(2)
    assert len(calls) == 2


ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 5)),
        st.tuples(st.just("get"), st.just(0)),
        st.tuples(st.just("drop"), st.integers(0, 5)),
        st.tuples(st.just("clear"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(maxsize=st.integers(1, 8), operations=ops)
def test_matches_a_reference_model(maxsize, operations):
    """Against a plain list: FIFO order, capacity bound and exact eviction count."""
    q = BoundedLRUQueue[Item](maxsize)
    model: list[Item] = []
    evicted = 0
    for n, (op, arg) in enumerate(operations):
        if op == "put":
            item = Item(n, arg)
            q.put(item)
            model.append(item)
            if len(model) > maxsize:
                model.pop(0)
                evicted += 1
        elif op == "get":
            if model:
                assert q.get(timeout=0) is model.pop(0)
            else:
                with pytest.raises(TimeoutError):
                    q.get(timeout=0)
        elif op == "drop":
            before = len(model)
            model = [m for m in model if m.generation >= arg]
            assert q.drop_older_than(arg) == before - len(model)
        else:
            assert q.clear() == len(model)
            model = []
        assert q.snapshot() == model
        assert len(q) <= maxsize
        assert q.evicted == evicted


@settings(max_examples=50, deadline=None)
@given(n_producers=st.integers(1, 4), per_producer=st.integers(1, 200), maxsize=st.integers(1, 16))
def test_concurrent_producers_never_block_and_account_for_every_item(n_producers, per_producer, maxsize):
    q = BoundedLRUQueue[int](maxsize)
    threads = [
        threading.Thread(target=lambda: [q.put(i) for i in range(per_producer)]) for _ in range(n_producers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(q) + q.evicted == n_producers * per_producer
    assert len(q) == min(maxsize, n_producers * per_producer)
