// Turns the core module into a component, with jco's build of wasm-tools' wit-component
// (the same steps as `wasm-tools component embed` + `wasm-tools component new`).
//
//   node componentize.mjs TOOL_DIR new CORE.wasm TASK.wit WORLD OUT.wasm
//   node componentize.mjs TOOL_DIR wit COMPONENT.wasm        prints the component's WIT
//
// The WIT goes in as text: jco 1.35.0's `embed --wit PATH` fails on this machine.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [toolDir, cmd, ...args] = process.argv.slice(2);
const tools = await import(pathToFileURL(
  path.join(toolDir, 'node_modules/@bytecodealliance/jco-transpile/dist/wasm-tools.js')));

if (cmd === 'new') {
  const [core, wit, world, out] = args;
  const embedded = await tools.componentEmbed({
    binary: fs.readFileSync(core),
    witSource: fs.readFileSync(wit, 'utf8'),
    world,
  });
  const component = await tools.componentNew(embedded);
  await tools.componentWit(component); // fails if the component does not decode
  fs.writeFileSync(out, component);
} else if (cmd === 'wit') {
  process.stdout.write(await tools.componentWit(fs.readFileSync(args[0])));
} else {
  console.error('usage: componentize.mjs TOOL_DIR new CORE WIT WORLD OUT | wit COMPONENT');
  process.exit(2);
}
