// The host side of the planner in workerd, independent of HTTP: instantiation
// of jco's `--instantiation async` output, one test vector run on it (what
// worker.js serves), and `driveCycle`: a whole archiving cycle over storage
// whose I/O is asynchronous, as a Worker's is (../node/cycle.mjs checks it
// against the component's own run-cycle).

import { createStorage } from './storage.js';
import { KIND_CODES, unpackNames } from '../node/packed.js';
import { runVector } from '../node/vector.js';

export const WIT_PACKAGE = 'nodedb:wal-archiver';
export const WIT_VERSION = '0.7.0';

/** A request the host cannot run (HTTP 400). */
export class BadRequest extends Error {}

/** The component is not the planner this host speaks to (HTTP 500). */
export class WrongPlanner extends Error {}

/**
 * Instantiates the transpiled planner with `imports` as its storage and
 * returns its planner interface. `instantiate` is the function that
 * `jco transpile --instantiation async` writes; `getCoreModule(name)`
 * returns (a promise of) the compiled core module `name`.
 */
export async function instantiatePlanner(instantiate, getCoreModule, imports) {
  // jco 1.35's planner.d.ts names the import `nodedb:wal-archiver/storage@0.7.0`,
  // while the planner.js it writes looks it up as `nodedb:wal-archiver/storage`,
  // without the version. Give both, so either way of looking it up works.
  const root = await instantiate(getCoreModule, {
    [`${WIT_PACKAGE}/storage`]: imports,
    [`${WIT_PACKAGE}/storage@${WIT_VERSION}`]: imports,
  });
  // The export carries the version: refuse a component of another version
  // here rather than fail on a missing function later.
  const planner = root[`${WIT_PACKAGE}/planner@${WIT_VERSION}`];
  if (!planner) {
    const found = Object.keys(root).filter((k) => k.includes('/')).join(', ') || 'nothing versioned';
    throw new WrongPlanner(`expected a component exporting ${WIT_PACKAGE}/planner@${WIT_VERSION}; it exports ${found}`);
  }
  return planner;
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Refuses a body that is not a case of the vectors' shape (the fields run_vector unwraps). */
function checkCase(c) {
  const problems = [];
  if (!isObject(c)) throw new BadRequest('the body is not a JSON object');
  if (!isObject(c.config)) problems.push('config: not an object');
  else {
    if (typeof c.config.prefix !== 'string') problems.push('config.prefix: not a string');
    if (!Number.isInteger(c.config.batch_size) || c.config.batch_size < 0 || c.config.batch_size > 0xffffffff) problems.push('config.batch_size: not a u32');
  }
  if (!Array.isArray(c.listing)) problems.push('listing: not an array');
  else {
    c.listing.forEach((e, i) => {
      if (!isObject(e) || typeof e.name !== 'string' || typeof e.utf8 !== 'boolean' || !Object.hasOwn(KIND_CODES, e.kind) || !Number.isSafeInteger(e.size) || e.size < 0) {
        problems.push(`listing[${i}]: not { name, utf8, kind (file, dir, symlink or other), size }`);
      }
    });
  }
  for (const key of ['archive', 'fail', 'record_extra', 'prune']) {
    if (c[key] !== undefined && !Array.isArray(c[key])) problems.push(`${key}: not an array`);
  }
  if (problems.length > 0) throw new BadRequest(problems.join('; '));
}

/**
 * Runs one case of tests/testdata/plans.json on a planner instance made by
 * `makePlanner(imports)`, and returns what it got, keyed as the case's
 * `expected` is (the caller compares). One instance per request, over that
 * request's storage.
 */
export async function planCase(c, makePlanner) {
  checkCase(c);
  const { imports } = createStorage({ prefix: c.config.prefix });
  const planner = await makePlanner(imports);
  try {
    return runVector(planner, c);
  } catch (e) {
    // A value the vectors' shape allows but the case gets wrong (a bad LSN
    // string, say) is the request's; a trap is the planner's.
    if (e instanceof SyntaxError || e instanceof RangeError) throw new BadRequest(e.message);
    throw e;
  }
}

// ---- A whole cycle over asynchronous storage ---------------------------------

/** Awaits one storage call: `{ tag: 'ok', val }`, or `{ tag: 'err', val }` with the storage-error it threw. */
async function settle(call) {
  try {
    return { tag: 'ok', val: await call() };
  } catch (e) {
    if (e && typeof e === 'object' && typeof e.tag === 'string' && !(e instanceof Error)) return { tag: 'err', val: e };
    throw e;
  }
}

/**
 * Does what `run-cycle` does, with the planner's pure exports and storage
 * whose functions may return promises (a Worker's I/O: fetch, R2, KV): the
 * component's own `run-cycle` calls its imports synchronously and cannot
 * wait for them. `storage` has the six functions of the storage interface
 * (`listWalDir`, ..., each returning a value or a promise, failing by
 * throwing or rejecting with a storage-error `{ tag, val }`); `config` and
 * `state` are the archiver-config and archiver-state. Returns a
 * cycle-report; throws the storage-error when a listing fails, as
 * `run-cycle` returns it.
 *
 * The steps are those run-cycle's doc comment lists: list the archive and
 * the WAL directory, scan, compare what needs comparing, upload every batch,
 * record, record the chain start if asked, delete; each pending segment is
 * tried once.
 */
export async function driveCycle(planner, storage, config, state) {
  const archive = await storage.listArchive();
  const listing = await storage.listWalDir();
  const report = planner.scan(state, listing, archive);
  // Keys are of object names: a segment's name, with `.zst` when it is
  // stored compressed; a local file is its object's name without `.zst`.
  const keyOf = (name) => (config.prefix === '' ? name : `${config.prefix}/${name}`);
  const fileOf = (object) => (object.endsWith('.zst') ? object.slice(0, -4) : object);
  const suffix = config.compression === 'zstd' ? '.zst' : '';
  const entries = (list) => unpackNames(list.names, list.ends).map((name, i) => ({ name, size: list.sizes[i] ?? 0n }));

  // Compare what the archive holds but the state never compared, and upload
  // batch by batch; record each set of outcomes as it comes, so that the
  // state is never further behind the archive than one batch.
  let current = report.state;
  const archived = [];
  const failed = [];
  const conflicts = [...report.conflicts];
  let recordChainStart = report.recordChainStart;
  const record = (outcomes) => {
    if (outcomes.length === 0) return;
    const r = planner.recordUploads(config, current, outcomes);
    current = r.state;
    archived.push(...r.archived);
    failed.push(...r.failed);
    conflicts.push(...r.conflicts);
    if (r.recordChainStart !== undefined) recordChainStart = r.recordChainStart;
  };
  const confirm = [];
  for (const { name, size } of entries(report.toConfirm)) {
    confirm.push({ name, size, receipt: await settle(() => storage.checkArchived(fileOf(name), keyOf(name), size)) });
  }
  record(confirm);
  const pending = entries(report.pending);
  let from = 0;
  for (const end of planner.planBatches(config, report.pending)) {
    const batch = [];
    for (const { name, size } of pending.slice(from, end)) {
      const object = `${name}${suffix}`;
      batch.push({ name: object, size, receipt: await settle(() => storage.upload(name, keyOf(object), size, config.verifyChecksums)) });
    }
    record(batch);
    from = end;
  }

  // The chain start goes into the archive before anything is deleted; if it
  // cannot be recorded, nothing is, and the report says why.
  const deleted = [];
  const notDeleted = [];
  let chainStartNotRecorded;
  if (recordChainStart !== undefined) {
    const r = await settle(() => storage.recordChainStart(recordChainStart));
    if (r.tag === 'err') chainStartNotRecorded = { start: recordChainStart, cause: r.val };
  }
  if (config.deleteAfterArchive && chainStartNotRecorded === undefined) {
    // An archived copy that no longer holds the local bytes is recorded as
    // a conflict, as one an upload finds (delete-segment's doc comment).
    const found = [];
    for (const { name: object, size } of entries(planner.deletable(config, current, listing))) {
      const name = fileOf(object);
      const r = await settle(() => storage.deleteSegment(name, keyOf(object)));
      if (r.tag === 'ok') deleted.push(name);
      else if (r.val.tag === 'conflict') found.push({ name: object, size, receipt: r });
      else notDeleted.push({ name, attempts: 1, lastReason: `${r.val.tag}: ${typeof r.val.val === 'string' ? r.val.val : JSON.stringify(r.val.val, (_, v) => (typeof v === 'bigint' ? String(v) : v))}` });
    }
    record(found);
  }
  return { state: current, archived, failed, conflicts, deleted, notDeleted, skipped: report.skipped, breaks: report.breaks, chainStartNotRecorded };
}
