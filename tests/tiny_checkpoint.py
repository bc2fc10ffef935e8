"""Helpers shared by the evaluation tests: a tiny random checkpoint and an oracle model."""

from pathlib import Path

import torch

from mct.config import Config, DataConfig, ModelConfig


def tiny_config(task="add", answer_order="reversed", use_steps=False, max_seq_len=24, num_layers=2,
                num_heads=2, step_masking_mode="mask_steps", pad_operands=False, d_ff=32) -> Config:
    from mct.tokenizer import Tokenizer

    model = ModelConfig(vocab_size=len(Tokenizer()), d_model=16, num_layers=num_layers, num_heads=num_heads,
                        d_ff=d_ff, max_seq_len=max_seq_len)
    data = DataConfig(task=task, answer_order=answer_order, use_steps=use_steps, max_seq_len=max_seq_len,
                      max_digits=3, step_masking_mode=step_masking_mode, pad_operands=pad_operands)
    return Config(model=model, data=data)


def make_checkpoint(path: Path, seed: int = 0, **config_fields) -> Path:
    """A randomly initialised model saved as a real checkpoint (its answers are nonsense)."""
    from mct.checkpoint import save_checkpoint
    from mct.data.format import DataFormat
    from mct.model import create_model
    from mct.tokenizer import Tokenizer

    torch.manual_seed(seed)
    config = tiny_config(**config_fields)
    model = create_model(config.model)
    save_checkpoint(path, model, config, Tokenizer(), DataFormat.from_config(config.data).to_dict())
    return path


class OracleModel(torch.nn.Module):
    """Writes the right text for every left-padded prompt (pins padding, ordering and parsing), as a model
    trained with `step_masking_mode` would: under none the whole target; under mask_steps the answer, and
    only after the reference steps (without them it writes just <eos>, as an untrained reader would fail);
    under mask_answer the steps and then more made-up steps (it never learned to stop)."""

    def __init__(self, tokenizer, data_format, max_seq_len=32, step_masking_mode="none"):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = ModelConfig(vocab_size=len(tokenizer), d_model=8, num_heads=2, num_layers=1, d_ff=8,
                                  max_seq_len=max_seq_len)
        self.tokenizer, self.data_format, self.calls = tokenizer, data_format, []
        self.step_masking_mode, self.prompts = step_masking_mode, []

    def _write(self, prompt: str) -> str:
        problem, _, after = prompt.partition("=")
        target = self.data_format.target(self.data_format.operands_from_prompt(problem + "="))
        steps, answer = target[:target.index("#")], target[target.index("#"):]
        if self.step_masking_mode == "mask_steps":
            return answer if after == steps else "<eos>"
        if self.step_masking_mode == "mask_answer":
            return steps + "9+9+9=99|" * 4
        return target

    def num_parameters(self) -> int:
        return 1

    def generate(self, input_ids, max_new_tokens, attention_mask=None, temperature=0.0, top_k=None,
                 eos_token_id=None, pad_token_id=0, use_cache=True):
        self.calls.append((tuple(input_ids.shape), max_new_tokens))
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            assert mask == sorted(mask), "prompts must be left-padded"
            prompt = self.tokenizer.decode([i for i, m in zip(ids, mask) if m])
            self.prompts.append(prompt)
            new = (self.tokenizer.encode(self._write(prompt)) + [pad_token_id] * max_new_tokens)[:max_new_tokens]
            rows.append(ids + new)
        return torch.tensor(rows)
