"""Arithmetic data: tasks and step traces, the text format and its batch path, balanced disjoint
generation, records / collate, and training batches on the device. See docs/data-format.md."""

from mct.data.dataset import Example, Record, collate_fn, encode_example, read_records
from mct.data.format import DataFormat, ParsedCompletion
from mct.data.generate import generate_splits, sample_heldout, write_dataset
from mct.data.render import BatchRenderer, Digits
from mct.data.stream import GeneratedBatches, PoolBatches

__all__ = [
    "DataFormat", "ParsedCompletion", "Record", "Example", "read_records", "encode_example", "collate_fn",
    "BatchRenderer", "Digits", "GeneratedBatches", "PoolBatches", "generate_splits", "write_dataset",
    "sample_heldout",
]
