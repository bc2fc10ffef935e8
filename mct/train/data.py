"""What the training loop reads: held-out records, the training batches, and the validation tensors."""

from __future__ import annotations

import torch

from mct.data.dataset import collate_fn, encode_example, read_records
from mct.data.format import DataFormat
from mct.data.generate import sample_heldout
from mct.data.sampling import LENGTH_WEIGHT_POWERS, mod_partition
from mct.data.stream import GeneratedBatches, PoolBatches, render_problems
from mct.errors import MctError


def heldout_records(config, data_format: DataFormat) -> tuple[list, list]:
    """Validation and test records: from the configured files, or sampled (disjoint) from the task."""
    def read(path):  # answers checked against this format's task before training, not at its end
        return read_records(path, data_format=data_format)

    if config.data.val_path is not None and config.data.test_path is not None:
        return read(config.data.val_path), read(config.data.test_path)
    val, test = sample_heldout(config.data, config.data.n_val, config.data.n_test, config.data.seed)
    if config.data.val_path is not None:
        val = read(config.data.val_path)
    if config.data.test_path is not None:
        test = read(config.data.test_path)
    return val, test


def file_tensors(config, tokenizer, data_format: DataFormat, exclude: set):
    """(input_ids [M, T], labels [M, T], groups [M] or None, dropped) of a training file, encoded as written
    (text path).

    Problems in `exclude` are dropped (never train on a held-out problem), and so are examples longer than
    data.max_seq_len; `dropped` counts the latter. Under data.length_weights = "equal" or "sqrt" (add, sub,
    mul), `groups` numbers each problem's operand-length pair, so that every pair gets an equal share of the
    batches as in the generated stream (or one by the square root of its records): a file written by
    `mct gen` holds each problem once, so its 1-digit pairs are a thousandth of it."""
    path = config.data.train_path
    records = read_records(path, tokenizer, require_target=True, data_format=data_format)
    operands = [data_format.operands_from_prompt(r.prompt) for r in records]
    kept = [(r, ab) for r, ab in zip(records, operands) if ab not in exclude]
    if not kept:
        raise MctError(f"every problem of {path} is in the validation or test set")
    examples = [encode_example(r, tokenizer) for r, _ in kept]
    batch = collate_fn(examples, pad_id=tokenizer.pad_id, step_masking_mode=config.data.step_masking_mode,
                       max_seq_len=config.data.max_seq_len)
    groups = None
    if config.data.length_weights != "size" and data_format.task != "mod":
        pairs = [(len(str(a)), len(str(b))) for (_, (a, b)), e in zip(kept, examples)
                 if len(e.input_ids) <= config.data.max_seq_len]
        number = {pair: i for i, pair in enumerate(sorted(set(pairs)))}
        groups = torch.tensor([number[pair] for pair in pairs])
    return batch["input_ids"], batch["labels"], groups, batch["num_truncated"]


def training_batches(config, tokenizer, data_format: DataFormat, exclude: set, device: torch.device):
    """The batch source of a run: a training file or the mod task's training pairs (a fixed pool,
    reshuffled every epoch), else problems generated on the fly. Returns (source, examples dropped)."""
    batch_size, seed = config.train.batch_size // config.train.grad_accum_steps, config.train.seed
    if config.data.train_path is not None:
        ids, labels, groups, dropped = file_tensors(config, tokenizer, data_format, exclude)
        return PoolBatches(ids, labels, batch_size, device, seed, groups=groups,
                           group_power=LENGTH_WEIGHT_POWERS[config.data.length_weights]), dropped
    if data_format.task == "mod":
        train_pairs, _, _ = mod_partition(config.data.modulus, config.data.train_fraction, config.data.seed)
        pairs = [p for p in train_pairs if p not in exclude]
        if not pairs:
            raise MctError("every training pair of the mod task is held out; lower data.n_val / data.n_test")
        ids, labels = render_problems(data_format, tokenizer, pairs, config.data.step_masking_mode)
        return PoolBatches(ids, labels, batch_size, device, seed), 0
    return GeneratedBatches(config.data, data_format, tokenizer, batch_size, device, exclude, seed), 0


def validation_tensors(records, tokenizer, config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(input_ids, labels, scored) of the records that have targets, or None.

    `scored [N, T]` marks the tokens an exact match is judged on: what the model writes and the step-
    masking mode scores (steps and answer for "none", the answer for "mask_steps", the steps for
    "mask_answer"); labels follow the training loss (for "none" the prompt too)."""
    from mct.data.render import ROLE_ANSWER, ROLE_STEP

    examples = [encode_example(r, tokenizer) for r in records if r.target is not None]
    if not examples:
        return None
    mode = config.data.step_masking_mode
    batch = collate_fn(examples, pad_id=tokenizer.pad_id, step_masking_mode=mode, max_seq_len=config.data.max_seq_len)
    kept = [e for e in examples if len(e) <= config.data.max_seq_len]
    width = batch["input_ids"].shape[1]
    roles = torch.tensor([e.roles + [-1] * (width - len(e)) for e in kept])
    wanted = {"none": (ROLE_STEP, ROLE_ANSWER), "mask_steps": (ROLE_ANSWER,), "mask_answer": (ROLE_STEP,)}[mode]
    scored = torch.zeros_like(roles, dtype=torch.bool)
    for role in wanted:
        scored |= roles == role
    return batch["input_ids"], batch["labels"], scored
