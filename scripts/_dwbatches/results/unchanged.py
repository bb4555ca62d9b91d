"""A fetch with nothing new: the last merge proved still current, so it is not done again.

A merge reads inputs (each raw result file, the requests as submitted, the source CSV; any
other source of answers joins the list) and writes two files (results and errors) with some
settings (format, paths, columns, the missing reason, ...). The job records all of it
(``jobrecord.Merged``): a digest of the settings, a stamp of each input taken before it was
read, a stamp of each output taken after it was written, and what the merge reported. When
the settings, every input's stamp and every output's stamp are the same again, the files on
disk are what a merge would write now (the merge is a function of those inputs and settings),
so the recorded report is given instead: a million results cost a few dozen ``stat`` calls
and small reads, not a pass over every result. Anything else (an output deleted or edited, a
new round, a new download, other options, a source CSV edited) merges as before.

A stamp (``jobrecord.FileStamp``) is size, modification and change time, inode and the sha256
of the first and last 64 KiB: it proves a file unchanged without reading it whole (why it is
enough is said there).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import __version__
from ..core import compat
from ..jobs.jobrecord import FileStamp, Merged, MergeInput

# What a merge reads, as (what, path): ``what`` names it in job.json and in the narration of
# why a merge was needed; a path that is None or missing is recorded as absent.
Inputs = Sequence[Tuple[str, Optional[str]]]


def stamp(path: Optional[str]) -> Optional[FileStamp]:
    return FileStamp.of(path, compat.change_time_ns)


def settings_sha256(settings: Dict[str, Any]) -> str:
    """A digest of a merge's settings (and of this version, whose merge may write otherwise)."""
    text = json.dumps({"version": __version__, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Plan:
    """A merge about to be done: its settings and its inputs, stamped before anything is read."""

    def __init__(self, settings: Dict[str, Any], inputs: Inputs):
        self.settings = settings_sha256(settings)
        self.inputs = [MergeInput(what, stamp(path)) for what, path in inputs]

    def written_here(self, what: str, path: str) -> None:
        """An input this fetch wrote itself before reading it (absent when stamped): stamped as
        written, so that the next fetch does not take it for a change."""
        for item in self.inputs:
            if item.what == what and item.stamp is None:
                item.stamp = stamp(path)

    def why_merge(self, last: Optional[Merged], outputs: Sequence[str]) -> Optional[str]:
        """None when ``last`` (the recorded merge) is still current for ``outputs`` (the results
        and errors files), else what differs, in words."""
        if last is None:
            return "no merge recorded"
        if last.settings_sha256 != self.settings:
            return "the output settings differ from the last merge's"
        before = {i.what: i.stamp for i in last.inputs}
        for item in self.inputs:
            if item.what not in before:
                return f"new: {item.what}"
            if before[item.what] != item.stamp:
                return f"changed: {item.what}"
        if len(before) != len(self.inputs):
            return "an input of the last merge is no longer read"
        if len(last.outputs) != len(outputs):
            return "other output files"
        for path, was in zip(outputs, last.outputs):
            if was is None or stamp(path) != was:
                return f"changed since the last merge wrote it: {path}"
        return None

    def record(
        self,
        outputs: Sequence[str],
        report: Dict[str, Any],
        warnings: List[str],
        narration: List[str],
        usage: Dict[Tuple[int, str], List[int]],
    ) -> Merged:
        """What to keep of a merge just done (the outputs stamped now, as written)."""
        return Merged(
            settings_sha256=self.settings,
            inputs=list(self.inputs),
            outputs=[stamp(p) for p in outputs],
            report=json.loads(json.dumps(report)),
            warnings=list(warnings),
            narration=list(narration),
            usage=[[idx, model, *counts] for (idx, model), counts in sorted(usage.items())],
            at=time.time(),
        )


class RecordedUsage:
    """The tokens of a recorded merge, shaped as ``merge.ResultIndex.usage`` for the cost."""

    def __init__(self, merged: Merged):
        self.usage: Dict[Tuple[int, str], List[int]] = {
            (int(row[0]), str(row[1])): [int(v) for v in row[2:]] for row in merged.usage
        }
