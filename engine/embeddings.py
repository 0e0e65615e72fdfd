"""Embedding models as SQL functions.

`embed(text)` runs the built-in all-MiniLM-L6-v2 encoder; `embed(text, 'name')` runs a model
registered with `conn.register_embedding(name, fn, dim)`. Each model is a DataFusion scalar
function over whole Arrow batches: the model sees a list of values per batch, never one row
at a time. NULL in gives NULL out. The built-in model loads on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from datafusion import SessionContext, udf
from sqlglot import exp

from omnilake import errors as E
from omnilake.engine.walk import nodes

DEFAULT_MODEL = "minilm"
FUNCTION = "embed"


@dataclass
class Model:
    name: str
    dimension: int
    encode: Callable[[list], np.ndarray]
    input_type: pa.DataType

    @property
    def function(self) -> str:
        return FUNCTION if self.name == DEFAULT_MODEL else f"__ol_embed_{self.name}"


class Embeddings:
    """The models of one engine, each registered as a function in its DataFusion context."""

    def __init__(self, ctx: SessionContext, device: str, model_dir: str | None):
        self._ctx = ctx
        self._device = device
        self._model_dir = model_dir
        self._models: dict[str, Model] = {}
        self._encoder = None
        self._lock = threading.Lock()
        self.register(DEFAULT_MODEL, self._builtin, 384)

    def _builtin(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            if self._encoder is None:
                from omnilake.gpu import get_backend
                from omnilake.gpu.encoder import TextEncoder
                from omnilake.gpu.models import locate
                self._encoder = TextEncoder(locate(DEFAULT_MODEL, self._model_dir),
                                            backend=get_backend(self._device))
        return self._encoder.encode(texts)

    def register(self, name: str, fn: Callable[[list], np.ndarray], dimension: int,
                 input_type: str = "text") -> None:
        if not name.isidentifier() or name.lower() != name:
            raise E.InvalidParameterValue(f"model name {name!r} must be a lower-case identifier")
        if not 1 <= dimension <= 16000:
            raise E.InvalidParameterValue("an embedding dimension must be between 1 and 16000")
        kinds = {"text": pa.string(), "bytea": pa.binary()}
        if input_type not in kinds:
            raise E.InvalidParameterValue("input_type must be 'text' or 'bytea'")
        model = Model(name, dimension, fn, kinds[input_type])
        self._models[name] = model
        self._ctx.register_udf(udf(self._batch_function(model), [model.input_type],
                                   pa.list_(pa.float32(), dimension), "stable", name=model.function))

    def get(self, name: str) -> Model:
        if name not in self._models:
            raise E.UndefinedFunction(f"no embedding model named {name!r}",
                                      hint="built in: minilm; add others with conn.register_embedding()")
        return self._models[name]

    @staticmethod
    def _batch_function(model: Model):
        def run(values: pa.Array) -> pa.Array:
            items = values.to_pylist()
            present = [i for i, v in enumerate(items) if v is not None]
            out = np.zeros((len(items), model.dimension), dtype=np.float32)
            if present:
                vectors = np.asarray(model.encode([items[i] for i in present]), dtype=np.float32)
                if vectors.shape != (len(present), model.dimension):
                    raise E.DataError(f"embedding model {model.name} returned shape {vectors.shape}, "
                                      f"expected ({len(present)}, {model.dimension})")
                out[present] = vectors
            mask = pa.array([v is None for v in items])
            return pa.FixedSizeListArray.from_arrays(pa.array(out.ravel()), model.dimension, mask=mask)
        return run


def rewrite_model_arguments(tree: exp.Expression, embeddings: Embeddings) -> exp.Expression:
    """`embed(x, 'name')` -> the function registered for model `name`."""
    for call in [n for n in nodes(tree) if isinstance(n, exp.Anonymous)]:
        if call.name.lower() != FUNCTION:
            continue
        args = call.expressions
        if len(args) == 1:
            continue
        if len(args) != 2 or not (isinstance(args[1], exp.Literal) and args[1].is_string):
            raise E.UndefinedFunction("embed() takes a value and an optional model name literal, "
                                      "e.g. embed(body, 'minilm')")
        model = embeddings.get(args[1].this)
        value = args[0].copy()
        if pa.types.is_binary(model.input_type):
            value = exp.cast(value, "BYTEA")  # DataFusion does not coerce BinaryView to Binary
        call.replace(exp.Anonymous(this=model.function, expressions=[value]))
    return tree
