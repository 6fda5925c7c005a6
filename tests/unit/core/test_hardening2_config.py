"""Config files are trusted, but the error path must not expand what it quotes.

A YAML alias bomb (~400 bytes standing for 9**8 = 43 million strings) in a field of the
wrong type used to spend seconds and hundreds of MB building the ConfigError message,
because the message quoted the whole value with repr(). The message now quotes a bounded
prefix, so the same file fails at once with a short, useful error.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest

from busgen.core.config import ConfigError, load_config, quote
from busgen.generate.config import GenerateConfig


def alias_bomb(levels: int = 8) -> str:
    """``steps:`` as nested lists, each level nine aliases of the one before."""
    lines = ["model: m", "out: o", "steps:", '  - &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for k in range(1, levels):
        lines.append(f"  - &l{k} [" + ",".join([f"*l{k - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_in_a_config_fails_fast_with_a_short_message(tmp_path):
    fp = tmp_path / "bomb.yaml"
    fp.write_text(alias_bomb())
    assert fp.stat().st_size < 512
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigError, match="steps") as err:
            load_config(GenerateConfig, fp)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 3.0, f"{elapsed:.1f} s to build the error"
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB to build the error"
    assert len(str(err.value)) < 1000 and "..." in str(err.value)


def test_quotes_are_bounded_but_small_values_are_quoted_whole():
    assert quote("abc") == "'abc'" and quote([1, 2]) == "[1, 2]" and quote({"a": 1}) == "{'a': 1}"
    nested = [[["x" * 500] * 50] * 50] * 50
    assert len(quote(nested)) <= 200 and len(quote("y" * 10_000)) <= 200
