"""One registry of commands feeds the CLI and the jobs: the same words give the same typed config."""

from __future__ import annotations

import re

import pytest
import yaml
from helpers.paths import REPO_ROOT
from typer.testing import CliRunner

from busgen.cli import app
from busgen.commands.registry import COMMANDS, command
from busgen.core.cli_args import config_from_words, defaults_yaml, parse_command
from busgen.core.config import ConfigError


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_resolves_its_config_and_function(name):
    op = COMMANDS[name]
    assert op.config_class.model_fields, name
    assert callable(op.run)
    for field in (*op.positional, *op.location_fields):
        assert field in op.config_class.model_fields, (name, field)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_summary_is_the_config_docstring_and_every_option_has_help(name):
    import inspect

    op = COMMANDS[name]
    assert op.summary and op.summary == inspect.getdoc(op.config_class).splitlines()[0], name
    undocumented = [k for k, f in op.config_class.model_fields.items() if not f.description]
    assert not undocumented, (name, undocumented)


def test_every_job_script_runs_a_registered_operation():
    for script in sorted((REPO_ROOT / "jobs").glob("*.py")):
        if script.name.startswith("_"):
            continue
        called = re.findall(r'run_job\("([\w-]+)"\)', script.read_text())
        assert called and called[0] in COMMANDS, script.name
        assert "sys.path" not in script.read_text(), f"{script.name} edits sys.path"


def test_options_are_read_by_field_type():
    """Text stays text, lists split on commas, mappings take name=value pairs, the rest is YAML."""
    cfg, _ = config_from_words(
        COMMANDS["generate"].config_class,
        ["--model", "007", "--out", "o", "--class-ratio", "benign=0.5,malignant=1", "--steps", "4", "--guidance", "2"],
    )
    assert cfg.model == "007" and cfg.steps == 4 and cfg.guidance == 2.0
    assert cfg.class_ratio == {"benign": 0.5, "malignant": 1.0}
    ingest, _ = config_from_words(
        COMMANDS["ingest"].config_class,
        ["src_dir", "--out", "o", "--classes", "benign,normal", "--allow-root", "/a", "--allow-root", "/b"],
        ("src",),
    )
    assert ingest.src == "src_dir" and ingest.classes == ["benign", "normal"] and ingest.allow_roots == ["/a", "/b"]


def test_precedence_is_defaults_then_file_then_options_then_overrides(tmp_path):
    config = tmp_path / "g.yaml"
    config.write_text("model: from_file\nout: o\nsteps: 3\nguidance: 1.0\n")
    cfg, _ = config_from_words(
        COMMANDS["generate"].config_class, ["--config", str(config), "--steps", "7", "steps=9", "--seed", "5"]
    )
    assert (cfg.model, cfg.steps, cfg.guidance, cfg.seed, cfg.n) == ("from_file", 9, 1.0, 5, 1000)


def test_bad_words_fail_with_the_remedy():
    cls = COMMANDS["generate"].config_class
    with pytest.raises(ConfigError, match="unknown option --modle.*--model"):
        parse_command(cls, ["--modle", "m"])
    with pytest.raises(ConfigError, match="needs a value"):
        parse_command(cls, ["--model"])
    with pytest.raises(ConfigError, match="unexpected argument"):
        parse_command(cls, ["stray"])
    with pytest.raises(ConfigError, match="sampler"):
        config_from_words(cls, ["--model", "m", "--out", "o", "--sampler", "euler"])
    with pytest.raises(ConfigError, match="unknown command"):
        command("pretrian")


def test_config_show_prints_loadable_defaults_for_every_command():
    runner = CliRunner()
    for name, op in COMMANDS.items():
        result = runner.invoke(app, ["config", "show", name])
        assert result.exit_code == 0, (name, result.output)
        data = yaml.safe_load(result.output)
        required = [k for k, v in op.config_class.model_fields.items() if v.is_required()]
        assert set(data) == set(op.config_class.model_fields), name
        assert all(data[k] is None for k in required)
    assert "# required; exported model directory" in defaults_yaml(COMMANDS["generate"].config_class)


def test_cli_user_errors_are_one_error_line_with_status_2(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and missing.output.startswith("error: ") and "does not exist" in missing.output
    typo = runner.invoke(app, ["generate", "--model", "m", "--out", "o", "--stepz", "3"])
    assert typo.exit_code == 2 and "unknown option --stepz" in typo.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    bad_yaml = runner.invoke(app, ["generate", "--config", str(broken)])
    assert bad_yaml.exit_code == 2 and "is not valid YAML at line" in bad_yaml.output and str(broken) in bad_yaml.output


def test_a_multisite_protocol_file_runs_with_multisite_and_evaluate_names_that_command(tmp_path):
    for suite in ("multisite_cpu", "multisite_gpu"):
        cfg, _ = config_from_words(COMMANDS["multisite"].config_class, ["--config", suite, "out=x"])
        assert cfg.protocol == "multisite" and cfg.out == "x"
    spec = tmp_path / "ms.yaml"
    spec.write_text(f"protocol: multisite\nsites: {{a: {tmp_path}/a, b: {tmp_path}/b}}\n")
    result = CliRunner().invoke(app, ["evaluate", "--config", str(spec)])
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert "run it with `busgen multisite`" in result.output and "real_dir" not in result.output


def test_phantom_through_cli_and_job_writes_the_same_bytes(tmp_path):
    """The CLI and `python jobs/<name>.py`-style runs go through the same operation."""
    from busgen.jobrun import run_job

    runner = CliRunner()
    res = runner.invoke(app, ["phantom", "--out", str(tmp_path / "cli"), "--n", "6", "--size", "32"])
    assert res.exit_code == 0, res.output
    results = tmp_path / "results.json"
    code = run_job(
        "phantom", ["--out", str(tmp_path / "job"), "--n", "6", "--size", "32", "--results-fp", str(results)]
    )
    assert code == 0 and '"status": "ok"' in results.read_text()
    cli_files = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*.png"))
    job_files = sorted(p.relative_to(tmp_path / "job") for p in (tmp_path / "job").rglob("*.png"))
    assert cli_files == job_files and len(cli_files) >= 6
    for rel in cli_files:
        assert (tmp_path / "cli" / rel).read_bytes() == (tmp_path / "job" / rel).read_bytes()
