"""What `mpq train` runs, as data: the settings of one training run and the
check of each setting's range.

Kept apart from sw/quantize/train.py (which loads torch) so that the `mpq`
command can build its parser, and `mpq train --help` answer, at once.
"""

import dataclasses
import math

from common.errors import UserError
from sw.quantize.user_model import is_user_model, locate

MODELS = ("vgg9", "digits-cnn", "resnet8", "resnet20")
DATASETS = ("digits", "cifar10")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("cosine", "step", "constant")


@dataclasses.dataclass
class TrainConfig:
    model: str = "digits-cnn"
    dataset: str = "digits"
    data: str | None = None
    download: bool = False
    width: float = 1.0
    precision: str = "float"
    group_size: int = 16
    init: str | None = None          # float checkpoint to start QAT from
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    lr_schedule: str = "cosine"     # cosine | step | constant
    weight_decay: float = 5e-4
    momentum: float = 0.9
    seed: int = 0
    device: str = "auto"
    out: str = "runs/train"
    resume: bool = False
    force: bool = False              # start over in an `out` that holds a checkpoint
    limit_train: int | None = None
    limit_test: int | None = None
    progress: bool = True
    stop_after_epoch: int | None = None  # stop early (as if killed) after this epoch
    threads: int | None = None

    def check(self):
        """Raise `UserError` naming the first setting out of its range."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size,
                    "group_size": self.group_size, "threads": self.threads,
                    "limit_train": self.limit_train, "limit_test": self.limit_test}
        for name, value in positive.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, "
                                f"got {value!r}")
        for name, value, low in (("width", self.width, 0.0), ("lr", self.lr, 0.0),
                                 ("weight_decay", self.weight_decay, None),
                                 ("momentum", self.momentum, None)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or \
                    (value <= low if low is not None else value < 0):
                rule = "a positive number" if low is not None else "0 or more"
                raise UserError(f"--{name.replace('_', '-')} must be {rule}, got {value!r}")
        if is_user_model(self.model):
            locate(self.model)   # the file is there and the spec well formed
        elif self.model not in MODELS:
            raise UserError(f"--model {self.model!r}: choose one of {', '.join(MODELS)}, or give "
                            "your own network as PATH.py:NAME (docs/quantize.md)")
        for name, value, choices in (("dataset", self.dataset, DATASETS),
                                     ("optimizer", self.optimizer, OPTIMIZERS),
                                     ("lr_schedule", self.lr_schedule, LR_SCHEDULES)):
            if value not in choices:
                raise UserError(f"--{name.replace('_', '-')} {value!r}: choose one of "
                                f"{', '.join(choices)}")
        if self.resume and self.force:
            raise UserError("--resume continues the checkpoint and --force starts over: "
                            "give one of them")
