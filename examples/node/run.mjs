// Runs the planner component, transpiled by jco, on the shared test vectors
// and checks that its plans are the ones every host must get.
//
//   node run.mjs GEN_DIR VECTORS.json
//
// GEN_DIR holds the output of `jco transpile planner.wasm --name planner`.

import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

import { fixture, calls, packListing } from './storage.js';

const [genDir, vectorsPath] = process.argv.slice(2);
if (!genDir || !vectorsPath) {
  console.error('usage: node run.mjs GEN_DIR VECTORS.json');
  process.exit(2);
}
const { planner } = await import(pathToFileURL(resolve(join(genDir, 'planner.js'))).href);
const { cases } = JSON.parse(readFileSync(vectorsPath, 'utf8'));

function emptyState() {
  return {
    lastArchivedLsn: undefined,
    chainStart: undefined,
    segmentsArchived: 0n,
    bytesArchived: 0n,
    failures: 0n,
    archivedAbove: [],
    failing: [],
  };
}

/** A skip reason as the vectors write it: kind[:detail[:detail]]. */
function reasonText(r) {
  switch (r.tag) {
    case 'not-a-file':
      return `not-a-file:${r.val}`;
    case 'not-utf8':
      return 'not-utf8';
    case 'bad-name':
      return r.val.tag === 'wrong-length' ? `bad-name:wrong-length:${r.val.val}` : `bad-name:${r.val.tag}`;
    default:
      return `unknown:${r.tag}`;
  }
}

let passed = 0;
let failed = 0;
for (const c of cases) {
  const listing = c.listing.map((e) => ({ name: e.name, utf8: e.utf8, kind: e.kind, size: BigInt(e.size) }));
  const config = {
    prefix: c.config.prefix,
    batchSize: c.config.batch_size,
    verifyChecksums: true,
    deleteAfterArchive: false,
    retryBaseMs: 1000n,
    retryMaxMs: 60000n,
  };
  const report = planner.scan(packListing(listing), emptyState());
  const tasks = planner.planBatch(config, report.pending);

  fixture.listing = listing;
  calls.length = 0;
  const cycle = planner.runCycle(config, emptyState());
  const uploaded = calls.filter((call) => call[0] === 'upload').map((call) => call[1]);

  const got = {
    pending: report.pending.map((s) => s.name),
    skipped: report.skipped.map((s) => [s.name, reasonText(s.reason)]),
    gaps: report.gaps.map((g) => [String(g.fromLsn), String(g.toLsn)]),
    overlaps: report.overlaps.map((o) => [o.first, o.second, String(o.fromLsn), String(o.toLsn)]),
    batch: tasks.map((t) => [t.segment.name, t.key]),
    chain_start: report.state.chainStart === undefined ? null : String(report.state.chainStart),
  };
  const problems = Object.keys(c.expected)
    .filter((k) => !isDeepStrictEqual(got[k], c.expected[k]))
    .map((k) => `${k}: got ${JSON.stringify(got[k])}, want ${JSON.stringify(c.expected[k])}`);
  // run-cycle, driven through the JavaScript imports, uploads every pending segment in LSN order.
  if (!isDeepStrictEqual(uploaded, c.expected.pending)) {
    problems.push(`run-cycle uploads: got ${JSON.stringify(uploaded)}, want ${JSON.stringify(c.expected.pending)}`);
  }
  if (!isDeepStrictEqual(cycle.archived.map((s) => s.name), c.expected.pending)) {
    problems.push(`run-cycle archived: got ${JSON.stringify(cycle.archived.map((s) => s.name))}`);
  }
  if (problems.length === 0) {
    passed += 1;
    console.log(`ok ${c.name}`);
  } else {
    failed += 1;
    console.log(`FAILED ${c.name}\n  ${problems.join('\n  ')}`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
