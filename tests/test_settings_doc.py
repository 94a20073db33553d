"""The README's settings reference is generated from the settings models and cannot drift from them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from bot import settings_doc
from bot.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

NOT_SETTINGS = {"PARLEY_CA_BUNDLE": ROOT / "compose.yaml"}
"""``PARLEY_…`` names the README mentions that are not settings, with the file that defines each."""


def test_the_readme_holds_the_generated_reference() -> None:
    found = settings_doc.readme_block(README.read_text(encoding="utf-8"))
    assert found is not None, f"README.md has no block between {settings_doc.START!r} and {settings_doc.END!r}"
    assert found == settings_doc.block(), (
        "README.md's settings reference differs from the settings models: run `parley settings-doc --write` "
        "(descriptions live in the field docstrings of bot/settings.py)"
    )


def test_the_readme_has_one_settings_reference() -> None:
    text = README.read_text(encoding="utf-8")
    header = "| setting | default | meaning |"
    assert text.count(settings_doc.END) == 1
    assert text.count(header) == (settings_doc.readme_block(text) or "").count(header), (
        "a settings table outside the generated block"
    )


def test_every_field_of_every_settings_model_has_a_description() -> None:
    undocumented = [name for name, info in settings_doc.every_field() if not (info.description or "").strip()]
    assert not undocumented, f"give these fields a docstring in bot/settings.py: {undocumented}"


def test_the_reference_lists_every_setting_once() -> None:
    reference = settings_doc.reference()
    listed = re.findall(r"^\| `(PARLEY_[A-Z0-9_<>]+)` \|", reference, re.MULTILINE)
    settings = [
        name
        for group in settings_doc.GROUPS
        for part in group.parts
        if isinstance(part, str)
        for name, _ in settings_doc.fields(part)
    ]
    assert len(listed) == len(set(listed))
    assert set(listed) == {*settings, settings_doc.PLUGIN_SETTINGS.name}
    nested = {name for name, info in settings_doc.every_field() if name not in settings}
    groups = {
        settings_doc.env_name(part)
        for group in settings_doc.GROUPS
        for part in group.parts
        if isinstance(part, str) and part
    }
    assert nested == groups, "a settings model that no README group lists"


def test_every_parley_name_in_the_readme_is_a_setting() -> None:
    known = {name for name, _ in settings_doc.every_field()}
    stale = []
    for match in re.finditer(r"PARLEY_[A-Z0-9_<>]*", README.read_text(encoding="utf-8")):
        name = match.group(0).rstrip("_")  # `PARLEY_LIMITS__…` names a group
        if name in known or name in {"PARLEY", settings_doc.PLUGIN_SETTINGS.name}:
            continue
        if re.fullmatch(r"PARLEY_PLUGINS__[A-Z0-9_]+?__[A-Z0-9_]+", name):  # a plugin's own setting
            continue
        model = re.fullmatch(r"PARLEY_MODELS__(?:<NAME>|[A-Z0-9]+)__(<FIELD>|[A-Z0-9_]+)", name)
        if model and (model.group(1) == "<FIELD>" or f"PARLEY_ENGINE__{model.group(1)}" in known):
            continue  # a named model's field: any of the engine's
        if name in NOT_SETTINGS and name in NOT_SETTINGS[name].read_text(encoding="utf-8"):
            continue
        stale.append(name)
    assert not stale, f"README.md names settings that do not exist: {sorted(set(stale))}"


def test_defaults_are_shown_as_the_readme_writes_them() -> None:
    rows = {row.name: row for part in ("", "engine", "web", "slack") for row in settings_doc.rows(part)}
    assert rows["`PARLEY_ENGINE__N_CTX`"].default == "`2048`"
    assert rows["`PARLEY_ENGINE__KV_CACHE_DIR`"].default == "none"
    assert rows["`PARLEY_WEB__API_KEYS`"].default == "empty"
    assert rows["`PARLEY_WEB__ENABLED`"].default == "`true`"
    assert rows["`PARLEY_SLACK__COMMAND_PREFIX`"].default == "empty"
    assert rows["`PARLEY_ENGINE__THREADS`"].default.startswith("the CPUs up to 4")  # computed: the doc override
    assert rows["`PARLEY_ENGINE__SEED`"].default == "random"


def test_a_computed_default_must_be_described() -> None:
    class Computed(BaseModel):
        threads: int = Field(default_factory=lambda: 4)
        described: int = Field(default_factory=lambda: 4, json_schema_extra={"doc_default": "the ``CPUs``"})

    with pytest.raises(ValueError, match="doc_default"):
        settings_doc.default_of("PARLEY_X", Computed.model_fields["threads"])
    assert settings_doc.default_of("PARLEY_X", Computed.model_fields["described"]) == "the `CPUs`"


def test_settings_doc_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings-doc"]) == 0
    assert capsys.readouterr().out == settings_doc.reference()


def test_settings_doc_write_replaces_only_the_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nIntro.\n\n", "\n\n## Next\n\nMore.\n"
    readme.write_text(f"{before}{settings_doc.START}\n\n| stale | table |\n{settings_doc.END}{after}")
    assert main(["settings-doc", "--write", "--readme", str(readme)]) == 0
    assert readme.read_text() == f"{before}{settings_doc.block()}{after}"
    assert "updated" in capsys.readouterr().out
    assert main(["settings-doc", "--write", "--readme", str(readme)]) == 0
    assert "already up to date" in capsys.readouterr().out


def test_settings_doc_write_without_markers_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n")
    assert main(["settings-doc", "--write", "--readme", str(readme)]) == 1
    assert "no settings reference block" in capsys.readouterr().err
    assert readme.read_text() == "# Title\n"
