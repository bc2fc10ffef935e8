"""Training, in named parts: `run_folder` (what a run writes), `data` (batches on the device), `step`
(`TrainState`, the sync-free `train_step`, CUDA graphs), `loop` (`train`: build, loop, finish),
`distributed` (torchrun)."""

from mct.train.loop import TrainResult, stop_on_interrupt, torch_threads, train, train_seeds, validate
from mct.train.run_folder import RUN_FILES, RunFolder, load_run_config, read_metrics
from mct.train.step import GraphedStep, TrainState, build_optimizer, learning_rate, summed_loss, train_step

__all__ = [
    "TrainResult", "train", "train_seeds", "stop_on_interrupt", "torch_threads", "validate", "RUN_FILES", "RunFolder",
    "load_run_config", "read_metrics", "GraphedStep", "TrainState", "build_optimizer",
    "learning_rate", "summed_loss", "train_step",
]
