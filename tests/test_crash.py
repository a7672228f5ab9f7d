"""A writer process killed with SIGKILL at any moment never damages the table.

Each trial starts a writer process that appends one-row batches (unique ids) to
the same table, with a checkpoint every second version, and records every append
that returned. The writer dies by SIGKILL, either at a random moment chosen by
the test, or in the middle of writing a data file, a commit, a checkpoint or
`_last_checkpoint` (local disk: after half of the bytes reached the temporary
file; S3: while the PUT is in flight). After each kill:

- the table opens, in lakeflow (and, at the end, in deltalake) and holds every
  recorded append exactly once;
- every log entry a reader can see parses: no half-written entry is visible;
- what the writer left behind is garbage only: unreferenced data files, and
  hidden temporary files in `_delta_log` that no Delta reader looks at.

Trials accumulate on one table, so each starts on top of the previous wreckage.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading

import pyarrow as pa
import pytest

import lakeflow as lf
from lakeflow.actions import Add
from lakeflow.checkpoint import read_checkpoint
from lakeflow.log import list_log, read_commit
from lakeflow.storage import LocalStorage

from helpers import ID_SCHEMA as SCHEMA
from helpers import die_in_local_write, forkserver, stored_files, worker_options

pytestmark = pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)

KILL_POINTS = {  # where a targeted kill strikes: which writes, by path
    "data file": re.compile(r"(^|/)part-[^/]*\.parquet$"),
    "commit": re.compile(r"_delta_log/\d{20}\.json$"),
    "checkpoint": re.compile(r"_delta_log/\d{20}\.checkpoint\.parquet$"),
    "_last_checkpoint": re.compile(r"_delta_log/_last_checkpoint$"),
}
CI_TRIALS = {"local": 50, "s3": 10}
FULL_TRIALS = 50


@pytest.fixture(params=["ci", pytest.param("full", marks=pytest.mark.slow)])
def trials(request, backend) -> int:
    return FULL_TRIALS if request.param == "full" else CI_TRIALS[backend]


def die_during(storage, point: re.Pattern, nth: int, rng: random.Random) -> None:
    """Arrange for this process to be SIGKILLed during its `nth` write matching `point`."""
    seen = 0

    def strikes(path: str) -> bool:
        nonlocal seen
        if point.search(path):
            seen += 1
        return seen == nth and bool(point.search(path))

    if isinstance(storage.inner, LocalStorage):
        die_in_local_write(strikes)
    else:
        fs = storage.inner.fs
        pipe_file = fs.pipe_file

        def die_in_flight(path, data, **kwargs):
            if strikes(path):
                threading.Timer(rng.uniform(0, 0.005), os.kill, (os.getpid(), signal.SIGKILL)).start()
            return pipe_file(path, data, **kwargs)

        fs.pipe_file = die_in_flight


def writer(uri: str, options: dict | None, first_id: int, progress: str, ready, point: str | None,
           nth: int, seed: int) -> None:
    """Append forever; after each append returns, record "id version" in `progress`."""
    t = lf.Table(uri, storage_options=options)
    if point is not None:
        die_during(t.storage, KILL_POINTS[point], nth, random.Random(seed))
    fd = os.open(progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    ready.set()
    uid = first_id
    while True:
        version = t.append(pa.table({"id": [uid]}))
        os.write(fd, f"{uid} {version}\n".encode())  # one write: a line is whole or absent
        uid += 1


class Wreck:
    """What the test knows about the table across trials."""

    def __init__(self, uri: str, options: dict | None) -> None:
        self.uri, self.options = uri, options
        self.checked: set[str] = set()  # log entries and appends already verified

    def files(self) -> set[str]:
        return stored_files(self.uri)

    def check(self, returned: dict[int, int]) -> set[str]:
        """Check the table after a kill; return the garbage files."""
        t = lf.Table(self.uri, storage_options=self.options)  # opens
        snapshot = t.snapshot()
        ids = [f.add.parsed_stats()["minValues"]["id"] for f in snapshot.files]
        assert len(ids) == len(set(ids)), "an append landed twice"
        missing = set(returned) - set(ids)
        assert not missing, f"appends that returned are lost: {sorted(missing)[:5]}"
        for uid, version in returned.items():  # the version it returned is the one that added it
            if f"a{uid}" not in self.checked:
                added = [a.parsed_stats()["minValues"]["id"] for a in read_commit(t.storage, version)
                         if isinstance(a, Add)]
                assert added == [uid], (uid, version, added)
                self.checked.add(f"a{uid}")
        # Every entry a reader can see is whole.
        listing = list_log(t.storage)
        assert sorted(listing.commits) == list(range(t.version + 1))
        for v in listing.commits:
            if f"c{v}" not in self.checked:
                read_commit(t.storage, v)
                self.checked.add(f"c{v}")
        for v, names in listing.checkpoints.items():
            if f"cp{v}" not in self.checked:
                read_checkpoint(t.storage, names)
                self.checked.add(f"cp{v}")
        if t.storage.exists("_delta_log/_last_checkpoint"):  # absent if the first one was killed
            assert json.loads(t.storage.read("_delta_log/_last_checkpoint"))["version"] in listing.checkpoints
        # Whatever else is there is garbage a reader never looks at.
        referenced = {f.path for f in snapshot.files}
        files = self.files()
        assert referenced <= files, "a committed data file is missing"
        garbage = {name for name in files - referenced
                   if not re.fullmatch(r"_delta_log/(\d{20}\.(json|checkpoint\.parquet)|_last_checkpoint)", name)}
        for name in garbage:
            if name.startswith("_delta_log/"):
                base = name.rsplit("/", 1)[1]
                assert base.startswith(".") and base.endswith(".tmp"), f"unexpected file in the log: {name}"
            else:
                assert re.fullmatch(r"\.?part-[^/]*\.parquet(\.[0-9a-f]+\.tmp)?", name), \
                    f"orphan that is not a data file: {name}"
        return garbage


def test_killed_writers_never_damage_the_table(table_uri, backend, request, trials, tmp_path):
    options = worker_options(backend, request)
    lf.Table.create(table_uri, SCHEMA, properties={"delta.checkpointInterval": "2"},
                    storage_options=options)
    ctx = forkserver()
    rng = random.Random(20240501)
    wreck = Wreck(table_uri, options)
    returned: dict[int, int] = {}
    points = [None, *KILL_POINTS]  # None: a random moment
    struck = {p: 0 for p in points}
    for trial in range(trials):
        point = points[trial % len(points)]
        progress = tmp_path / f"progress-{trial}"
        ready = ctx.Event()
        proc = ctx.Process(target=writer, args=(table_uri, options, trial * 1_000_000, str(progress),
                                                ready, point, rng.randint(1, 3), trial))
        proc.start()
        assert ready.wait(60), "writer did not start"
        if point is None:
            proc.join(rng.uniform(0.02, 0.4))
            proc.kill()
        proc.join(120)
        assert proc.exitcode == -signal.SIGKILL, proc.exitcode
        struck[point] += 1
        lines = progress.read_text().splitlines() if progress.exists() else []
        returned.update({int(u): int(v) for u, v in (line.split() for line in lines)})
        garbage = wreck.check(returned)
    from deltalake import DeltaTable

    final = lf.Table(table_uri, storage_options=options)
    ids = sorted(final.to_arrow().column("id").to_pylist())
    assert len(ids) == len(set(ids)) and set(returned) <= set(ids)
    assert sorted(DeltaTable(table_uri, storage_options=options).to_pyarrow_table()
                  .column("id").to_pylist()) == ids
    print(f"\n{trials} kills on {backend} ({struck}): {len(returned)} returned appends all present, "
          f"{len(ids)} rows, 0 duplicated, version {final.version}, {len(garbage)} garbage files "
          f"({sum(g.startswith('_delta_log/') for g in garbage)} hidden temp files in the log)")
