"""Cairn's built-in `count` task written in Python, as a WebAssembly component (world `task`).

Per record: the counter of the record's key (empty sub-key) goes up by one and the new count
is emitted as decimal text. The counter is 8 bytes little-endian, the encoding of the built-in
`count`, so this component reads state the built-in one wrote and the other way round.

Optional config (`task.wasm.config` in the job spec, JSON):
  {"stateVersion": N}        state-version returns N (default 1)
  {"failOnValue": "text"}    a record with that value is a bad record (counted, logged, skipped)
  {"trapOnValue": "text"}    a record with that value makes the component trap (for tests)

componentize-py generates `wit_world` from wit/task.wit; this module's class `WitWorld`
implements the world's exports. A `task-error` is returned by raising `Err(...)`.
"""

import json
import struct

from componentize_py_types import Err
from wit_world import WitWorld as World
from wit_world.imports import host, output, state
from wit_world.imports.types import InputRecord, TaskError_BadRecord, Timer

_config = None


def config() -> dict:
    # Read lazily: the worker may call state-version before open, and host.config() is an
    # import, which cannot be called while the component is being built (pre-initialised).
    global _config
    if _config is None:
        _config = json.loads(host.config() or "{}")
    return _config


class WitWorld(World):
    def process(self, record: InputRecord) -> None:
        value = record.value.decode("utf-8", "replace")
        if value == config().get("failOnValue"):
            # Raised before any state change: a bad record must leave state as it was.
            raise Err(TaskError_BadRecord(f"value {value!r} is refused by failOnValue"))
        if value == config().get("trapOnValue"):
            # A plain exception is not a task-error: componentize-py turns it into a trap,
            # which the worker handles like a crash (restart from the last checkpoint).
            raise RuntimeError(f"value {value!r} hit trapOnValue")

        old = state.get(record.key, b"")
        count = (struct.unpack("<q", old)[0] if old else 0) + 1
        state.put(record.key, b"", struct.pack("<q", count))
        output.emit(record.key, str(count).encode())

    def state_version(self) -> int:
        return int(config().get("stateVersion", 1))

    # World `task` requires every entry point; this task needs none of the others.
    def open(self) -> None:
        pass

    # componentize-py cannot export a function named `open` (see rename_export.py): build.sh
    # builds this one as `task-open`, then renames the component's export to `open`.
    task_open = open

    def on_timer(self, key: bytes, timer: Timer) -> None:
        pass

    def before_checkpoint(self) -> None:
        pass

    def after_checkpoint(self, checkpoint_id: int) -> None:
        pass
