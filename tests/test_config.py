"""Config presets and .config fragments."""

from __future__ import annotations

import pytest

from pervma import Config
from pervma.errors import ConfigError


def test_presets() -> None:
    assert Config.preset("legacy").PER_VMA_LOCK is False
    u = Config.preset("universal")
    assert (u.SMP, u.PREEMPT, u.PER_VMA_LOCK, u.PER_VMA_LOCK_STATS) == (True, True, True, True)
    up = Config.preset("universal-up")
    assert (up.SMP, up.PREEMPT, up.nr_cpus) == (False, True, 1)
    np = Config.preset("universal-up-nopreempt")
    assert (np.SMP, np.PREEMPT) == (False, False)


def test_legacy_up_is_the_pre_series_uniprocessor_world() -> None:
    c = Config.preset("legacy-up")
    assert (c.SMP, c.PREEMPT, c.PER_VMA_LOCK, c.PER_VMA_LOCK_STATS, c.SERIES_CALLERS) == (
        False, True, False, False, False)
    assert c.nr_cpus == 1 and c.one_cpu


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'univeral'; choose one of legacy, universal"):
        Config.preset("univeral")


def test_fragment_applies_and_lists_unknown_options() -> None:
    cfg = Config.from_fragment(
        "CONFIG_SMP=n\n# CONFIG_PREEMPT is not set\nCONFIG_ARM64=y\nCONFIG_FOO=y\n# comment\n")
    assert (cfg.SMP, cfg.PREEMPT, cfg.arch, cfg.nr_cpus) == (False, False, "arm64", 1)
    assert cfg.unknown == ("CONFIG_FOO",)
    legacy = Config.from_fragment("# CONFIG_PER_VMA_LOCK is not set\n")
    assert legacy.PER_VMA_LOCK is False and legacy.PER_VMA_LOCK_STATS is False


@pytest.mark.parametrize(("text", "msg"), [
    ("CONFIG_SMP=y\nSMP=y\n", "line 2: malformed .config line 'SMP=y'"),
    ("CONFIG_SMP=maybe\n", "line 1: CONFIG_SMP is a bool"),
    ("CONFIG_NR_CPUS=x\n", "line 1: CONFIG_NR_CPUS wants a positive number"),
])
def test_malformed_fragment_is_one_line_naming_the_line(text: str, msg: str) -> None:
    with pytest.raises(ConfigError) as e:
        Config.from_fragment(text)
    assert msg in str(e.value) and "\n" not in str(e.value)
