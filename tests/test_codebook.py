"""pipeline/codebook.py: the shipped codebook, content versioning and validation messages."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from pipeline.codebook import load_codebook
from pipeline.config import Settings
from pipeline.errors import CodebookError

SHIPPED = Settings().codebook_path


def minimal_raw() -> dict:
    """A small valid codebook: two families, two framework areas, one code of each family."""
    def code(code_id, family, area):
        return {
            "id": code_id, "family": family, "label": f"Label {code_id}",
            "definition": f"Definition of {code_id}.", "framework_area": area,
            "include": [f"include {code_id}"], "exclude": [f"exclude {code_id}"],
            "examples": [f"example {i} of {code_id}" for i in range(1, 5)],
        }
    return {
        "name": "mini",
        "families": {"LA": "leadership action", "BR": "barrier"},
        "framework_areas": ["employees", "external context"],
        "codes": [code("LA01", "leadership action", "employees"), code("BR01", "barrier", "external context")],
        "uncoded_examples": ["Did you find us all right?"],
    }


def write_yaml(tmp_path: Path, raw: object, name: str = "book.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def problems_of(tmp_path: Path, raw: object) -> tuple[str, list[str]]:
    path = write_yaml(tmp_path, raw)
    with pytest.raises(CodebookError) as info:
        load_codebook(path)
    assert info.value.path == path
    assert str(info.value).startswith(f"codebook {path} is invalid:")
    return str(info.value), info.value.problems


# --------------------------------------------------------------------------- the shipped codebook

def test_shipped_codebook_loads(codebook):
    assert len(codebook.codes) == 24
    assert codebook.ids == tuple(f"LA{i:02d}" for i in range(1, 16)) + tuple(f"BR{i:02d}" for i in range(1, 10))
    assert codebook.name == "leadership-for-innovation"
    assert re.fullmatch(r"[0-9a-f]{12}", codebook.version)
    for code in codebook.codes:
        assert len(code.examples) >= 4, code.id
        assert code.family == ("leadership action" if code.id.startswith("LA") else "barrier")
        assert code.label and code.definition and code.framework_area
        assert code.include and code.exclude
        assert len(code.restatements) >= 10, code.id
    assert codebook.code("LA02").label == "Innovative partnerships"
    assert codebook.uncoded_examples
    with pytest.raises(KeyError):
        codebook.code("LA99")


def test_minimal_codebook_loads(tmp_path):
    book = load_codebook(write_yaml(tmp_path, minimal_raw()))
    assert book.ids == ("LA01", "BR01")
    assert book.code("BR01").examples == tuple(f"example {i} of BR01" for i in range(1, 5))
    assert book.uncoded_examples == ("Did you find us all right?",)
    assert book.code("BR01").restatements == ()


def test_restatements_are_optional_lists_of_text(tmp_path):
    raw = minimal_raw()
    raw["codes"][0]["restatements"] = ["  Leaders in most councils shared one ambition.  "]
    assert load_codebook(write_yaml(tmp_path, raw)).code("LA01").restatements == (
        "Leaders in most councils shared one ambition.",)
    raw["codes"][0]["restatements"] = "one long string"
    _, problems = problems_of(tmp_path, raw)
    assert problems == ["code LA01 (#1): field 'restatements' must be a list of non-empty strings"]


# --------------------------------------------------------------------------- versioning

def test_version_stable_for_same_content_and_location(tmp_path, codebook):
    copy_path = tmp_path / "copy.yaml"
    copy_path.write_bytes(SHIPPED.read_bytes())
    assert load_codebook(SHIPPED).version == codebook.version
    assert load_codebook(copy_path).version == codebook.version


def test_version_changes_when_a_definition_changes(tmp_path, codebook):
    raw = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    raw["codes"][3]["definition"] += " Including small pilots."
    changed = load_codebook(write_yaml(tmp_path, raw))
    assert changed.version != codebook.version
    assert changed.ids == codebook.ids


def test_version_changes_when_an_example_is_reworded(tmp_path):
    raw = minimal_raw()
    before = load_codebook(write_yaml(tmp_path, raw, "a.yaml")).version
    raw["codes"][1]["examples"][0] = "example one of BR01"
    assert load_codebook(write_yaml(tmp_path, raw, "b.yaml")).version != before


def test_version_unchanged_by_comments_and_formatting(tmp_path, codebook):
    raw = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    reformatted = ("# Edited by the research team: comments and layout only.\n"
                   + yaml.safe_dump(raw, default_flow_style=True, width=60, indent=4, sort_keys=True)
                   + "\n# trailing comment\n")
    path = tmp_path / "reformatted.yaml"
    path.write_text(reformatted, encoding="utf-8")
    assert path.read_text(encoding="utf-8") != SHIPPED.read_text(encoding="utf-8")
    assert load_codebook(path).version == codebook.version


def test_version_unchanged_by_inline_comments_in_the_shipped_file(tmp_path, codebook):
    lines = SHIPPED.read_text(encoding="utf-8").splitlines()
    commented = [line + "  # reviewed" if line.strip().startswith("- id:") else line for line in lines]
    path = tmp_path / "commented.yaml"
    path.write_text("\n".join(["# header comment", ""] + commented) + "\n", encoding="utf-8")
    assert load_codebook(path).version == codebook.version


# --------------------------------------------------------------------------- validation

def test_duplicate_id(tmp_path):
    raw = minimal_raw()
    raw["codes"][1] = copy.deepcopy(raw["codes"][0])
    message, problems = problems_of(tmp_path, raw)
    assert problems == ["code LA01 (#2): field 'id' duplicates an earlier code; ids must be unique"]
    assert "LA01" in message and "'id'" in message


@pytest.mark.parametrize("bad_id", ["LA1", "XX01", "la01", "LA001"])
def test_malformed_id(tmp_path, bad_id):
    raw = minimal_raw()
    raw["codes"][0]["id"] = bad_id
    _, problems = problems_of(tmp_path, raw)
    assert problems == [f"code {bad_id} (#1): field 'id' is malformed ('{bad_id}'); ids look like LA01 or BR09"]


def test_non_string_id_is_malformed(tmp_path):
    raw = minimal_raw()
    raw["codes"][0]["id"] = 101
    _, problems = problems_of(tmp_path, raw)
    assert problems == ["code #1: field 'id' is malformed (101); ids look like LA01 or BR09"]


@pytest.mark.parametrize("field", ["family", "label", "definition", "framework_area", "include", "exclude", "examples"])
def test_missing_field(tmp_path, field):
    raw = minimal_raw()
    del raw["codes"][1][field]
    _, problems = problems_of(tmp_path, raw)
    assert f"code BR01 (#2): missing field '{field}'" in problems
    assert all(p.startswith("code BR01 (#2): ") for p in problems)


def test_missing_id_names_the_position(tmp_path):
    raw = minimal_raw()
    del raw["codes"][1]["id"]
    _, problems = problems_of(tmp_path, raw)
    assert problems == ["code #2: missing field 'id'"]


def test_empty_definition_counts_as_missing(tmp_path):
    raw = minimal_raw()
    raw["codes"][0]["definition"] = ""
    _, problems = problems_of(tmp_path, raw)
    assert problems == ["code LA01 (#1): missing field 'definition'"]


def test_unknown_family(tmp_path):
    raw = minimal_raw()
    raw["codes"][0]["family"] = "leadership actions"
    _, problems = problems_of(tmp_path, raw)
    assert problems == ["code LA01 (#1): field 'family' has unknown value 'leadership actions'; "
                        "use one of ['barrier', 'leadership action']"]


def test_family_given_as_a_list_is_reported_not_crashed(tmp_path):
    raw = minimal_raw()
    raw["codes"][0]["family"] = ["leadership action"]
    _, problems = problems_of(tmp_path, raw)
    assert problems == ["code LA01 (#1): field 'family' has unknown value ['leadership action']; "
                        "use one of ['barrier', 'leadership action']"]


def test_family_that_contradicts_the_id_prefix(tmp_path):
    raw = minimal_raw()
    raw["codes"][0]["family"] = "barrier"
    _, problems = problems_of(tmp_path, raw)
    assert problems == ["code LA01 (#1): field 'family' is 'barrier' but the id prefix LA means 'leadership action'"]


def test_unknown_framework_area(tmp_path):
    raw = minimal_raw()
    raw["codes"][1]["framework_area"] = "external contexts"
    _, problems = problems_of(tmp_path, raw)
    assert problems == ["code BR01 (#2): field 'framework_area' has unknown value 'external contexts'; "
                        "add it to 'framework_areas' or fix the spelling"]


def test_too_few_examples(tmp_path):
    raw = minimal_raw()
    raw["codes"][1]["examples"] = ["one", "two", "three"]
    _, problems = problems_of(tmp_path, raw)
    assert problems == ["code BR01 (#2): field 'examples' has 3; at least 4 are needed"]


def test_examples_must_be_non_empty_strings(tmp_path):
    raw = minimal_raw()
    raw["codes"][0]["include"] = ["fine", "   "]
    _, problems = problems_of(tmp_path, raw)
    assert problems == ["code LA01 (#1): field 'include' must be a list of non-empty strings"]


def test_all_problems_reported_at_once(tmp_path):
    raw = minimal_raw()
    raw["codes"][0]["framework_area"] = "nowhere"
    raw["codes"][1]["examples"] = ["just one"]
    extra = copy.deepcopy(raw["codes"][0])
    extra["id"] = "LA1"
    duplicate = copy.deepcopy(minimal_raw()["codes"][1])
    missing = copy.deepcopy(minimal_raw()["codes"][0])
    missing["id"] = "LA02"
    del missing["label"]
    raw["codes"] += [extra, duplicate, missing]
    message, problems = problems_of(tmp_path, raw)
    assert problems == [
        "code LA01 (#1): field 'framework_area' has unknown value 'nowhere'; add it to 'framework_areas' or fix the spelling",
        "code BR01 (#2): field 'examples' has 1; at least 4 are needed",
        "code LA1 (#3): field 'id' is malformed ('LA1'); ids look like LA01 or BR09",
        "code BR01 (#4): field 'id' duplicates an earlier code; ids must be unique",
        "code LA02 (#5): missing field 'label'",
    ]
    for problem in problems:
        assert f"\n  - {problem}" in message


@pytest.mark.parametrize("raw, expected", [
    ({"families": {}, "framework_areas": ["a"], "codes": []},
     ["'families' must map id prefixes to family names, e.g. LA: leadership action", "'codes' must be a non-empty list"]),
    ({"families": {"LA": "leadership action"}, "framework_areas": "a", "codes": ["LA01"]},
     ["'framework_areas' must be a non-empty list", "code #1: must be a mapping of fields"]),
])
def test_top_level_structure_problems(tmp_path, raw, expected):
    _, problems = problems_of(tmp_path, raw)
    assert problems == expected


def test_top_level_must_be_a_mapping(tmp_path):
    _, problems = problems_of(tmp_path, ["not", "a", "mapping"])
    assert problems == ["top level must be a mapping with 'families', 'framework_areas' and 'codes'"]


def test_uncoded_examples_must_be_strings(tmp_path):
    raw = minimal_raw()
    raw["uncoded_examples"] = "a single string"
    _, problems = problems_of(tmp_path, raw)
    assert problems == ["'uncoded_examples' must be a list of strings"]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(CodebookError) as info:
        load_codebook(path)
    assert str(info.value) == (f"codebook {path} is invalid:\n"
                               "  - file not found; pass --codebook with the path of a codebook YAML")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("families:\n  LA: [unclosed\ncodes: []\n", encoding="utf-8")
    with pytest.raises(CodebookError) as info:
        load_codebook(path)
    assert str(info.value).startswith(f"codebook {path} is invalid:\n  - not valid YAML:")
    assert "line" in str(info.value)


def test_codebook_saved_as_windows_1252_gets_a_clear_error(tmp_path):
    path = tmp_path / "cp1252.yaml"
    text = yaml.safe_dump(minimal_raw(), sort_keys=False).replace("Definition of LA01.", "Café “quoted” definition.")
    path.write_bytes(text.encode("cp1252"))
    with pytest.raises(CodebookError) as info:
        load_codebook(path)
    assert info.value.problems == ["is not UTF-8 text; open it in an editor and save it as UTF-8"]
    assert str(path) in str(info.value)
