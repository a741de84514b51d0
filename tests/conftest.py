import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


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
