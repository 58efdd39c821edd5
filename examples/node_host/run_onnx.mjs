#!/usr/bin/env node
// Runs an ocp-deploy ONNX artifact on one or more structures with ONNX
// Runtime for Node.js and prints energy and forces (and stress, where the
// artifact has it) as JSON on stdout.
//
//   node run_onnx.mjs MODEL.onnx STRUCTURE.json [--threads N]
//
// STRUCTURE.json (or "-" for stdin) holds one structure
//   {"positions": [[x, y, z], ...], "atomic_numbers": [Z, ...],
//    "cell": [[ax, ay, az], [bx, by, bz], [cx, cy, cz]],
//    "pbc": [true, true, true], "tags": [t, ...]}
// or several, {"structures": [{...}, {...}]}, which run as one batch.
// Errors are one line on stderr and a non-zero exit code.

import { readFileSync, existsSync, statSync } from "node:fs";
import { basename } from "node:path";
import process from "node:process";

const USAGE = "usage: node run_onnx.mjs MODEL.onnx STRUCTURE.json [--threads N]";
const CONTRACT_INPUTS = ["positions", "atomic_numbers", "cell", "pbc", "tags", "natoms"];
// |det(cell)| in A^3 below which a cell with any periodic direction is
// refused (the bound the Python runtime uses).
const MIN_CELL_VOLUME = 1.0e-6;
const STRUCTURE_KEYS = new Set(["positions", "atomic_numbers", "cell", "pbc", "tags", "name"]);

class UsageError extends Error {}

function fail(message, code = 1) {
  process.stderr.write(`run_onnx: error: ${message}\n`);
  process.exit(code);
}

// --- command line -----------------------------------------------------------

function parseArguments(argv) {
  const positional = [];
  let threads = 0;
  for (let i = 0; i < argv.length; i++) {
    const argument = argv[i];
    if (argument === "-h" || argument === "--help") {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (argument === "--threads") {
      const value = argv[++i];
      if (value === undefined || !/^\d+$/.test(value)) throw new UsageError(`--threads needs a whole number (got ${value})`);
      threads = Number(value);
    } else if (argument.startsWith("--")) {
      throw new UsageError(`unknown option ${argument}`);
    } else {
      positional.push(argument);
    }
  }
  if (positional.length !== 2) throw new UsageError(`expected MODEL.onnx and STRUCTURE.json (${USAGE})`);
  return { model: positional[0], structure: positional[1], threads };
}

// --- ONNX model metadata (metadata_props) -----------------------------------
//
// ONNX Runtime for Node.js does not expose a model's metadata_props, so they
// are read from the file: ModelProto field 14 is a repeated
// StringStringEntryProto {key = 1, value = 2}. The reader walks only the
// top-level fields and skips everything else (the graph and its weights).

function readVarint(bytes, state) {
  let value = 0;
  let scale = 1;
  for (let shift = 0; shift < 64; shift += 7) {
    if (state.offset >= bytes.length) throw new Error("truncated varint");
    const byte = bytes[state.offset++];
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return value;
    scale *= 128;
  }
  throw new Error("varint longer than 10 bytes");
}

function* protobufFields(bytes, start = 0, end = bytes.length) {
  const state = { offset: start };
  while (state.offset < end) {
    const key = readVarint(bytes, state);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      yield { field, wire, value: readVarint(bytes, state) };
    } else if (wire === 1 || wire === 5) {
      state.offset += wire === 1 ? 8 : 4;
    } else if (wire === 2) {
      const length = readVarint(bytes, state);
      const from = state.offset;
      state.offset += length;
      if (state.offset > end) throw new Error("truncated field");
      yield { field, wire, start: from, end: state.offset };
    } else {
      throw new Error(`unsupported protobuf wire type ${wire}`);
    }
  }
  if (state.offset !== end) throw new Error("truncated message");
}

function readMetadataProps(bytes) {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const props = {};
  for (const entry of protobufFields(bytes)) {
    if (entry.field !== 14 || entry.wire !== 2) continue;
    let key = "";
    let value = "";
    for (const part of protobufFields(bytes, entry.start, entry.end)) {
      if (part.wire !== 2) continue;
      const text = decoder.decode(bytes.subarray(part.start, part.end));
      if (part.field === 1) key = text;
      else if (part.field === 2) value = text;
    }
    props[key] = value;
  }
  return props;
}

// Values are JSON-encoded; a value that is not JSON is kept as text.
function decodeMetadata(props) {
  const metadata = {};
  for (const [key, value] of Object.entries(props)) {
    try {
      metadata[key] = JSON.parse(value);
    } catch {
      metadata[key] = value;
    }
  }
  return metadata;
}

// --- structures -------------------------------------------------------------

function determinant([a, b, c]) {
  return a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0]) + a[2] * (b[0] * c[1] - b[1] * c[0]);
}

function isNumberArray(value, length) {
  return Array.isArray(value) && value.length === length && value.every((x) => typeof x === "number" && Number.isFinite(x));
}

function checkMatrix(value, rows, what, where) {
  if (!Array.isArray(value) || (rows !== null && value.length !== rows)) {
    const shape = rows === null ? "an N x 3" : `a ${rows} x 3`;
    const got = Array.isArray(value) ? `${value.length} rows` : typeof value;
    throw new Error(`${where}: ${what} must be ${shape} array of numbers (got ${got})`);
  }
  value.forEach((row, i) => {
    if (!isNumberArray(row, 3)) {
      const got = Array.isArray(row) ? `${row.length} values` : JSON.stringify(row);
      throw new Error(`${where}: ${what} row ${i} must be 3 finite numbers (got ${got})`);
    }
  });
}

function checkIntegers(value, length, what, where) {
  if (!Array.isArray(value) || value.length !== length) {
    const got = Array.isArray(value) ? `${value.length} values` : typeof value;
    throw new Error(`${where}: ${what} must be a list of ${length} integers, one per atom (got ${got})`);
  }
  value.forEach((x, i) => {
    if (!Number.isSafeInteger(x)) throw new Error(`${where}: ${what}[${i}] must be an integer (got ${JSON.stringify(x)})`);
  });
}

// One structure, checked; cell defaults to zeros, pbc to [false, false,
// false] and tags to zeros.
function checkStructure(structure, where, metadata) {
  if (structure === null || typeof structure !== "object" || Array.isArray(structure)) {
    throw new Error(`${where}: a structure must be a JSON object with positions and atomic_numbers`);
  }
  for (const key of Object.keys(structure)) {
    if (!STRUCTURE_KEYS.has(key)) throw new Error(`${where}: unknown key "${key}" (expected ${[...STRUCTURE_KEYS].join(", ")})`);
  }
  const { positions, atomic_numbers: numbers } = structure;
  if (positions === undefined) throw new Error(`${where}: positions are missing`);
  checkMatrix(positions, null, "positions", where);
  const natoms = positions.length;
  if (natoms === 0) throw new Error(`${where}: positions are empty (a structure needs at least one atom)`);
  if (numbers === undefined) throw new Error(`${where}: atomic_numbers are missing`);
  checkIntegers(numbers, natoms, "atomic_numbers", where);
  const low = Number.isSafeInteger(metadata.min_atomic_number) ? metadata.min_atomic_number : 1;
  const high = Number.isSafeInteger(metadata.max_atomic_number) ? metadata.max_atomic_number : 118;
  numbers.forEach((z, i) => {
    if (z < low || z > high) throw new Error(`${where}: atomic_numbers[${i}] = ${z} is outside the model's range ${low}..${high}`);
  });
  const pbc = structure.pbc ?? [false, false, false];
  if (!Array.isArray(pbc) || pbc.length !== 3 || !pbc.every((x) => typeof x === "boolean")) {
    throw new Error(`${where}: pbc must be 3 booleans (got ${JSON.stringify(pbc)})`);
  }
  const cell = structure.cell ?? [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
  checkMatrix(cell, 3, "cell", where);
  if (pbc.some((periodic) => periodic)) {
    const volume = determinant(cell);
    if (Math.abs(volume) < MIN_CELL_VOLUME) {
      throw new Error(`${where}: cell is singular (volume ${volume} A^3) but pbc is set: give three independent cell vectors (a vacuum vector along non-periodic directions)`);
    }
  }
  const tags = structure.tags ?? new Array(natoms).fill(0);
  checkIntegers(tags, natoms, "tags", where);
  return { name: structure.name, positions, numbers, cell, pbc, tags, natoms };
}

function readStructures(file, metadata) {
  const path = file === "-" ? "<stdin>" : file;
  let text;
  try {
    text = readFileSync(file === "-" ? 0 : file, "utf-8");
  } catch (error) {
    throw new Error(error.code === "ENOENT" ? `structure file not found: ${path}` : `cannot read structure file ${path}: ${error.message}`);
  }
  let document;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new Error(`structure file ${path} is not valid JSON: ${error.message}`);
  }
  let batch = false;
  let list = [document];
  if (document !== null && typeof document === "object" && !Array.isArray(document) && "structures" in document) {
    if (Object.keys(document).length !== 1) throw new Error(`${path}: a batch file has only the key "structures"`);
    if (!Array.isArray(document.structures) || document.structures.length === 0) {
      throw new Error(`${path}: "structures" must be a non-empty list of structures`);
    }
    batch = true;
    list = document.structures;
  }
  return { batch, structures: list.map((s, i) => checkStructure(s, batch ? `${path}: structures[${i}]` : path, metadata)) };
}

// --- input tensors ----------------------------------------------------------

function buildFeeds(ort, structures, dtype) {
  const Float = dtype === "float64" ? Float64Array : Float32Array;
  const total = structures.reduce((sum, s) => sum + s.natoms, 0);
  const count = structures.length;
  const positions = new Float(total * 3);
  const numbers = new BigInt64Array(total);
  const tags = new BigInt64Array(total);
  const cell = new Float(count * 9);
  const pbc = new Uint8Array(count * 3);
  const natoms = new BigInt64Array(count);
  let atom = 0;
  structures.forEach((s, b) => {
    for (let i = 0; i < s.natoms; i++, atom++) {
      positions.set(s.positions[i], atom * 3);
      numbers[atom] = BigInt(s.numbers[i]);
      tags[atom] = BigInt(s.tags[i]);
    }
    s.cell.forEach((row, r) => cell.set(row, b * 9 + r * 3));
    s.pbc.forEach((periodic, axis) => { pbc[b * 3 + axis] = periodic ? 1 : 0; });
    natoms[b] = BigInt(s.natoms);
  });
  return {
    positions: new ort.Tensor(dtype, positions, [total, 3]),
    atomic_numbers: new ort.Tensor("int64", numbers, [total]),
    cell: new ort.Tensor(dtype, cell, [count, 3, 3]),
    pbc: new ort.Tensor("bool", pbc, [count, 3]),
    tags: new ort.Tensor("int64", tags, [total]),
    natoms: new ort.Tensor("int64", natoms, [count]),
  };
}

// --- outputs ----------------------------------------------------------------

function rows(data, start, count, width) {
  const out = [];
  for (let i = 0; i < count; i++) out.push(Array.from(data.subarray((start + i) * width, (start + i + 1) * width), Number));
  return out;
}

function splitOutputs(results, structures) {
  const out = structures.map(() => ({}));
  const energy = results.energy?.data;
  const forces = results.forces?.data;
  const stress = results.stress?.data;
  let atom = 0;
  structures.forEach((s, b) => {
    if (s.name !== undefined) out[b].name = s.name;
    if (energy) out[b].energy = Number(energy[b]);
    if (forces) out[b].forces = rows(forces, atom, s.natoms, 3);
    if (stress) {
      // NaN where the structure is not periodic in all three directions:
      // printed as null (JSON has no NaN).
      const matrix = rows(stress, b * 3, 3, 3);
      out[b].stress = matrix.flat().every(Number.isFinite) ? matrix : null;
    }
    const finite = Number.isFinite(out[b].energy) && (out[b].forces ?? []).flat().every(Number.isFinite);
    if (!finite) throw new Error(`the model returned a non-finite energy or force for structure ${b}`);
    atom += s.natoms;
  });
  return out;
}

// --- main -------------------------------------------------------------------

async function main() {
  let options;
  try {
    options = parseArguments(process.argv.slice(2));
  } catch (error) {
    fail(error.message, 2);
  }
  if (!existsSync(options.model)) fail(`model file not found: ${options.model}`);
  if (!statSync(options.model).isFile()) fail(`model path is not a file: ${options.model}`);

  let bytes;
  let metadata;
  try {
    bytes = readFileSync(options.model);
    metadata = decodeMetadata(readMetadataProps(bytes));
  } catch (error) {
    fail(`${options.model} is not an ONNX model (${error.message})`);
  }
  if (metadata.format !== "ocp-deploy" || metadata.artifact !== "onnx") {
    fail(`${options.model} is not an ocp-deploy ONNX artifact (its metadata_props have no format "ocp-deploy", artifact "onnx")`);
  }
  const dtype = metadata.dtype;
  if (dtype !== "float32" && dtype !== "float64") fail(`${options.model}: unsupported dtype ${JSON.stringify(dtype)} in metadata_props`);
  const inputs = metadata.inputs ?? CONTRACT_INPUTS;
  const unknown = inputs.filter((name) => !CONTRACT_INPUTS.includes(name));
  if (unknown.length > 0) fail(`${options.model} needs inputs this host does not provide: ${unknown.join(", ")}`);

  let structures;
  try {
    structures = readStructures(options.structure, metadata);
  } catch (error) {
    fail(error.message);
  }

  // Loaded after the checks above, so that input errors do not wait for the
  // native library.
  const ort = (await import("onnxruntime-node")).default;
  // Session options the artifact's metadata asks for:
  // * float64: graph optimisations up to "basic" only (the extended fusions
  //   run parts of the model in float32, or have no float64 kernel);
  // * no race_free_aggregation flag (an older export whose scatter-add races
  //   with several CPU threads): one intra-op thread.
  const sessionOptions = { logSeverityLevel: 3 };
  if (dtype === "float64") sessionOptions.graphOptimizationLevel = "basic";
  if (metadata.race_free_aggregation !== true) {
    if (options.threads > 1) fail(`${options.model} is an export without race-free aggregation: it runs with one thread only`, 2);
    sessionOptions.intraOpNumThreads = 1;
  } else if (options.threads > 0) {
    sessionOptions.intraOpNumThreads = options.threads;
  }
  let session;
  try {
    session = await ort.InferenceSession.create(bytes, sessionOptions);
  } catch (error) {
    fail(`ONNX Runtime could not load ${basename(options.model)}: ${String(error.message).split("\n")[0]}`);
  }
  const missing = session.inputNames.filter((name) => !inputs.includes(name));
  if (missing.length > 0) fail(`${options.model} has inputs its metadata does not list: ${missing.join(", ")}`);

  const feeds = buildFeeds(ort, structures.structures, dtype);
  let results;
  try {
    results = await session.run(Object.fromEntries(session.inputNames.map((name) => [name, feeds[name]])));
  } catch (error) {
    fail(`ONNX Runtime failed to run ${basename(options.model)}: ${String(error.message).split("\n")[0]}`);
  }
  let outputs;
  try {
    outputs = splitOutputs(results, structures.structures);
  } catch (error) {
    fail(`${basename(options.model)}: ${error.message}`);
  }
  const document = structures.batch ? { structures: outputs } : outputs[0];
  process.stdout.write(`${JSON.stringify(document)}\n`);
}

main().catch((error) => fail(String(error?.message ?? error).split("\n")[0]));
