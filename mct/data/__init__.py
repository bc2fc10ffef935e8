"""Arithmetic data: tasks and step traces, the text format, balanced disjoint generation, and the
training dataset / collate / on-the-fly stream. See docs/data-format.md."""

from mct.data.dataset import Example, ProblemStream, Record, collate_fn, encode_example, read_records
from mct.data.format import DataFormat, ParsedCompletion
from mct.data.generate import generate_splits, sample_heldout, write_dataset

__all__ = [
    "DataFormat", "ParsedCompletion", "Record", "Example", "read_records", "encode_example", "collate_fn",
    "ProblemStream", "generate_splits", "write_dataset", "sample_heldout",
]
