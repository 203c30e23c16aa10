// Runs a wasm32-wasip1 program in Node's V8 (the engine Envoy embeds): `make bench-wasm`.
// The crate links proxy-wasm host imports it never calls here; they are stubbed.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';

const wasi = new WASI({ version: 'preview1', args: [process.argv[2]], env: {} });
const module = await WebAssembly.compile(await readFile(process.argv[2]));
const imports = wasi.getImportObject();
imports.env = {};
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module === 'env') imports.env[imp.name] = () => 0;
}
const instance = await WebAssembly.instantiate(module, imports);
// The proxy-wasm crate exports _initialize too, which WASI.start refuses: run _start alone.
wasi.start({ exports: { memory: instance.exports.memory, _start: instance.exports._start } });
