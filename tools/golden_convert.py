"""Golden logits for the safetensors -> GGUF converter, from HF transformers.

    python tools/golden_convert.py        # writes golden/convert/tiny_hf_llama.npz

Needs the ``reference`` extra (torch, transformers).  The model directory comes from
tools/make_tiny_hf_model.py (seed 0); transformers loads it as is (BF16 weights,
computed in float32) and we keep the logits at every position of a few prompts:

    p{i}_ids      int32[n]              the prompt's token ids (HF tokenizers)
    p{i}_logits   float32[n, n_vocab]   transformers' LlamaForCausalLM logits

tests/test_store_convert.py converts the same directory with refllm and compares.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
OUT = REPO / "golden" / "convert" / "tiny_hf_llama.npz"
PROMPTS = ["the sky is blue", "<|im_start|>user\nwhy 42?<|im_end|>\n<|im_start|>assistant\n", "on and on, there were 7 sheep"]


def main() -> int:
    import torch
    import transformers
    from tokenizers import Tokenizer

    from make_tiny_hf_model import write_tiny_hf_llama

    with tempfile.TemporaryDirectory() as tmp:
        directory = write_tiny_hf_llama(Path(tmp) / "tiny-hf-llama", seed=0)
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        model = transformers.LlamaForCausalLM.from_pretrained(directory, torch_dtype=torch.float32)
        model.eval()
        arrays = {}
        for i, prompt in enumerate(PROMPTS):
            ids = tokenizer.encode(prompt, add_special_tokens=False).ids
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0].numpy().astype(np.float32)
            arrays[f"p{i}_ids"] = np.asarray(ids, dtype=np.int32)
            arrays[f"p{i}_logits"] = logits
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    (OUT.parent / "manifest.json").write_text(json.dumps({
        "prompts": PROMPTS, "transformers": transformers.__version__, "torch": torch.__version__,
        "command": "python tools/golden_convert.py",
    }, indent=2))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
