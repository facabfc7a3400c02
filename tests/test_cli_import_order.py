"""The CLI loads llama.cpp's libraries before numpy for the commands that may load a GGUF.

A CUDA build of llama-cpp-python crashed loading any model in processes that had imported numpy
first (docs/benchmarks.md, "GPU (one H200)"). A CPU build does not crash either way, so these tests
check the order, which is what the fix is.
"""

from __future__ import annotations

import subprocess
import sys

from voicechat import cli

ORDER = (
    "import sys; from voicechat import cli; code = cli.main({argv!r}); mods = list(sys.modules); "
    "print(code, 'llama_cpp.llama_cpp' in mods, "
    "'numpy' not in mods or mods.index('llama_cpp.llama_cpp') < mods.index('numpy'))"
)


def run_cli(argv: list[str]) -> str:
    done = subprocess.run([sys.executable, "-c", ORDER.format(argv=argv)], capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_bench_loads_llama_cpp_before_numpy() -> None:
    assert run_cli(["bench", "no-such-bench"]) == "2 True True"  # usage error, after the early import


def test_help_and_plain_commands_do_not_pay_for_it() -> None:
    assert run_cli(["--help"]).startswith("0 False")


def test_too_late_once_numpy_is_in() -> None:
    import numpy  # noqa: F401  (this test process has it already)

    assert cli.import_llama_cpp_first() is False
