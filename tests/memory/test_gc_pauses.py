"""The startup heap is frozen out of full collections; what comes later is still collected."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import gc, weakref
import numpy  # a realistic startup heap
from voicechat.memory.gc_pauses import freeze_startup_heap
frozen = freeze_startup_heap()
class Node:
    pass
node = Node()
node.self = node  # a cycle: only the collector can free it
ref = weakref.ref(node)
del node
gc.collect()
print(frozen, gc.get_freeze_count() == frozen, ref() is None)
"""


def test_startup_objects_are_frozen_and_later_cycles_still_collected() -> None:
    # In a child process: freezing the test runner's own heap would outlive this test.
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60, check=True)
    frozen, all_stay_frozen, collected = out.stdout.split()
    assert int(frozen) > 10_000  # modules, numpy: what a started server holds for good
    assert all_stay_frozen == "True"
    assert collected == "True"
