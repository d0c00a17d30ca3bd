// Checks count-c.wasm without the Rust host: transpiles the component to JS with jco's
// transpiler and runs it under node against a mock of the imports (a Map for the state).
//
//   node examples/wasm/c/check.mjs OUT_DIR/count-c.wasm
//
// Uses the jco-transpile that build.sh installs (JCO_TRANSPILE_DIR overrides where it is).
// Exits non-zero on the first failed check; prints 'N passed, 0 failed' at the end.
// Not checked here: spinOnValue (never returns) and growOnValue (node grows a memory slowly:
// minutes to reach 4 GiB a page at a time); those are for the host's limits.
// The throughput printed is jco's JS glue and the mock, not the component's.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import assert from 'node:assert/strict';

const componentPath = process.argv[2];
if (!componentPath) {
  console.error('usage: node check.mjs COMPONENT.wasm');
  process.exit(2);
}
const toolDir =
  process.env.JCO_TRANSPILE_DIR ||
  path.join(os.homedir(), '.cache/cairn/tools/jco-transpile-0.15.0');
const transpiler = path.join(
  toolDir, 'node_modules/@bytecodealliance/jco-transpile/dist/index.js');
if (!fs.existsSync(transpiler)) {
  console.error(`check.mjs: no jco-transpile at ${toolDir} (run examples/wasm/c/build.sh first)`);
  process.exit(2);
}
const { transpileBytes } = await import(pathToFileURL(transpiler));

const { files } = await transpileBytes(fs.readFileSync(componentPath), {
  name: 'count',
  instantiation: 'async',
});
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'count-c-check-'));
for (const [name, bytes] of Object.entries(files)) {
  fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
  fs.writeFileSync(path.join(dir, name), bytes);
}
const { instantiate } = await import(pathToFileURL(path.join(dir, 'count.js')));

const enc = new TextEncoder();
const dec = new TextDecoder();
const I64_MAX = (1n << 63n) - 1n;
const I64_MIN = -(1n << 63n);

// One task instance with its own state Map, emitted records and config text.
async function task(configText) {
  const state = new Map(); // 'key\0subkey' (latin1 of the bytes) -> Uint8Array
  const emitted = [];
  const k = (key, sub) => Buffer.from(key).toString('latin1') + '\0' + Buffer.from(sub).toString('latin1');
  const counter = (key, sub) => {
    const v = state.get(k(key, sub));
    return v ? Buffer.from(v).readBigInt64LE(0) : 0n;
  };
  const imports = {
    'cairn:task/types': {},
    'cairn:task/state': {
      get: (key, sub) => state.get(k(key, sub)),
      put: (key, sub, value) => void state.set(k(key, sub), Uint8Array.from(value)),
      delete: (key, sub) => void state.delete(k(key, sub)),
      addI64: (key, sub, delta) => {
        const n = counter(key, sub) + delta;
        if (n > I64_MAX || n < I64_MIN) return undefined;
        const b = Buffer.alloc(8);
        b.writeBigInt64LE(n);
        state.set(k(key, sub), new Uint8Array(b));
        return n;
      },
      subKeys: () => [],
      scan: () => [],
    },
    'cairn:task/output': {
      emit: (key, value) => emitted.push([dec.decode(key), dec.decode(value)]),
    },
    'cairn:task/timers': { register() {}, delete: () => false, watermark: () => undefined },
    'cairn:task/host': { config: () => configText, taskId: () => 0, log() {} },
  };
  const exports = await instantiate(
    (name) => WebAssembly.compile(fs.readFileSync(path.join(dir, name))), imports);
  let offset = 0n;
  const process = (key, value) =>
    exports.process({
      partition: 0, offset: offset++, timestamp: undefined,
      key: enc.encode(key), value: enc.encode(value),
    });
  return { exports, process, emitted, state, counter: (key) => Number(counter(enc.encode(key), new Uint8Array())) };
}

// The task-error a call fails with, or undefined.
function errorOf(f) {
  try {
    f();
    return undefined;
  } catch (e) {
    // a task-error arrives as jco's ComponentError (payload) or as the variant value itself
    const err = e?.payload ?? e;
    if (err && typeof err.tag === 'string') return err;
    throw e;
  }
}

let passed = 0;
async function check(name, f) {
  try {
    await f();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}`, e);
    console.log(`${passed} passed, 1 failed`);
    process.exit(1);
  }
}

await check('counts a,b,a,c,a and emits the new counts', async () => {
  const t = await task('{}');
  assert.equal(t.exports.stateVersion(), 1);
  t.exports.open();
  for (const key of ['a', 'b', 'a', 'c', 'a']) t.process(key, 'v');
  assert.deepEqual(t.emitted.map(([, v]) => v), ['1', '1', '2', '1', '3']);
  assert.deepEqual(t.emitted.map(([k]) => k), ['a', 'b', 'a', 'c', 'a']);
  assert.deepEqual([t.counter('a'), t.counter('b'), t.counter('c')], [3, 1, 1]);
  t.exports.onTimer(enc.encode('a'), { domain: 'processing', at: 5n });
  t.exports.beforeCheckpoint();
  t.exports.afterCheckpoint(1n);
});

await check('failOnValue: bad-record, no state change; stateVersion from config', async () => {
  const t = await task('{"stateVersion": 7, "other": [1, {"x": "y"}], "failOnValue": "b\\u00e9\\"x"}');
  assert.equal(t.exports.stateVersion(), 7); // before open
  t.exports.open();
  t.process('a', 'ok');
  const err = errorOf(() => t.process('a', 'bé"x'));
  assert.equal(err?.tag, 'bad-record');
  assert.match(err.val, /failOnValue/);
  t.process('a', 'ok');
  assert.deepEqual(t.emitted.map(([, v]) => v), ['1', '2']);
  assert.equal(t.counter('a'), 2);
});

await check('add-i64 none (overflow) is bad-record', async () => {
  const t = await task('{}');
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(I64_MAX - 1n);
  t.state.set('big\0', new Uint8Array(b));
  t.process('big', 'v');
  assert.deepEqual(t.emitted, [['big', String(I64_MAX)]]);
  assert.equal(errorOf(() => t.process('big', 'v'))?.tag, 'bad-record');
  assert.equal(t.emitted.length, 1);
});

await check('negative counts print with a sign', async () => {
  const t = await task('{}');
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(I64_MIN);
  t.state.set('neg\0', new Uint8Array(b));
  t.process('neg', 'v');
  assert.deepEqual(t.emitted, [['neg', String(I64_MIN + 1n)]]);
});

await check('trapOnValue traps', async () => {
  const t = await task('{"trapOnValue": "boom"}');
  t.process('a', 'x');
  assert.throws(() => t.process('a', 'boom'), WebAssembly.RuntimeError);
});

await check('a config that is not a JSON object: open and process fail with fatal', async () => {
  const t = await task('{"stateVersion": ');
  assert.equal(t.exports.stateVersion(), 1);
  assert.equal(errorOf(() => t.exports.open())?.tag, 'fatal');
  assert.equal(errorOf(() => t.process('a', 'v'))?.tag, 'fatal');
});

await check('large keys and values (arena grows and is reused)', async () => {
  const t = await task('{}');
  const big = 'k'.repeat(300000);
  for (let i = 0; i < 20; i++) t.process(big + (i % 2), 'v'.repeat(200000));
  assert.equal(t.counter(big + '0'), 10);
  assert.equal(t.emitted.at(-1)[1], '10');
});

await check('throughput under node (informative)', async () => {
  const t = await task('{}');
  const keys = Array.from({ length: 1000 }, (_, i) => enc.encode(`key-${i}`));
  const value = enc.encode('some value of a record');
  const n = 20000;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    t.exports.process({ partition: 0, offset: BigInt(i), timestamp: undefined, key: keys[i % 1000], value });
  }
  const ms = performance.now() - t0;
  console.log(`     ${n} records in ${ms.toFixed(0)} ms (${Math.round(n / ms * 1000)} records/s, JS mock included)`);
  assert.equal(t.counter('key-0'), n / 1000);
});

fs.rmSync(dir, { recursive: true, force: true });
console.log(`${passed} passed, 0 failed`);
