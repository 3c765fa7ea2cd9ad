"""Load and validate the codebook YAML; its version is a hash of its content."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import yaml

from pipeline.errors import CodebookError
from pipeline.schemas import Code, Codebook

CODE_ID = re.compile(r"^(LA|BR)\d{2}$")
REQUIRED_FIELDS = ("id", "family", "label", "definition", "framework_area", "include", "exclude", "examples")
MIN_EXAMPLES = 4


def load_codebook(path: Path | str) -> Codebook:
    """Read, validate and version a codebook file.

    Every problem is collected before raising, so one run of the loader tells
    the codebook's editor everything that needs fixing.

    Examples
    --------
    >>> from pipeline.config import Settings
    >>> book = load_codebook(Settings().codebook_path)
    >>> book.code("LA01").family
    'leadership action'
    """
    path = Path(path)
    try:
        # libyaml's loader where installed: the pure-Python one took 0.4 s per load of the shipped codebook
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise CodebookError(path, ["file not found; pass --codebook with the path of a codebook YAML"]) from None
    except yaml.YAMLError as exc:
        raise CodebookError(path, [f"not valid YAML: {exc}"]) from None
    except UnicodeDecodeError:
        raise CodebookError(path, ["is not UTF-8 text; open it in an editor and save it as UTF-8"]) from None
    return parse_codebook(raw, source=path)


def parse_codebook(raw: object, *, source: Path | str = "<codebook>") -> Codebook:
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise CodebookError(source, ["top level must be a mapping with 'families', 'framework_areas' and 'codes'"])
    families = raw.get("families") or {}
    areas = raw.get("framework_areas") or []
    if not isinstance(families, dict) or not families:
        problems.append("'families' must map id prefixes to family names, e.g. LA: leadership action")
        families = {}
    if not isinstance(areas, list) or not areas:
        problems.append("'framework_areas' must be a non-empty list")
        areas = []
    family_names = set(families.values())
    raw_codes = raw.get("codes")
    if not isinstance(raw_codes, list) or not raw_codes:
        problems.append("'codes' must be a non-empty list")
        raw_codes = []

    codes: list[Code] = []
    seen: set[str] = set()
    for position, entry in enumerate(raw_codes, start=1):
        name = f"code #{position}"
        if not isinstance(entry, dict):
            problems.append(f"{name}: must be a mapping of fields")
            continue
        code_id = entry.get("id")
        if isinstance(code_id, str):
            name = f"code {code_id} (#{position})"
        missing = [f for f in REQUIRED_FIELDS if f not in entry or entry[f] in (None, "")]
        for f in missing:
            problems.append(f"{name}: missing field '{f}'")
        if not isinstance(code_id, str) or not CODE_ID.match(code_id):
            if "id" not in missing:
                problems.append(f"{name}: field 'id' is malformed ({code_id!r}); ids look like LA01 or BR09")
            continue
        if code_id in seen:
            problems.append(f"{name}: field 'id' duplicates an earlier code; ids must be unique")
            continue
        seen.add(code_id)
        family = entry.get("family")
        if "family" not in missing and (not isinstance(family, str) or family not in family_names):
            problems.append(f"{name}: field 'family' has unknown value {family!r}; use one of {sorted(family_names)}")
        elif family in family_names and families.get(code_id[:2]) != family:
            problems.append(f"{name}: field 'family' is {family!r} but the id prefix {code_id[:2]} means {families.get(code_id[:2])!r}")
        area = entry.get("framework_area")
        if "framework_area" not in missing and area not in areas:
            problems.append(f"{name}: field 'framework_area' has unknown value {area!r}; add it to 'framework_areas' or fix the spelling")
        lists = {}
        for f in ("include", "exclude", "examples", "restatements"):
            value = entry.get(f) or []
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                problems.append(f"{name}: field '{f}' must be a list of non-empty strings")
                value = []
            lists[f] = tuple(v.strip() for v in value)
        if "examples" not in missing and len(lists["examples"]) < MIN_EXAMPLES:
            problems.append(f"{name}: field 'examples' has {len(lists['examples'])}; at least {MIN_EXAMPLES} are needed")
        if missing:
            continue
        codes.append(Code(
            id=code_id, family=family, label=str(entry["label"]).strip(),
            definition=str(entry["definition"]).strip(), framework_area=area,
            include=lists["include"], exclude=lists["exclude"], examples=lists["examples"],
            restatements=lists["restatements"],
        ))

    uncoded = raw.get("uncoded_examples") or []
    if not isinstance(uncoded, list) or not all(isinstance(v, str) for v in uncoded):
        problems.append("'uncoded_examples' must be a list of strings")
        uncoded = []
    retired = raw.get("retired_codes") or {}
    current_ids = {c.id for c in codes}
    if not isinstance(retired, dict):
        problems.append("'retired_codes' must map each retired id to its replacement id, or to null to drop it")
        retired = {}
    for old, new in retired.items():
        if not isinstance(old, str) or not CODE_ID.match(old):
            problems.append(f"retired_codes: {old!r} is not a code id (ids look like LA01 or BR09)")
        elif old in current_ids:
            problems.append(f"retired_codes: {old} is still a code in 'codes'; remove it there or from retired_codes")
        if new is not None and new not in current_ids:
            problems.append(f"retired_codes: {old} maps to {new!r}, which is not a code in 'codes'; use a current id or null")
    if problems:
        raise CodebookError(source, problems)
    return Codebook(
        name=str(raw.get("name", "codebook")),
        version=codebook_version(raw),
        codes=tuple(codes),
        uncoded_examples=tuple(u.strip() for u in uncoded),
        retired_codes=tuple(sorted(retired.items())),
    )


def codebook_version(raw: object) -> str:
    """Hash of the parsed content: comments and layout don't change the version, wording does."""
    canonical = json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]
