"""Suite sections are the library configs they configure, not copies; one sampler type and one guidance default."""

from __future__ import annotations

import pytest

from busgen.core.config import ConfigError, load_config
from busgen.core.types import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
from busgen.eval.suites import GenerateSection, PretrainSection, SamplerStepsSettings, SuiteConfig
from busgen.eval.sweep import TRIALS
from busgen.generate.shards import GenerateConfig
from busgen.train.pretrain import PretrainConfig

SUITE = "platform/busgen/configs/busi_full.yaml"


def test_pretrain_section_has_the_library_fields_minus_the_runners():
    assert set(PretrainSection.model_fields) == set(PretrainConfig.model_fields) - {
        "data_dir",
        "out",
        "storage_path",
        "run_name",
    }
    section = PretrainSection(max_steps=7)
    full = PretrainConfig(**section.model_dump(), data_dir="d", out="o", storage_path="s", run_name="r")
    assert full.max_steps == 7 and full.lr == PretrainConfig(data_dir="d").lr  # defaults are the library's


def test_generate_section_has_the_library_fields_minus_the_runners():
    assert set(GenerateSection.model_fields) == set(GenerateConfig.model_fields) - {"model", "out", "class_ratio"}
    section = GenerateSection()
    assert (section.sampler, section.guidance) == (DEFAULT_SAMPLER, DEFAULT_GUIDANCE)
    assert GenerateConfig(**section.model_dump(), model="m", out="o").n == section.n


def test_runner_owned_and_unknown_keys_are_rejected_at_load():
    with pytest.raises(ConfigError, match="data_dir"):
        load_config(SuiteConfig, SUITE, ["pretrain.data_dir=elsewhere"])
    with pytest.raises(ConfigError, match="model"):
        load_config(SuiteConfig, SUITE, ["generate.model=elsewhere"])
    with pytest.raises(ConfigError, match="sampler"):
        load_config(SuiteConfig, SUITE, ["generate.sampler=euler"])
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(SuiteConfig, SUITE, ["pretrain.max_steps=lots"])


def test_library_bounds_hold_in_the_suite():
    with pytest.raises(ConfigError, match="n"):
        load_config(SuiteConfig, SUITE, ["generate.n=0"])


def test_sampler_choices_and_guidance_default_are_shared():
    assert SamplerStepsSettings().guidance == DEFAULT_GUIDANCE
    with pytest.raises(ConfigError, match="samplers"):
        load_config(SuiteConfig, SUITE, ["sampler_steps.samplers=[euler]"])
    for kind in ("fid", "sample"):
        settings = TRIALS[kind].settings
        assert settings.model_fields["guidance"].default == DEFAULT_GUIDANCE
        assert settings.model_fields["sampler"].default == DEFAULT_SAMPLER


def test_dry_run_shrinks_the_embedded_library_sections():
    cfg = load_config(SuiteConfig, SUITE, ["dry_run=true"]).shrunk()
    assert cfg.pretrain.max_steps == 2 and cfg.generate.n == 16 and cfg.utility.classifier.epochs == 1
    assert isinstance(cfg.pretrain, PretrainSection) and isinstance(cfg.generate, GenerateSection)
