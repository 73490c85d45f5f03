// Packing and unpacking the WIT's packed lists (nodedb:wal-archiver@0.7.0).
//
// `dir-listing`, `archive-listing`, `segment-list`, `archived-list` and
// `failure-list` hold every name in one string and, in `ends`, where each
// name ends, counted in bytes of UTF-8 (not in JavaScript's UTF-16 code
// units); every other field is a list of its own, one element per entry.
// jco passes `list<u8>` as a Uint8Array, `list<u32>` as a Uint32Array and
// `list<u64>` as a BigUint64Array, and hands them back the same way. Kinds
// and flags are bytes: a kind is the position of its case in `entry-kind`,
// a flag is 1 or 0.
//
// Plain JavaScript with no imports, so that Node.js, Deno and workerd all
// load it as it is.

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** The packed `names` and `ends` of a list of names. */
export function packNames(names) {
  const ends = new Uint32Array(names.length);
  let at = 0;
  names.forEach((name, i) => {
    at += encoder.encode(name).length;
    if (at > 0xffffffff) throw new RangeError('a packed list holds under 4 GiB of names');
    ends[i] = at;
  });
  return { names: names.join(''), ends };
}

/**
 * The names of a packed list, in order. Read as the planner reads a list it
 * did not build: a name whose bounds fall outside `names` or inside a
 * character reads as '' (which is never a segment name).
 */
export function unpackNames(names, ends) {
  const bytes = encoder.encode(names);
  const out = [];
  let start = 0;
  for (const e of ends) {
    const end = Number(e);
    let name = '';
    if (start <= end && end <= bytes.length) {
      try {
        name = decoder.decode(bytes.subarray(start, end));
      } catch {
        name = '';
      }
    }
    out.push(name);
    start = Math.max(start, end);
  }
  return out;
}

const u64 = (v) => BigInt(v);

/** The byte of each `entry-kind` case, as a listing carries it. */
export const KIND_CODES = Object.freeze({ file: 0, dir: 1, symlink: 2, other: 3 });

/** The byte of `kind` ('file', 'dir', 'symlink' or 'other'). */
export function kindCode(kind) {
  const code = KIND_CODES[kind];
  if (code === undefined) throw new TypeError(`not an entry-kind: ${kind}`);
  return code;
}

const flag = (set) => (set ? 1 : 0);

/** A `dir-listing` of entries `{ name, utf8 = true, kind, size }` (size: number or bigint). */
export function packDirListing(entries) {
  return {
    ...packNames(entries.map((e) => e.name)),
    sizes: BigUint64Array.from(entries, (e) => u64(e.size)),
    kinds: Uint8Array.from(entries, (e) => kindCode(e.kind)),
    utf8: Uint8Array.from(entries, (e) => flag(e.utf8 ?? true)),
  };
}

/**
 * An `archive-listing` of objects `{ name, utf8 = true, kind = 'file', size,
 * crc32c }`, where `crc32c` is the recorded checksum (a number) or
 * undefined/null when the object has none; `chainStart` and `prunedBelow`
 * are bigints or undefined.
 */
export function packArchiveListing(entries, { chainStart, prunedBelow } = {}) {
  const recorded = entries.map((e) => e.crc32c !== undefined && e.crc32c !== null);
  return {
    ...packNames(entries.map((e) => e.name)),
    sizes: BigUint64Array.from(entries, (e) => u64(e.size)),
    kinds: Uint8Array.from(entries, (e) => kindCode(e.kind ?? 'file')),
    utf8: Uint8Array.from(entries, (e) => flag(e.utf8 ?? true)),
    crc32cs: Uint32Array.from(entries, (e, i) => (recorded[i] ? e.crc32c : 0)),
    recorded: Uint8Array.from(recorded, flag),
    chainStart: chainStart ?? undefined,
    prunedBelow: prunedBelow ?? undefined,
  };
}

/** A `segment-list` of `{ name, size }`. */
export function packSegmentList(entries) {
  return {
    ...packNames(entries.map((e) => e.name)),
    sizes: BigUint64Array.from(entries, (e) => u64(e.size)),
  };
}

/** The entries `{ name, size }` of a `segment-list` (a size missing reads as 0n). */
export function unpackSegmentList(list) {
  return unpackNames(list.names, list.ends).map((name, i) => ({ name, size: list.sizes[i] ?? 0n }));
}

/** The entries `{ name, size, crc32c }` of an `archived-list`. */
export function unpackArchivedList(list) {
  return unpackNames(list.names, list.ends).map((name, i) => ({ name, size: list.sizes[i] ?? 0n, crc32c: list.crc32cs[i] ?? 0 }));
}

/** The entries `{ name, attempts, lastReason }` of a `failure-list`. */
export function unpackFailureList(list) {
  const reasons = unpackNames(list.reasons, list.reasonEnds);
  return unpackNames(list.names, list.ends).map((name, i) => ({ name, attempts: list.attempts[i] ?? 0, lastReason: reasons[i] ?? '' }));
}

/** The empty `archiver-state`: what a host starts from, or rebuilds from a scan of the archive. */
export function emptyState() {
  return {
    chainStart: undefined,
    lastArchivedLsn: undefined,
    prunedBelow: undefined,
    segmentsArchived: 0n,
    bytesArchived: 0n,
    failures: 0n,
    archived: { names: '', ends: new Uint32Array(0), sizes: new BigUint64Array(0), crc32cs: new Uint32Array(0) },
    failing: { names: '', ends: new Uint32Array(0), attempts: new Uint32Array(0), reasons: '', reasonEnds: new Uint32Array(0) },
    conflicts: [],
  };
}

/**
 * Orders strings as Rust orders `String`s (by UTF-8 bytes, which is code
 * point order), not by UTF-16 code units as `Array.prototype.sort` does.
 */
export function compareUtf8(a, b) {
  const x = a[Symbol.iterator]();
  const y = b[Symbol.iterator]();
  for (;;) {
    const p = x.next();
    const q = y.next();
    if (p.done || q.done) return p.done === q.done ? 0 : p.done ? -1 : 1;
    const d = p.value.codePointAt(0) - q.value.codePointAt(0);
    if (d !== 0) return d;
  }
}
