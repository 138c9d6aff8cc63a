"""What a run shows while it trains: a bar per epoch on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    """A bar per epoch on a terminal; one plain line per epoch otherwise or with quiet."""

    def __init__(self, quiet: bool = False, stream=None, silent: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet or silent
        self.silent = silent  # nothing at all: the processes of a run other than process 0
        self.bars = not self.quiet and self.stream.isatty()

    def epoch(self, epoch: int, epochs: int, batches: int):
        if self.bars:
            return _Bar(
                tqdm(
                    total=batches,
                    desc=f"epoch {epoch}/{epochs}",
                    unit="batch",
                    file=self.stream,
                    leave=False,
                    dynamic_ncols=True,
                )
            )
        return _Silent()

    def epoch_done(self, row: dict) -> None:
        if self.silent:
            return
        shown = [f"epoch {row['epoch']}"]
        for key, value in row.items():
            if key not in ("epoch", "seconds") and not key.startswith("lr/") and value is not None:
                shown.append(f"{key} {value:.4f}")
        shown.append(f"{row['seconds']:.1f}s")
        print("  ".join(shown), file=self.stream, flush=True)

    def say(self, text: str) -> None:
        if self.silent:
            return
        print(text, file=self.stream, flush=True)


class _Bar:
    def __init__(self, bar: tqdm):
        self.bar = bar
        self.images = 0
        self.started = time.perf_counter()

    def update(self, images: int, loss: float) -> None:
        self.images += images
        rate = self.images / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class _Silent:
    def update(self, images: int, loss: float) -> None:
        pass

    def close(self) -> None:
        pass
