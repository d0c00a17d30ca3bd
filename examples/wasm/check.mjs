// Runs the example components without the Cairn worker: node examples/wasm/check.mjs [OUT_DIR]
// (default $HOME/.cache/cairn/wasm/examples; run examples/wasm/build.sh first).
//
// Each component is transpiled to JS with jco (installed by js/build.sh) and run against a mock
// of the four cairn:task interfaces: keyed state in a Map, emitted records in an array. WASI
// imports, which the Python component has, come from jco's preview2-shim.
// Prints "N passed, N failed" last; exits non-zero if a check failed.

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

// componentize-py's core modules use extended constant expressions, behind a flag in Node 20.
const flag = '--experimental-wasm-extended-const';
if (Number(process.versions.node.split('.')[0]) < 22 && !process.execArgv.includes(flag)) {
  const run = spawnSync(process.execPath, [flag, ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(run.status ?? 1);
}

const outDir = process.argv[2] ?? join(homedir(), '.cache/cairn/wasm/examples');
const toolsDir = join(homedir(), '.cache/cairn/tools');
const tool = readdirSync(toolsDir)
  .filter((d) => d.startsWith('componentize-js-') && !d.endsWith('.lock') && !d.includes('.tmp.'))
  .map((d) => join(toolsDir, d))
  .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
if (!tool) throw new Error(`no componentize-js tools in ${toolsDir}: run examples/wasm/build.sh`);
const jco = join(tool, 'node_modules/@bytecodealliance/jco/dist/jco.js');
const shim = await import(
  pathToFileURL(join(tool, 'node_modules/@bytecodealliance/preview2-shim/dist/nodejs/index.js'))
);

const enc = new TextEncoder();
const dec = new TextDecoder();
const hex = (bytes) => Buffer.from(bytes).toString('hex');

// The host side: the four cairn:task interfaces over a Map keyed by (key, sub-key).
function mockHost(configText) {
  const state = new Map();
  const emitted = [];
  const id = (key, subKey) => `${hex(key)}/${hex(subKey)}`;
  const imports = {
    'cairn:task/state': {
      get: (key, subKey) => state.get(id(key, subKey)),
      put: (key, subKey, value) => void state.set(id(key, subKey), Uint8Array.from(value)),
      delete: (key, subKey) => void state.delete(id(key, subKey)),
      addI64(key, subKey, delta) {
        const old = state.get(id(key, subKey));
        const n = (old ? Buffer.from(old).readBigInt64LE() : 0n) + delta;
        if (n !== BigInt.asIntN(64, n)) return undefined;
        const bytes = Buffer.alloc(8);
        bytes.writeBigInt64LE(n);
        state.set(id(key, subKey), new Uint8Array(bytes));
        return n;
      },
      subKeys: () => { throw new Error('not used by the examples'); },
      scan: () => { throw new Error('not used by the examples'); },
    },
    'cairn:task/output': { emit: (key, value) => void emitted.push([dec.decode(key), dec.decode(value)]) },
    'cairn:task/timers': { register() {}, delete: () => false, watermark: () => undefined },
    'cairn:task/host': { config: () => configText, taskId: () => 0, log() {} },
  };
  // WASI interfaces: wasi:cli/terminal-input -> shim.cli.terminalInput.
  const camel = (s) => s.replace(/-(.)/g, (_, c) => c.toUpperCase());
  for (const [pkg, ifaces] of Object.entries(shim)) {
    for (const [name, impl] of Object.entries(ifaces)) {
      const kebab = name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
      if (camel(kebab) === name) imports[`wasi:${pkg}/${kebab}`] = impl;
    }
  }
  const counter = (key) => {
    const v = state.get(id(enc.encode(key), new Uint8Array()));
    return v && Buffer.from(v).readBigInt64LE();
  };
  return { imports, emitted, counter, size: () => state.size };
}

function transpile(component) {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-check-'));
  execFileSync('node', [jco, 'transpile', join(outDir, component), '--instantiation', 'async',
    '--name', 'task', '--quiet', '-o', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  return dir;
}

async function instantiate(dir, host) {
  const { instantiate } = await import(pathToFileURL(join(dir, 'task.js')));
  return instantiate((path) => WebAssembly.compile(readFileSync(join(dir, path))), host.imports);
}

const record = (key, value, offset) => ({
  partition: 0, offset: BigInt(offset), timestamp: undefined, key: enc.encode(key), value: enc.encode(value),
});

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${ok ? '' : `: ${detail}`}`);
}

for (const component of ['count-python.wasm', 'count-js.wasm']) {
  const dir = transpile(component);
  try {
    // Default config: the count semantics.
    let host = mockHost('{}');
    let task = await instantiate(dir, host);
    check(`${component} state-version before open`, task.stateVersion() === 1, task.stateVersion());
    task.open();
    ['a', 'b', 'a', 'c', 'a'].forEach((key, i) => task.process(record(key, 'x', i)));
    const got = JSON.stringify(host.emitted);
    check(`${component} emits`, got === '[["a","1"],["b","1"],["a","2"],["c","1"],["a","3"]]', got);
    const counters = ['a', 'b', 'c'].map(host.counter).join(',');
    check(`${component} counters`, counters === '3,1,1' && host.size() === 3, counters);
    task.beforeCheckpoint();
    task.afterCheckpoint(1n);
    task.onTimer(enc.encode('a'), { domain: 'processing', at: 0n });

    // Config: stateVersion, failOnValue, trapOnValue.
    host = mockHost('{"stateVersion": 7, "failOnValue": "bad", "trapOnValue": "boom"}');
    task = await instantiate(dir, host);
    check(`${component} stateVersion config`, task.stateVersion() === 7, task.stateVersion());
    task.process(record('a', 'x', 0));
    let error;
    try { task.process(record('a', 'bad', 1)); } catch (e) { error = e; }
    check(`${component} failOnValue is a bad record`, error?.payload?.tag === 'bad-record', error);
    check(`${component} failOnValue changes no state`, host.counter('a') === 1n && host.emitted.length === 1,
      `${host.counter('a')} ${host.emitted.length}`);
    task.process(record('a', 'x', 2));
    check(`${component} goes on after a bad record`, host.counter('a') === 2n, host.counter('a'));
    error = undefined;
    try { task.process(record('a', 'boom', 3)); } catch (e) { error = e; }
    check(`${component} trapOnValue traps`, error instanceof WebAssembly.RuntimeError, error);
  } catch (e) {
    check(`${component} runs`, false, e?.stack ?? e);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
