// Drives whole archiving cycles through the storage imports (./storage.js,
// over memory), two ways, and checks that they agree and do what the WIT
// says: the component's own `run-cycle`, calling the imports synchronously,
// and `driveCycle` (../workerd/plan.js), which calls the planner's pure
// exports and awaits asynchronous storage between them, as a Worker must.
//
//   node examples/js/node/cycle.mjs COMPONENT.wasm
//
// Transpiles COMPONENT into node/gen-cycle. Prints "N passed, M failed"
// over its scenarios; exits 0, 1 or 2 as vectors.mjs does.

import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

import { compareUtf8, emptyState, unpackArchivedList, unpackNames } from './packed.js';
import { MemoryStorage, useStorage } from './storage.js';
import { SetupError, transpile } from './transpile.mjs';
import { breakText, reasonText } from './vector.js';
import { driveCycle } from '../workerd/plan.js';
import { asyncStorage } from '../workerd/storage.js';

const here = dirname(fileURLToPath(import.meta.url));
const PLANNER = 'nodedb:wal-archiver/planner@0.7.0';

const seg = (first, last) => `wal-${first.toString(16).padStart(16, '0')}-${last.toString(16).padStart(16, '0')}.seg`;
const S1 = seg(1, 10);
const S2 = seg(11, 20);
const S3 = seg(21, 30);
const bytesOf = (name, n = 100) => Uint8Array.from({ length: n }, (_, i) => (name.charCodeAt(i % name.length) + i) & 0xff);
const sorted = (list) => [...list].sort(compareUtf8);
const text = (v) => JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? String(x) : x));

function config(over = {}) {
  return { prefix: 'wal', batchSize: 2, batchBytes: 0n, verifyChecksums: true, deleteAfterArchive: false, retryBaseMs: 1n, retryMaxMs: 4n, compression: 'none', ...over };
}

/** A WAL directory of S1..S3, a half-written segment and a directory. */
function wal(prefix = 'wal') {
  const s = new MemoryStorage({ prefix });
  for (const name of [S1, S2, S3]) s.writeFile(name, bytesOf(name));
  s.writeFile('wal-000000000000001f-0000000000000028.partial', bytesOf('x', 7));
  s.addEntry('archive', 'dir');
  return s;
}

/** What a cycle did, in a form both ways of running it can be compared in. */
function summary(report, storage) {
  if (report.error) return { error: report.error };
  return {
    archived: sorted(report.archived),
    failed: sorted(report.failed.map((f) => f.name)),
    conflicts: sorted(report.conflicts.map((c) => c.name)),
    deleted: sorted(report.deleted),
    not_deleted: sorted(report.notDeleted.map((f) => f.name)),
    skipped: report.skipped.map((s) => [s.name, reasonText(s.reason)]),
    breaks: report.breaks.map(breakText),
    chain_not_recorded: report.chainStartNotRecorded === undefined ? null : text(report.chainStartNotRecorded),
    watermark: report.state.lastArchivedLsn === undefined ? null : String(report.state.lastArchivedLsn),
    chain_start: report.state.chainStart === undefined ? null : String(report.state.chainStart),
    state_archived: unpackArchivedList(report.state.archived).map((a) => a.name),
    uploads: storage.calls.filter((c) => c[0] === 'upload').map((c) => c[1]),
    compared: sorted(storage.calls.filter((c) => c[0] === 'check-archived').map((c) => c[1])),
    wal_after: sorted(storage.wal.keys()),
    objects_after: sorted(storage.objects.keys()),
  };
}

const scenarios = [
  {
    name: 'a first cycle uploads in LSN order, records the chain start, and deletes what is archived',
    build: () => wal(),
    config: config({ deleteAfterArchive: true }),
    want: {
      archived: [S1, S2, S3],
      uploads: [S1, S2, S3],
      deleted: [S1, S2, S3],
      watermark: '30',
      chain_start: '1',
      skipped: [['wal-000000000000001f-0000000000000028.partial', 'bad-name:wrong-suffix'], ['archive', 'not-a-file:dir']],
      wal_after: ['archive', 'wal-000000000000001f-0000000000000028.partial'],
    },
    check: (s) => [S1, S2, S3].every((n) => s.objects_after.some((k) => k.startsWith(`wal/_checksums/${n}.crc32c-`))) && s.objects_after.includes('wal/_chain/start-0000000000000001'),
  },
  {
    name: 'after a lost state, archived segments are compared, not uploaded again',
    build: () => {
      const s = wal();
      useStorage(s);
      planner.runCycle(config(), emptyState());
      s.calls.length = 0;
      return s;
    },
    config: config(),
    want: { archived: [S1, S2, S3], uploads: [], compared: [S1, S2, S3], watermark: '30', deleted: [] },
  },
  {
    name: 'an archived copy that differs is a conflict: it holds the watermark and is not deleted',
    build: () => {
      const s = wal();
      const other = bytesOf('another segment');
      s.putObject(`wal/${S2}`, other);
      s.recordChecksum(S2, { size: BigInt(other.length), crc: crc32cOf(other) });
      return s;
    },
    config: config({ deleteAfterArchive: true }),
    want: { archived: [S1, S3], conflicts: [S2], uploads: [S1, S3], compared: [S2], watermark: '10', deleted: [S1] },
  },
  {
    name: 'an object without a recorded checksum (an upload that did not finish) is uploaded again, create-only: the same bytes are a receipt',
    build: () => {
      const s = wal();
      s.putObject(`wal/${S1}`, bytesOf(S1));
      return s;
    },
    config: config(),
    want: { archived: [S1, S2, S3], uploads: [S1, S2, S3], watermark: '30' },
    check: (s) => s.objects_after.some((k) => k.startsWith(`wal/_checksums/${S1}.crc32c-`)),
  },
  {
    name: 'a segment still being written is not published: it fails, stays pending and holds the watermark',
    build: () => {
      const s = wal();
      s.writeFile(S2, bytesOf(S2), { growing: true });
      return s;
    },
    config: config({ deleteAfterArchive: true }),
    want: { archived: [S1, S3], failed: [S2], uploads: [S1, S2, S3], watermark: '10', deleted: [S1] },
    check: (s) => !s.objects_after.includes(`wal/${S2}`),
  },
  {
    name: 'after a prune, segments below the floor are kept locally and never uploaded again',
    build: () => {
      const s = wal();
      useStorage(s);
      planner.runCycle(config(), emptyState());
      const order = resultOf(() => planner.prunePlan(s.listArchive(), 21n));
      s.prune(order.ok, unpackNames(order.ok.segments.names, order.ok.segments.ends));
      s.calls.length = 0;
      return s;
    },
    config: config(),
    want: { archived: [S3], uploads: [], compared: [S3], watermark: '30', chain_start: '21' },
  },
  {
    name: 'a chain start the store cannot record: the cycle deletes nothing and its report says why',
    build: () => {
      const s = wal();
      s.chainStartRefusal = 'no space left on device';
      return s;
    },
    config: config({ deleteAfterArchive: true }),
    want: {
      archived: [S1, S2, S3],
      uploads: [S1, S2, S3],
      deleted: [],
      not_deleted: [],
      watermark: '30',
      chain_not_recorded: text({ start: 1n, cause: { tag: 'io', val: 'cannot write wal/_chain/start-0000000000000001: no space left on device' } }),
      wal_after: sorted([S1, S2, S3, 'archive', 'wal-000000000000001f-0000000000000028.partial']),
    },
    check: (s) => !s.objects_after.some((k) => k.startsWith('wal/_chain/')),
  },
];

function resultOf(call) {
  try {
    return { ok: call() };
  } catch (e) {
    if (e && Object.prototype.hasOwnProperty.call(e, 'payload')) return { err: e.payload };
    throw e;
  }
}

let crc32cOf;
let planner;

async function main() {
  const [componentArg] = process.argv.slice(2);
  if (!componentArg) throw new SetupError('usage: node cycle.mjs COMPONENT.wasm');
  const gen = join(here, 'gen-cycle');
  const took = transpile(resolve(componentArg), gen, ['--map', 'nodedb:wal-archiver/storage=../storage.js']);
  console.log(`node ${process.version}; transpiled ${resolve(componentArg)} in ${took.toFixed(2)} s`);
  planner = (await import(pathToFileURL(join(gen, 'planner.js')).href))[PLANNER];
  if (!planner) throw new SetupError(`the component does not export ${PLANNER}`);
  crc32cOf = (await import('./storage.js')).crc32c;

  let passed = 0;
  let failed = 0;
  for (const sc of scenarios) {
    const problems = [];
    try {
      // The component's run-cycle, over one storage...
      const a = sc.build();
      useStorage(a);
      const sync = resultOf(() => planner.runCycle(sc.config, emptyState()));
      const got = 'ok' in sync ? summary(sync.ok, a) : { error: text(sync.err) };
      // ... and driveCycle, over another one made the same way, asynchronous.
      const b = sc.build();
      let driven;
      try {
        driven = summary(await driveCycle(planner, asyncStorage(b.imports()), sc.config, emptyState()), b);
      } catch (e) {
        if (!e?.tag) throw e;
        driven = { error: text(e) };
      }
      for (const [key, want] of Object.entries(sc.want)) {
        if (!isDeepStrictEqual(got[key], want)) problems.push(`run-cycle ${key}: got ${text(got[key])}, want ${text(want)}`);
      }
      for (const key of new Set([...Object.keys(got), ...Object.keys(driven)])) {
        if (!isDeepStrictEqual(got[key], driven[key])) problems.push(`driveCycle ${key}: got ${text(driven[key])}, run-cycle ${text(got[key])}`);
      }
      if (sc.check && !sc.check(got)) problems.push(`storage after the cycle: ${text(got.objects_after)}`);
    } catch (e) {
      problems.push(`threw: ${e?.stack ?? text(e)}`);
    }
    if (problems.length === 0) {
      passed += 1;
      console.log(`ok ${sc.name}`);
    } else {
      failed += 1;
      console.log(`FAILED ${sc.name}\n  ${problems.join('\n  ')}`);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

let code;
try {
  code = await main();
} catch (e) {
  if (!(e instanceof SetupError)) throw e;
  console.error(`cycle.mjs: ${e.message}`);
  code = 2;
}
process.exit(code);
