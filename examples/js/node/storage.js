// The storage imports of nodedb:wal-archiver@0.7.0, in JavaScript, over
// in-memory data: a WAL directory (a Map of entries) and an object store (a
// Map of keys to bytes). Written from the WIT's doc comments, host duties
// included, so that `run-cycle` can be driven through them; nothing touches
// the filesystem, so the same code runs in Node.js, Deno and workerd.
//
// jco's default output imports the six functions from this module by name
// (`jco transpile --map 'nodedb:wal-archiver/storage=../storage.js'`); they
// act on the storage set with `useStorage`. With `--instantiation`, pass
// `storage.imports()` of a `MemoryStorage` of your own instead.
//
// A storage error is returned to the component by throwing a plain object
// `{ tag, val }` (jco lowers it into the `err` of the import's result); an
// `Error` thrown here is a bug and traps the component.

import { packArchiveListing as packArchive, packDirListing as packEntries } from './packed.js';

// ---- CRC32C (Castagnoli) ----------------------------------------------------

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** The CRC32C of `bytes` (a Uint8Array), as an unsigned 32-bit number. */
export function crc32c(bytes) {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC32C_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// ---- Names and keys -----------------------------------------------------------

const hex = (n, width) => n.toString(16).padStart(width, '0');
const CHECKSUMS = '_checksums';
const CHAIN = '_chain';

/** Fails the storage call: `{ tag, val }` becomes the import's `err`. */
function fail(tag, val) {
  throw { tag, val };
}

/** What one read of a file or object gave: its size and CRC32C. */
function measure(bytes) {
  return { size: BigInt(bytes.length), crc: crc32c(bytes) };
}

/**
 * Storage over memory. `prefix` is the archiver-config's prefix (keys are
 * `{prefix}/{name}`, or `{name}` when it is empty).
 *
 * The setup methods (`writeFile`, `addEntry`, `removeFile`, `putObject`,
 * `removeObject`) change the directory or the store behind the planner's
 * back, as a database writing its WAL or an operator would.
 */
export class MemoryStorage {
  constructor({ prefix = '' } = {}) {
    if (prefix.startsWith('/') || prefix.endsWith('/')) throw new Error('the prefix has no leading or trailing /');
    this.prefix = prefix;
    /** The WAL directory: name -> { kind, bytes (files only), utf8 }. */
    this.wal = new Map();
    /** The object store: key -> Uint8Array. */
    this.objects = new Map();
    /** Every import call, in order: [function, ...arguments]. */
    this.calls = [];
    /** While set, record-chain-start fails with this io error, as a full or read-only store would. */
    this.chainStartRefusal = undefined;
  }

  // ---- Setup ----

  /**
   * Creates or replaces the regular file `name` in the WAL directory. A
   * `growing` file is still being written: it grows by a byte after each
   * listing, so that it is never read at the size it was listed with.
   */
  writeFile(name, bytes, { growing = false } = {}) {
    this.wal.set(name, { kind: 'file', bytes: Uint8Array.from(bytes), utf8: true, growing });
  }

  /** Adds an entry that is not a regular file (`dir`, `symlink`, `other`), or a file whose name is not UTF-8 (`utf8: false`). */
  addEntry(name, kind, { utf8 = true, bytes = new Uint8Array(0) } = {}) {
    this.wal.set(name, { kind, bytes: kind === 'file' ? Uint8Array.from(bytes) : undefined, utf8 });
  }

  removeFile(name) {
    this.wal.delete(name);
  }

  putObject(key, bytes) {
    this.objects.set(key, Uint8Array.from(bytes));
  }

  removeObject(key) {
    this.objects.delete(key);
  }

  /** `name`'s key under the prefix. */
  keyOf(name) {
    return this.prefix === '' ? name : `${this.prefix}/${name}`;
  }

  // ---- The confinement every call starts with ----

  /**
   * Refuses a name that is not an entry directly inside the WAL directory
   * (empty, `.`, `..`, a path) and a key that is not the name's key.
   */
  confine(name, key) {
    if (typeof name !== 'string' || name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
      fail('refused', `${JSON.stringify(name)} is not an entry directly inside the WAL directory`);
    }
    if (key !== undefined && key !== this.keyOf(name)) {
      fail('refused', `key ${JSON.stringify(key)} is not the key of ${name} (${JSON.stringify(this.keyOf(name))})`);
    }
  }

  /**
   * Reads the local file `name` (never through a symlink): its bytes, size
   * and CRC32C. With `size`, bytes read that are not `size` mean the file is
   * still being written: `changed`. (On disk this is one descriptor, fstat
   * before and after, size and mtime compared; in memory one read is atomic.)
   */
  readLocal(name, size) {
    const entry = this.wal.get(name);
    if (!entry) fail('not-found', `${name}: no such file in the WAL directory`);
    if (entry.kind !== 'file') fail('not-a-file', `${name}: a ${entry.kind}, not a regular file`);
    const bytes = Uint8Array.from(entry.bytes);
    if (size !== undefined && BigInt(bytes.length) !== BigInt(size)) {
      fail('changed', `${name}: listed with ${size} bytes, read ${bytes.length}: still being written`);
    }
    return { bytes, ...measure(bytes) };
  }

  /** The checksum recorded for the object `name` of `size` bytes, or undefined (a record of another size is no record). */
  recordedChecksum(name, size) {
    const marker = `${this.keyOf(`${CHECKSUMS}/${name}`)}.crc32c-`;
    for (const key of this.objects.keys()) {
      if (!key.startsWith(marker)) continue;
      const m = /^([0-9a-f]{8})-([0-9]+)$/.exec(key.slice(marker.length));
      if (m && BigInt(m[2]) === BigInt(size)) return parseInt(m[1], 16);
    }
    return undefined;
  }

  /** Records the object `name`'s CRC32C and size as an empty marker object, create-only. */
  recordChecksum(name, { size, crc }) {
    const key = `${this.keyOf(`${CHECKSUMS}/${name}`)}.crc32c-${hex(crc, 8)}-${size}`;
    if (!this.objects.has(key)) this.objects.set(key, new Uint8Array(0));
  }

  /** The highest LSN recorded under `{prefix}/_chain/{kind}-{016x}`, or undefined. */
  highestRecord(kind) {
    const start = `${this.keyOf(CHAIN)}/${kind}-`;
    let highest;
    for (const key of this.objects.keys()) {
      if (!key.startsWith(start)) continue;
      const rest = key.slice(start.length);
      if (!/^[0-9a-f]{16}$/.test(rest)) continue;
      const lsn = BigInt(`0x${rest}`);
      if (highest === undefined || lsn > highest) highest = lsn;
    }
    return highest;
  }

  // ---- The imports ----

  /** list-wal-dir: every entry directly inside the directory, once, without following symlinks. */
  listWalDir() {
    this.calls.push(['list-wal-dir']);
    const entries = [...this.wal].map(([name, e]) => ({
      name,
      utf8: e.utf8,
      kind: e.kind,
      size: e.kind === 'file' ? e.bytes.length : 0,
    }));
    for (const e of this.wal.values()) if (e.growing) e.bytes = Uint8Array.from([...e.bytes, 0]);
    return packEntries(entries);
  }

  /**
   * list-archive: every object directly under the prefix (not those of the
   * host's own sub-folders `_checksums/` and `_chain/`), in key order, with
   * its recorded checksum, and the highest chain start and prune floor.
   */
  listArchive() {
    this.calls.push(['list-archive']);
    const base = this.prefix === '' ? '' : `${this.prefix}/`;
    const entries = [];
    for (const key of [...this.objects.keys()].sort()) {
      if (!key.startsWith(base)) continue;
      const name = key.slice(base.length);
      if (name === '' || name.includes('/')) continue;
      const size = this.objects.get(key).length;
      entries.push({ name, utf8: true, kind: 'file', size, crc32c: this.recordedChecksum(name, size) });
    }
    return packArchive(entries, { chainStart: this.highestRecord('start'), prunedBelow: this.highestRecord('pruned-below') });
  }

  /** upload: publishes `name`, listed with `size` bytes, under `key`, create-only. */
  upload(name, key, size, verify) {
    this.calls.push(['upload', name, key, size, verify]);
    this.confine(name, key);
    // 1. Read the file, computing its CRC32C; `changed` if it is not `size` bytes.
    const local = this.readLocal(name, size);
    // 5. An object already under the key: the same segment, or a conflict.
    const existing = this.objects.get(key);
    if (existing) {
      const archived = measure(existing);
      if (archived.size !== local.size || archived.crc !== local.crc) fail('conflict', conflict(name, local, archived));
      // A retry after a lost reply may have lost the checksum record too: record it (create-only) before answering.
      this.recordChecksum(name, archived);
      return { readSize: local.size, readCrc32c: local.crc, storedSize: archived.size, storedCrc32c: verify ? archived.crc : undefined, existed: true };
    }
    // 2. One create-only write of the whole, checked bytes (atomic in memory).
    this.objects.set(key, local.bytes);
    // 3. With `verify`, read the object back.
    const stored = measure(this.objects.get(key));
    // 4. Durable (in memory, at once); record its checksum before the planner is told.
    this.recordChecksum(name, stored);
    return { readSize: local.size, readCrc32c: local.crc, storedSize: stored.size, storedCrc32c: verify ? stored.crc : undefined, existed: false };
  }

  /** check-archived: compares the local `name` (listed with `size` bytes) with the object under `key`, sending nothing. */
  checkArchived(name, key, size) {
    this.calls.push(['check-archived', name, key, size]);
    this.confine(name, key);
    const local = this.readLocal(name, size);
    const existing = this.objects.get(key);
    if (!existing) fail('not-found', `${key}: no such object`);
    const recorded = this.recordedChecksum(name, existing.length);
    const archived = recorded === undefined ? measure(existing) : { size: BigInt(existing.length), crc: recorded };
    if (archived.size !== local.size || archived.crc !== local.crc) fail('conflict', conflict(name, local, archived));
    return { readSize: local.size, readCrc32c: local.crc, storedSize: archived.size, storedCrc32c: archived.crc, existed: true };
  }

  /**
   * delete-segment: deletes the local `name` only after proving, now, that
   * the object under `key` holds its bytes (read back: a marker of our own
   * is not a checksum the store keeps).
   */
  deleteSegment(name, key) {
    this.calls.push(['delete-segment', name, key]);
    this.confine(name, key);
    const local = this.readLocal(name);
    const existing = this.objects.get(key);
    if (!existing) fail('not-found', `${key}: no such object; ${name} is not deleted`);
    const archived = measure(existing);
    if (archived.size !== local.size || archived.crc !== local.crc) fail('conflict', conflict(name, local, archived));
    this.wal.delete(name); // and sync the directory, on disk
  }

  /** record-chain-start: `{prefix}/_chain/start-{start:016x}`, create-only; one already there is success. */
  recordChainStart(start) {
    this.calls.push(['record-chain-start', start]);
    const key = `${this.keyOf(CHAIN)}/start-${hex(start, 16)}`;
    if (this.chainStartRefusal !== undefined) fail('io', `cannot write ${key}: ${this.chainStartRefusal}`);
    if (!this.objects.has(key)) this.objects.set(key, new Uint8Array(0));
  }

  // ---- Not an import: carrying out a prune-plan ----

  /**
   * Carries out a `prune-order` as its host duty says: the floor and the new
   * chain start first, then each segment object and its checksum records.
   */
  prune(order, segmentNames) {
    const floor = `${this.keyOf(CHAIN)}/pruned-below-${hex(order.prunedBelow, 16)}`;
    if (!this.objects.has(floor)) this.objects.set(floor, new Uint8Array(0));
    this.recordChainStart(order.chainStart);
    for (const name of segmentNames) {
      this.objects.delete(this.keyOf(name));
      const marker = `${this.keyOf(`${CHECKSUMS}/${name}`)}.crc32c-`;
      for (const key of [...this.objects.keys()]) if (key.startsWith(marker)) this.objects.delete(key);
    }
  }

  /** The six import functions, bound to this storage (for `--instantiation` output). */
  imports() {
    return {
      listWalDir: () => this.listWalDir(),
      listArchive: () => this.listArchive(),
      upload: (name, key, size, verify) => this.upload(name, key, size, verify),
      checkArchived: (name, key, size) => this.checkArchived(name, key, size),
      deleteSegment: (name, key) => this.deleteSegment(name, key),
      recordChainStart: (start) => this.recordChainStart(start),
    };
  }
}

function conflict(name, local, archived) {
  return { name, localSize: local.size, localCrc32c: local.crc, archivedSize: archived.size, archivedCrc32c: archived.crc };
}

// ---- The module-level imports of jco's default output ----------------------

let current = new MemoryStorage();

/** Makes `storage` the one the module-level import functions act on; returns it. */
export function useStorage(storage) {
  current = storage;
  return storage;
}

export const listWalDir = () => current.listWalDir();
export const listArchive = () => current.listArchive();
export const upload = (name, key, size, verify) => current.upload(name, key, size, verify);
export const checkArchived = (name, key, size) => current.checkArchived(name, key, size);
export const deleteSegment = (name, key) => current.deleteSegment(name, key);
export const recordChainStart = (start) => current.recordChainStart(start);
