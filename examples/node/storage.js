// The storage imports of the planner component, supplied in JavaScript:
// the WAL directory is a fixture, and uploads are recorded, not performed.

/** What `listWalDir` returns; run.mjs sets it for each test vector. */
export const fixture = { listing: [] };

/** Every call the component made, in order. */
export const calls = [];

export function listWalDir() {
  calls.push(['list-wal-dir']);
  return fixture.listing;
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
