"""The spare core for llama.cpp's steps: taken while nothing else is runnable, given back at once (pure)."""

from voicechat.llm.threads import (
    MAX_ALONE_TOKENS,
    SPIN_S,
    StepThreads,
    StepThreadsOnContext,
    default_threads,
    runnable_threads,
)


def test_the_automatic_setting_takes_the_spare_core_only_on_a_small_machine() -> None:
    assert StepThreads.automatic(0, cpus=2) == StepThreads(shared=1, alone=2)
    assert StepThreads.automatic(0, cpus=4) == StepThreads(shared=3, alone=4)
    assert StepThreads.automatic(0, cpus=16) == StepThreads(shared=8, alone=8)  # half the CPUs, always
    assert StepThreads.automatic(3, cpus=2) == StepThreads(shared=3, alone=3)  # a number is kept
    assert default_threads(2) == 1 and default_threads(16) == 8


def test_a_step_takes_the_spare_core_only_while_nothing_else_is_runnable() -> None:
    policy = StepThreads(shared=1, alone=2)
    assert policy.choose(runnable=1, own_polling=0, n_tokens=1) == 2  # only the asking thread
    assert policy.choose(runnable=2, own_polling=0, n_tokens=1) == 1  # Whisper, Piper or anybody else
    assert policy.choose(runnable=2, own_polling=1, n_tokens=1) == 2  # our own worker, still polling
    assert policy.choose(runnable=3, own_polling=1, n_tokens=1) == 1
    assert policy.choose(runnable=None, own_polling=0, n_tokens=1) == 1  # unknown: shared
    assert policy.choose(runnable=1, own_polling=0, n_tokens=MAX_ALONE_TOKENS) == 2
    assert policy.choose(runnable=1, own_polling=0, n_tokens=MAX_ALONE_TOKENS + 1) == 1  # a long prefill
    assert policy.choose(runnable=1, own_polling=0, n_tokens=2, requests=2) == 1  # two conversations at once


class FakeContext:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def set_threads(self, n: int) -> None:
        self.calls.append(n)


def test_the_context_is_told_only_when_the_choice_changes_and_its_polling_workers_are_not_neighbours() -> None:
    ctx, now, runnable = FakeContext(), [100.0], [1]
    threads = StepThreadsOnContext(ctx, StepThreads(1, 2), read=lambda: runnable[0], clock=lambda: now[0])
    assert threads.before_step(1) == 2 and ctx.calls == [2]
    threads.after_step()
    runnable[0] = 2  # right after a step with 2 threads: the other one is our worker, polling
    now[0] += SPIN_S / 2
    assert threads.before_step(1) == 2 and ctx.calls == [2]  # unchanged: not told again
    threads.after_step()
    now[0] += SPIN_S * 4  # our worker sleeps by now: whoever is runnable is a neighbour
    assert threads.before_step(1) == 1 and ctx.calls == [2, 1]
    threads.after_step()
    runnable[0] = 1
    assert threads.before_step(1) == 2 and ctx.calls == [2, 1, 2]


def test_a_fixed_setting_never_reads_the_kernel() -> None:
    def read() -> int:
        raise AssertionError("read")

    ctx = FakeContext()
    threads = StepThreadsOnContext(ctx, StepThreads(2, 2), read=read)
    assert threads.before_step(1) == 2 and ctx.calls == []


def test_a_step_that_cannot_take_the_spare_core_does_not_read_the_kernel() -> None:
    def read() -> int:
        raise AssertionError("read")

    ctx = FakeContext()
    threads = StepThreadsOnContext(ctx, StepThreads(1, 2), read=read)
    assert threads.before_step(MAX_ALONE_TOKENS + 1) == 1 and threads.before_step(1, requests=2) == 1
    assert ctx.calls == []


def test_the_kernels_count_is_read_from_proc_stat(tmp_path) -> None:
    stat = tmp_path / "stat"
    stat.write_bytes(b"cpu  1 2 3\nprocs_running 3\nprocs_blocked 0\n")
    assert runnable_threads(str(stat)) == 3
    stat.write_bytes(b"cpu  1 2 3\n")
    assert runnable_threads(str(stat)) is None
    assert runnable_threads(str(tmp_path / "missing")) is None
