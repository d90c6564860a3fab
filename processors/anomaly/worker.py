"""The anomaly processor as a restartable worker: checkpoints and quiet replay.

Detector state (seasonal baselines, a day of points per series) is rebuilt
from ``llm.metrics`` itself: the detectors are deterministic, so reading the
same points again gives the same state. Two things make that cheap and safe:

- **checkpoints**: every ``checkpoint_every`` (and when partitions are
  revoked or the worker stops) each partition's state is written to a file
  under ``<state_dir>/anomalies/`` (atomically: temp file + rename). On
  assignment the worker restores it and resumes reading right after the
  offsets it holds; without one it reads the partition from the beginning
  of retention (``llm.metrics`` keeps 7 days).
- **quiet replay**: anomaly events caused by messages before the group's
  committed offset were already sent, so they are not sent again; on a
  partition the group never committed, everything that was already on the
  topic when the worker started is history (warm-up), not news.

Examples
--------
>>> import tempfile
>>> worker = AnomalyWorker(tempfile.mkdtemp())
>>> worker.start_offsets({("llm.metrics", 0): -1001}, {("llm.metrics", 0): 40})
{('llm.metrics', 0): -2}
>>> worker.quiet_until
{('llm.metrics', 0): 40}
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING

from processors.anomaly.processor import AnomalyProcessor
from processors.contract import Output
from processors.deadletter import SourceMessage

log = logging.getLogger(__name__)

__all__ = ["AnomalyWorker"]


class AnomalyWorker(AnomalyProcessor):
    """:class:`AnomalyProcessor` plus file checkpoints and quiet replay.

    Parameters
    ----------
    state_dir
        Folder for checkpoints (one file per partition).
    checkpoint_every
        Seconds between checkpoints of every owned partition.
    """

    def __init__(self, state_dir: str | os.PathLike[str], checkpoint_every: float = 300.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.state_dir = Path(state_dir)
        self.checkpoint_every = checkpoint_every
        self.quiet_until: dict[tuple[str, int], int] = {}
        self.suppressed = 0
        self._restored: dict[tuple[str, int], int] = {}
        self._next_checkpoint = time.monotonic() + checkpoint_every

    # -- the runtime's hooks ---------------------------------------------

    def on_assign(self, partitions: list[int]) -> None:
        """Restore each partition's checkpoint, if any (offsets are chosen in :meth:`start_offsets`)."""
        for p in partitions:
            path = self._path(p)
            if not path.exists():
                continue
            try:
                for topic, offset in self.restore(p, path.read_bytes()).items():
                    self._restored[(topic, p)] = offset
                log.info("anomalies: partition %d restored from %s", p, path)
            except (ValueError, OSError, EOFError) as exc:  # unreadable: rebuild from the topic instead
                log.warning("anomalies: ignoring checkpoint %s: %s", path, exc)
                self.partitions.pop(p, None)

    def start_offsets(self, committed: dict[tuple[str, int], int],
                      ends: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Where to read each assigned (topic, partition) from, and what to keep quiet.

        ``committed`` holds the group's committed offsets (negative: none),
        ``ends`` the high watermarks now.
        """
        starts = {}
        for tp, done in committed.items():
            restored = self._restored.pop(tp, None)
            # Never skip ahead of the commit point: what lies between a
            # checkpoint and the commit is read again, quietly.
            if restored is not None and (done < 0 or restored <= done):
                starts[tp] = restored
            else:
                if restored is not None:  # checkpoint newer than the commit: state is ahead, rebuild
                    self.partitions.pop(tp[1], None)
                starts[tp] = OFFSET_BEGINNING
            self.quiet_until[tp] = done if done >= 0 else ends.get(tp, 0)
        return starts

    def on_revoke(self, partitions: list[int]) -> None:
        """Checkpoint, then forget, partitions another worker now owns."""
        self.save(partitions)
        super().on_revoke(partitions)

    def process(self, message: SourceMessage) -> list[Output]:
        outputs = super().process(message)
        if outputs and message.offset < self.quiet_until.get((message.topic, message.partition), -1):
            self.suppressed += len(outputs)
            return []
        return outputs

    def tick(self) -> list[Output]:
        """Checkpoint every owned partition when it is time."""
        if time.monotonic() >= self._next_checkpoint:
            self.save(list(self.partitions))
            self._next_checkpoint = time.monotonic() + self.checkpoint_every
        return []

    def drain(self) -> list[Output]:
        """Checkpoint everything on a clean stop."""
        self.save(list(self.partitions))
        return []

    # -- checkpoints ---------------------------------------------------------

    def save(self, partitions: list[int]) -> None:
        """Write the checkpoint files of ``partitions`` (atomic per file)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for p in partitions:
            if p not in self.partitions:
                continue
            path = self._path(p)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(self.checkpoint(p))
            os.replace(tmp, path)

    def _path(self, partition: int) -> Path:
        return self.state_dir / f"partition-{partition}.ckpt"

    def samples(self) -> list[tuple[str, str, dict[str, str], float]]:
        return [*super().samples(), ("llmpulse_anomaly_replay_suppressed",
                                     "Anomaly events not re-sent because they were caused by replayed messages.",
                                     {}, float(self.suppressed))]
