// The storage imports of the planner component, supplied in JavaScript:
// the WAL directory is a fixture, and uploads are recorded, not performed.

/** The WAL directory's entries; run.mjs sets them for each test vector. */
export const fixture = { listing: [] };

/**
 * Packs entries `{ name, utf8, kind, size }` as the WIT `dir-listing`: the
 * names in one string, where each ends (in bytes of UTF-8), and the other
 * fields in lists of their own.
 */
export function packListing(entries) {
  const encoder = new TextEncoder();
  const ends = new Uint32Array(entries.length);
  let at = 0;
  entries.forEach((e, i) => {
    at += encoder.encode(e.name).length;
    ends[i] = at;
  });
  return {
    names: entries.map((e) => e.name).join(''),
    ends,
    sizes: BigUint64Array.from(entries, (e) => BigInt(e.size)),
    kinds: entries.map((e) => e.kind),
    utf8: entries.map((e) => e.utf8),
  };
}

/** Every call the component made, in order. */
export const calls = [];

export function listWalDir() {
  calls.push(['list-wal-dir']);
  return packListing(fixture.listing);
}

export function listArchive() {
  calls.push(['list-archive']);
  return [];
}

export function upload(name, key, verify) {
  calls.push(['upload', name, key, verify]);
  const entry = fixture.listing.find((e) => e.name === name);
  if (!entry) {
    throw { tag: 'not-found', val: `cannot read segment ${name}: not found` };
  }
  // A receipt as a host that read the file and read the object back would give.
  return { readSize: entry.size, readCrc32c: 0, storedSize: entry.size, storedCrc32c: verify ? 0 : undefined };
}

export function deleteSegment(name) {
  calls.push(['delete-segment', name]);
}

export function readObject(name, offset, length) {
  calls.push(['read-object', name, offset, length]);
  throw { tag: 'not-found', val: `cannot read archived ${name}: this example archives nothing` };
}
