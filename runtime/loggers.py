"""Where the rows of metrics.jsonl go besides it: `ftr run --logger tensorboard`
writes each row, as it is produced, as scalars into RUN/tensorboard/ at step =
epoch. metrics.jsonl stays the run's record; this is a view of it."""

from __future__ import annotations

from pathlib import Path

TENSORBOARD_FOLDER = "tensorboard"
MISSING_TENSORBOARD = "--logger tensorboard needs tensorboard: pip install 'ftr[tensorboard]'"


def missing_tensorboard() -> str | None:
    """What to install for --logger tensorboard, or None; checked before training starts."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return MISSING_TENSORBOARD
    return None


def scalar_name(key: str) -> str:
    """The name TensorBoard users expect for a key of metrics.jsonl: train_loss is
    train/loss, val_accuracy val/accuracy; lr/<group> and seconds stay as they are."""
    return key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key


class TensorBoard:
    """Each row as scalars in RUN/tensorboard, written once, when the row is."""

    def __init__(self, out: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(out) / TENSORBOARD_FOLDER
        self.new_writer = SummaryWriter
        self.writer = None

    def begin(self, history: list[dict], first_epoch: int) -> None:
        """Open the writer for a session that trains from `first_epoch` on. Readers drop
        the events of that epoch and later that a stopped session wrote after its last
        checkpoint (purge_step); a folder without events first gets the rows restored."""
        earlier = any(self.folder.glob("events.out.tfevents.*"))
        self.writer = self.new_writer(str(self.folder), purge_step=first_epoch)
        for row in () if earlier else history:
            self.log(row)

    def log(self, row: dict) -> None:
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(scalar_name(key), value, global_step=row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
