// One shared test vector, run through a planner as the vectors' `about`
// text says, with the same results as `run_vector` in tests/plugin.rs.
//
// `planner` is the component's `nodedb:wal-archiver/planner@0.7.0` export as
// jco transpiles it (any jco output mode); `c` is one case of
// tests/testdata/plans.json. `runVector` returns what it got, keyed as the
// case's `expected` is; `compareCase` compares every expected key.
//
// Plain JavaScript with no imports but ./packed.js, so that Node.js, Deno
// and workerd all run the same code.

import { compareUtf8, emptyState, packArchiveListing, packDirListing, unpackNames } from './packed.js';

/** An LSN as the vectors write it: a decimal string, or null for none. */
const lsnText = (l) => (l === undefined || l === null ? null : String(l));
/** An LSN the vectors give: a decimal string, or undefined when absent or null. */
const lsnOf = (v) => (typeof v === 'string' ? BigInt(v) : undefined);
const names = (list) => unpackNames(list.names, list.ends);
const sorted = (list) => [...list].sort(compareUtf8);

/** A skip reason as the vectors write it: kind[:detail[:detail]]. */
export function reasonText(r) {
  switch (r.tag) {
    case 'not-a-file':
      return `not-a-file:${r.val}`;
    case 'bad-name':
      return r.val.tag === 'wrong-length' ? `bad-name:wrong-length:${r.val.val}` : `bad-name:${r.val.tag}`;
    default: // not-utf8, listed-twice
      return r.tag;
  }
}

/** A break as the vectors write it: gap:FROM:TO or overlap:FROM:TO:HELD_BY:AFTER. */
export function breakText(b) {
  return b.tag === 'gap'
    ? `gap:${b.val.fromLsn}:${b.val.toLsn}`
    : `overlap:${b.val.fromLsn}:${b.val.toLsn}:${b.val.heldBy}:${b.val.after}`;
}

function rangeText(e) {
  return e.tag === 'beyond-end' ? `beyond-end:${e.val}` : e.tag;
}

/**
 * Calls an export that returns a WIT `result`: jco returns the `ok` value
 * and throws a ComponentError whose `payload` is the `err` value.
 */
function result(call) {
  try {
    return { ok: call() };
  } catch (e) {
    if (e && Object.prototype.hasOwnProperty.call(e, 'payload')) return { err: e.payload };
    throw e;
  }
}

/** The archiver-config of a case: the vector's fields over tests/util's `config`. */
export function caseConfig(c) {
  return {
    prefix: c.config.prefix,
    batchSize: c.config.batch_size,
    batchBytes: 0n,
    verifyChecksums: true,
    deleteAfterArchive: c.config.delete_after_archive ?? false,
    retryBaseMs: 1n,
    retryMaxMs: 4n,
    compression: c.config.compression ?? 'none',
  };
}

/** The archive listing of a case (undefined when it gives none). */
export function caseArchive(c) {
  if (!c.archive) return undefined;
  const entries = c.archive.map((o) => ({
    name: o.name,
    utf8: true,
    kind: 'file',
    size: o.size,
    crc32c: typeof o.crc32c === 'string' ? parseInt(o.crc32c, 16) : undefined,
  }));
  return packArchiveListing(entries, { chainStart: lsnOf(c.archive_chain_start), prunedBelow: lsnOf(c.archive_pruned_below) });
}

/** Runs case `c` through `planner`; returns what it got, keyed as `expected` is. */
export function runVector(planner, c) {
  const listing = packDirListing(c.listing);
  const archive = caseArchive(c);
  const config = caseConfig(c);

  // (1) scan an empty state, (2) plan-batches of the pending list.
  const report = planner.scan(emptyState(), listing, archive);
  const batches = Array.from(planner.planBatches(config, report.pending));
  const got = {
    pending: names(report.pending),
    to_confirm: names(report.toConfirm),
    pruned: report.pruned,
    skipped: report.skipped.map((s) => [s.name, reasonText(s.reason)]),
    breaks: report.breaks.map(breakText),
    chain_start: lsnText(report.state.chainStart),
    batches,
  };

  // (3) record-uploads: synthetic outcomes, in the order the vectors give.
  const receipt = (size, crc, existed) => ({ tag: 'ok', val: { readSize: size, readCrc32c: crc, storedSize: size, storedCrc32c: crc, existed } });
  const fail = new Set(c.fail ?? []);
  const outcomes = [];
  const toConfirm = names(report.toConfirm);
  toConfirm.forEach((name, i) => {
    const size = report.toConfirm.sizes[i] ?? 0n;
    const at = archive ? unpackNames(archive.names, archive.ends).indexOf(name) : -1;
    if (at < 0 || !archive.recorded[at]) throw new Error(`to-confirm ${name} has no recorded checksum in the case's archive`);
    outcomes.push({ name, size, receipt: receipt(size, archive.crc32cs[at], true) });
  });
  names(report.pending).forEach((name, i) => {
    const size = report.pending.sizes[i] ?? 0n;
    // An upload's outcome is named by its object: with zstd, `{name}.zst`.
    const object = config.compression === 'zstd' ? `${name}.zst` : name;
    outcomes.push({ name: object, size, receipt: fail.has(name) ? { tag: 'err', val: { tag: 'io', val: 'injected' } } : receipt(size, 7, false) });
  });
  for (const x of c.record_extra ?? []) {
    const size = BigInt(x.size);
    outcomes.push({ name: x.name, size, receipt: receipt(size, 7, false) });
  }
  const recorded = planner.recordUploads(config, report.state, outcomes);
  got.recorded = {
    watermark: lsnText(recorded.state.lastArchivedLsn),
    archived: sorted(recorded.archived),
    failed: sorted(recorded.failed.map((f) => f.name)),
    refused: recorded.refused,
    record_chain_start: lsnText(recorded.recordChainStart),
  };

  // (4) deletable, with delete-after-archive, on the recorded state.
  got.deletable = names(planner.deletable({ ...config, deleteAfterArchive: true }, recorded.state, listing));

  // (5) verify-plan, (6) restore-plan, (7) prune-plan of the archive listing.
  const listed = archive ?? packArchiveListing([]);
  if (c.verify) {
    const r = result(() => planner.verifyPlan(listed, lsnOf(c.verify.from), lsnOf(c.verify.until)));
    got.verify = 'ok' in r ? { breaks: r.ok.breaks.map(breakText), off_chain: r.ok.offChain } : { error: rangeText(r.err) };
  }
  if (c.restore) {
    const r = result(() => planner.restorePlan(listed, lsnOf(c.restore.from), BigInt(c.restore.until)));
    if ('ok' in r) got.restore = { chain: names(r.ok) };
    else if (r.err.tag === 'broken') got.restore = { break: breakText(r.err.val) };
    else got.restore = { range: rangeText(r.err.val) };
  }
  if (c.prune) {
    got.prune = c.prune.map((p) => {
      const r = result(() => planner.prunePlan(listed, BigInt(p.before)));
      if ('ok' in r) return { segments: names(r.ok.segments), chain_start: String(r.ok.chainStart), pruned_below: String(r.ok.prunedBelow) };
      return { error: r.err.tag === 'above-watermark' ? `above-watermark:${r.err.val}` : r.err.tag };
    });
  }
  return got;
}

/** Deep equality of JSON values (what the vectors and the answers are made of). */
export function jsonEqual(a, b) {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && jsonEqual(a[k], b[k]));
  }
  return false;
}

/**
 * The problems of case `c` given what was `got`: one line for each key of
 * `expected` whose value differs (a key that was not got counts as null).
 */
export function compareCase(c, got) {
  const problems = [];
  for (const [key, want] of Object.entries(c.expected)) {
    const value = got?.[key] === undefined ? null : got[key];
    if (!jsonEqual(value, want)) problems.push(`${key}: got ${JSON.stringify(value)}, want ${JSON.stringify(want)}`);
  }
  return problems;
}
