// The one loader of the Tessera WebAssembly core (dist/wasm/tessera.wasm). The agent's allocator
// and the proxy's router both get their exports from here. Only pointers and lengths cross the
// border; typed views over linear memory are rebuilt when the module grows its memory (growth
// detaches the old ArrayBuffer).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { TesseraError } from "../common/errors.js";

export const CORE_ABI_VERSION = 1;

export type CoreExports = Record<string, unknown> & {
  memory: WebAssembly.Memory;
  coreVersion(): number;
};

export interface WasmCore {
  exports: CoreExports;
  u8(): Uint8Array;
  i32(): Int32Array;
  u32(): Uint32Array;
  f64(): Float64Array;
  u64(): BigUint64Array;
}

export const DEFAULT_WASM_PATH = fileURLToPath(new URL("../../wasm/tessera.wasm", import.meta.url));

let cached: WasmCore | undefined;

/** Loads (once per process) and returns the shared core. Synchronous: the module is small. */
export function loadWasmCore(file: string = DEFAULT_WASM_PATH): WasmCore {
  if (cached && file === DEFAULT_WASM_PATH) return cached;
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new TesseraError("TESSERA_WASM", `cannot read ${file}; run \`npm run build\``, { cause: err });
  }
  let instance: WebAssembly.Instance;
  try {
    const mod = new WebAssembly.Module(new Uint8Array(bytes));
    instance = new WebAssembly.Instance(mod, {
      env: {
        abort(_msg: number, _file: number, line: number, col: number): never {
          throw new TesseraError("TESSERA_WASM", `WebAssembly core aborted at line ${line}:${col}`);
        },
        seed: () => 0x9e3779b9,
      },
    });
  } catch (err) {
    throw new TesseraError("TESSERA_WASM", `cannot instantiate ${file}`, { cause: err });
  }
  const exports = instance.exports as CoreExports;
  if (exports.coreVersion() !== CORE_ABI_VERSION) {
    throw new TesseraError("TESSERA_WASM", `${file} has ABI ${exports.coreVersion()}, expected ${CORE_ABI_VERSION}; rebuild with \`npm run build\``);
  }
  const core = makeViews(exports);
  if (file === DEFAULT_WASM_PATH) cached = core;
  return core;
}

function makeViews(exports: CoreExports): WasmCore {
  let buf: ArrayBuffer | undefined;
  let u8!: Uint8Array, i32!: Int32Array, u32!: Uint32Array, f64!: Float64Array, u64!: BigUint64Array;
  const refresh = (): void => {
    const b = exports.memory.buffer;
    if (b === buf) return;
    buf = b;
    u8 = new Uint8Array(b);
    i32 = new Int32Array(b);
    u32 = new Uint32Array(b);
    f64 = new Float64Array(b);
    u64 = new BigUint64Array(b);
  };
  return {
    exports,
    u8: () => (refresh(), u8),
    i32: () => (refresh(), i32),
    u32: () => (refresh(), u32),
    f64: () => (refresh(), f64),
    u64: () => (refresh(), u64),
  };
}
