// Cairn's built-in `count` task written in JavaScript, as a WebAssembly component (world `task`).
//
// Per record: the counter of the record's key (empty sub-key) goes up by one and the new count
// is emitted as decimal text. `add-i64` keeps the counter as 8 bytes little-endian, the encoding
// of the built-in `count`, so this component reads state the built-in one wrote and the other
// way round.
//
// Optional config (`task.wasm.config` in the job spec, JSON):
//   {"stateVersion": N}        state-version returns N (default 1)
//   {"failOnValue": "text"}    a record with that value is a bad record (counted, logged, skipped)
//   {"trapOnValue": "text"}    a record with that value makes the component trap (for tests)
//
// componentize-js maps the world: imports are modules named after their interface, exports
// are this module's exported functions (camelCase). A function returning
// result<_, task-error> returns nothing on success and throws the error value on failure.

import { addI64 } from 'cairn:task/state@0.1.0';
import { emit } from 'cairn:task/output@0.1.0';
import { config as hostConfig } from 'cairn:task/host@0.1.0';

const EMPTY = new Uint8Array(0);
const utf8 = new TextDecoder();
const encoder = new TextEncoder();

// Read lazily: the worker may call stateVersion before open, and imports cannot be called
// while componentize-js pre-initialises the module at build time.
let cachedConfig;
function config() {
  cachedConfig ??= JSON.parse(hostConfig() || '{}');
  return cachedConfig;
}

export function process(record) {
  const value = utf8.decode(record.value);
  if (value === config().failOnValue) {
    // Thrown before any state change: a bad record must leave state as it was.
    throw { tag: 'bad-record', val: `value ${JSON.stringify(value)} is refused by failOnValue` };
  }
  if (value === config().trapOnValue) {
    // A plain Error is not a task-error: the component traps, which the worker handles like a
    // crash (restart from the last checkpoint).
    throw new Error(`value ${JSON.stringify(value)} hit trapOnValue`);
  }
  const count = addI64(record.key, EMPTY, 1n);
  if (count === undefined) {
    // The host counts the record as bad when the counter would leave the 64-bit range.
    throw { tag: 'bad-record', val: 'counter overflow' };
  }
  emit(record.key, encoder.encode(count.toString()));
}

export function stateVersion() {
  return config().stateVersion ?? 1;
}

// World `task` requires every entry point; this task needs none of the others.
export function open() {}
export function onTimer(key, timer) {}
export function beforeCheckpoint() {}
export function afterCheckpoint(checkpointId) {}
