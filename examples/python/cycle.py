"""Whole cycles: `run-cycle` through storage.py on a small real directory.

    python3 cycle.py [COMPONENT.wasm]

run.py runs these after the vectors, each step counted as a case. The steps
share one WAL directory and one archive directory (prefix `wal`), with
delete-after-archive on and batches of two:

1. first cycle: three segments and a `.partial` -> the three archived and
   deleted, the `.partial` skipped and kept, the watermark 3000, the chain
   start 1 recorded in the archive before anything was deleted;
2. second cycle: nothing to do;
3. lost state: the `.partial` finished as a segment that is already archived
   (uploaded by a run whose state was lost) -> compared (`check-archived`),
   not uploaded, then deleted; the watermark 4000, from the archive alone;
4. conflict: a new segment whose key holds other bytes -> a conflict, the
   object left as it was, the segment kept, the watermark held at 4000;
5. storage.py's host duties called directly: names and keys confined, no
   symlink followed, `changed` publishes nothing, no deletion without proof.
"""

from __future__ import annotations

import os
import sys
import tempfile
from types import SimpleNamespace
from typing import Any, Callable, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from storage import CHAIN_DIR, KIND_CODES, DirStorage, crc32c, empty_state, names_of, unpack_listing  # noqa: E402
from wit_values import Err, Ok  # noqa: E402

SPAN = 1000
PREFIX = "wal"


def seg(i: int) -> str:
    return f"wal-{i * SPAN + 1:016x}-{(i + 1) * SPAN:016x}.seg"


def content(i: int) -> bytes:
    return bytes((j * 31 + i * 7) & 0xFF for j in range(4096 + 100 * i))


class Cycles:
    """The directories, the storage and the state carried from step to step."""

    def __init__(self, component: Any):
        self.component = component
        self.tmp = tempfile.TemporaryDirectory(prefix="wal-archiver-py-cycle-")
        self.wal = os.path.join(self.tmp.name, "wal")
        self.archive = os.path.join(self.tmp.name, "archive")
        os.mkdir(self.wal)
        self.storage = DirStorage(self.wal, self.archive, PREFIX)
        self.config = SimpleNamespace(prefix=PREFIX, batch_size=2, batch_bytes=0, verify_checksums=True,
                                      delete_after_archive=True, retry_base_ms=1, retry_max_ms=4,
                                      compression="none")
        self.state = empty_state()
        self.partial = f"wal-{3 * SPAN + 1:016x}-{4 * SPAN:016x}.partial"

    # -- helpers ------------------------------------------------------------------------

    def write(self, name: str, data: bytes) -> None:
        with open(os.path.join(self.wal, name), "wb") as f:
            f.write(data)

    def cycle(self, state: Any, problems: List[str]) -> Any:
        """One run-cycle; the report, or None (with the failure in `problems`)."""
        self.storage.calls.clear()
        _store, planner = self.component.instantiate(self.storage)
        out = planner.run_cycle(self.config, state)
        if isinstance(out, Err):
            problems.append(f"run-cycle failed: {out.value}")
            return None
        return out.value

    def wal_names(self) -> List[str]:
        return sorted(os.listdir(self.wal))

    def calls(self, what: str) -> List[Any]:
        return [c[1] for c in self.storage.calls if c[0] == what]

    def expect(self, problems: List[str], what: str, got: Any, want: Any) -> None:
        if got != want:
            problems.append(f"{what}: got {got!r}, want {want!r}")

    def expect_archive(self, problems: List[str], want: List[int], chain_start: int) -> None:
        """The archive lists segments `want`, each with the right bytes and
        recorded checksum, and the chain start; nothing is left in staging."""
        listed = self.storage.list_archive()
        if not isinstance(listed, Ok):
            problems.append(f"list-archive failed: {listed}")
            return
        a = listed.value
        rows = list(zip(names_of(a), a.sizes, a.kinds, a.recorded, a.crc32cs))
        self.expect(problems, "archive objects",
                    rows, [(seg(i), len(content(i)), KIND_CODES["file"], 1, crc32c(content(i))) for i in want])
        self.expect(problems, "archive chain start", a.chain_start, chain_start)
        for i in want:
            with open(os.path.join(self.archive, PREFIX, seg(i)), "rb") as f:
                if f.read() != content(i):
                    problems.append(f"archived {seg(i)} does not hold the segment's bytes")
        staging = os.path.join(self.archive, PREFIX, "_staging")
        if os.path.isdir(staging) and os.listdir(staging):
            problems.append(f"left in staging: {os.listdir(staging)}")

    # -- the steps ----------------------------------------------------------------------

    def first(self) -> List[str]:
        p: List[str] = []
        for i in range(3):
            self.write(seg(i), content(i))
        self.write(self.partial, content(3)[:1000])
        r = self.cycle(empty_state(), p)
        if r is None:
            return p
        want = [seg(i) for i in range(3)]
        self.expect(p, "archived", sorted(r.archived), want)
        self.expect(p, "deleted", sorted(r.deleted), want)
        self.expect(p, "failed", [(f.name, f.last_reason) for f in r.failed], [])
        self.expect(p, "not deleted", [(f.name, f.last_reason) for f in r.not_deleted], [])
        self.expect(p, "conflicts", r.conflicts, [])
        self.expect(p, "skipped", [(s.name, s.reason.tag, s.reason.value.tag) for s in r.skipped],
                    [(self.partial, "bad-name", "wrong-suffix")])
        self.expect(p, "breaks", r.breaks, [])
        self.expect(p, "watermark", r.state.last_archived_lsn, 3 * SPAN)
        self.expect(p, "state chain start", r.state.chain_start, 1)
        self.expect(p, "segments archived", r.state.segments_archived, 3)
        self.expect(p, "bytes archived", r.state.bytes_archived, sum(len(content(i)) for i in range(3)))
        self.expect(p, "WAL directory after", self.wal_names(), [self.partial])
        self.expect(p, "uploads", sorted(self.calls("upload")), want)
        self.expect(p, "record-chain-start calls", self.calls("record-chain-start"), [1])
        order = [c[0] for c in self.storage.calls]
        if "record-chain-start" in order and "delete-segment" in order \
                and order.index("record-chain-start") > order.index("delete-segment"):
            p.append(f"the chain start was recorded after a deletion: {order}")
        self.expect_archive(p, [0, 1, 2], 1)
        if not os.path.isfile(os.path.join(self.archive, PREFIX, "_chain", f"start-{1:016x}")):
            p.append("no _chain/start-0000000000000001 in the archive")
        self.state = r.state
        return p

    def again(self) -> List[str]:
        p: List[str] = []
        r = self.cycle(self.state, p)
        if r is None:
            return p
        self.expect(p, "archived", r.archived, [])
        self.expect(p, "deleted", r.deleted, [])
        self.expect(p, "storage calls", [c[0] for c in self.storage.calls], ["list-archive", "list-wal-dir"])
        self.expect(p, "watermark", r.state.last_archived_lsn, 3 * SPAN)
        self.state = r.state
        return p

    def lost_state(self) -> List[str]:
        p: List[str] = []
        # The .partial is finished, and an earlier run archived it but lost its state.
        os.unlink(os.path.join(self.wal, self.partial))
        self.write(seg(3), content(3))
        pre = self.storage.upload(seg(3), self.storage.key_of(seg(3)), len(content(3)), True)
        if not isinstance(pre, Ok) or pre.value.existed:
            return [f"setting up: upload gave {pre}"]
        again = self.storage.upload(seg(3), self.storage.key_of(seg(3)), len(content(3)), True)
        if not isinstance(again, Ok) or not again.value.existed:
            p.append(f"a second upload of the same bytes is not `existed`: {again}")
        r = self.cycle(empty_state(), p)
        if r is None:
            return p
        self.expect(p, "check-archived calls", self.calls("check-archived"), [seg(3)])
        self.expect(p, "uploads", self.calls("upload"), [])
        self.expect(p, "archived", r.archived, [seg(3)])
        self.expect(p, "deleted", r.deleted, [seg(3)])
        self.expect(p, "watermark", r.state.last_archived_lsn, 4 * SPAN)
        self.expect(p, "state chain start", r.state.chain_start, 1)
        self.expect(p, "segments archived (rebuilt from the archive)", r.state.segments_archived, 4)
        self.expect(p, "WAL directory after", self.wal_names(), [])
        self.expect_archive(p, [0, 1, 2, 3], 1)
        self.state = r.state
        return p

    def conflict(self) -> List[str]:
        p: List[str] = []
        self.write(seg(4), content(4))
        foreign = b"another archiver's segment 4001-5000"
        with open(os.path.join(self.archive, PREFIX, seg(4)), "wb") as f:
            f.write(foreign)
        r = self.cycle(self.state, p)
        if r is None:
            return p
        want = SimpleNamespace(name=seg(4), local_size=len(content(4)), local_crc32c=crc32c(content(4)),
                               archived_size=len(foreign), archived_crc32c=crc32c(foreign))
        self.expect(p, "conflicts", r.conflicts, [want])
        self.expect(p, "state conflicts", r.state.conflicts, [want])
        self.expect(p, "archived", r.archived, [])
        self.expect(p, "deleted", r.deleted, [])
        self.expect(p, "watermark", r.state.last_archived_lsn, 4 * SPAN)
        self.expect(p, "WAL directory after", self.wal_names(), [seg(4)])
        with open(os.path.join(self.archive, PREFIX, seg(4)), "rb") as f:
            if f.read() != foreign:
                p.append("the object in conflict was changed")
        markers = os.listdir(os.path.join(self.archive, PREFIX, "_checksums"))
        if any(m.startswith(seg(4)) for m in markers):
            p.append(f"a checksum was recorded for the object in conflict: {markers}")
        # A listing shows it as an archived segment without a recorded checksum.
        listed = self.storage.list_wal_dir()
        self.expect(p, "WAL listing", isinstance(listed, Ok) and unpack_listing(listed.value),
                    [(seg(4), True, "file", len(content(4)))])
        return p


    def duties(self) -> List[str]:
        """The host duties of storage.py, called directly (no planner)."""
        p: List[str] = []
        st = self.storage
        key = st.key_of
        tags = lambda r: r.value.tag if isinstance(r, Err) else "ok"  # noqa: E731
        # Names and keys are confined.
        for name, k in [("../x.seg", "wal/../x.seg"), ("", "wal/"), (seg(4), seg(4)), (seg(4), "wal/" + seg(5))]:
            self.expect(p, f"upload {name!r} as {k!r}", tags(st.upload(name, k, 1, True)), "refused")
        # A symlink is never followed; a listed size that is not the file's publishes nothing.
        os.symlink(os.path.join(self.wal, seg(4)), os.path.join(self.wal, seg(6)))
        self.expect(p, "upload of a symlink", tags(st.upload(seg(6), key(seg(6)), 10, True)), "not-a-file")
        self.write(seg(5), content(5))
        self.expect(p, "upload with the wrong size", tags(st.upload(seg(5), key(seg(5)), 10, True)), "changed")
        self.expect(p, "published after `changed`", os.path.exists(os.path.join(self.archive, PREFIX, seg(5))), False)
        self.expect(p, "check-archived with nothing archived", tags(st.check_archived(seg(5), key(seg(5)), len(content(5)))),
                    "not-found")
        # No deletion without the proof: nothing archived, other bytes archived.
        self.expect(p, "delete with nothing archived", tags(st.delete_segment(seg(5), key(seg(5)))), "not-found")
        self.expect(p, "delete with other bytes archived", tags(st.delete_segment(seg(4), key(seg(4)))), "conflict")
        self.expect(p, "WAL directory after", self.wal_names(), [seg(4), seg(5), seg(6)])
        # Without verify the stored checksum is not claimed; the record is written all the same.
        r = st.upload(seg(5), key(seg(5)), len(content(5)), False)
        self.expect(p, "upload without verify", isinstance(r, Ok) and (r.value.stored_crc32c, r.value.existed), (None, False))
        # Create-only chain records: the same start twice is success.
        self.expect(p, "record-chain-start again", tags(st.record_chain_start(1)), "ok")
        self.expect(p, "delete once proved", tags(st.delete_segment(seg(5), key(seg(5)))), "ok")
        listed = st.list_archive()
        a = listed.value if isinstance(listed, Ok) else None
        self.expect(p, "archive after", a and list(zip(names_of(a), a.recorded)),
                    [(seg(i), 1) for i in range(4)] + [(seg(4), 0), (seg(5), 1)])
        self.tmp.cleanup()
        return p


    def chain_start_blocked(self) -> List[str]:
        """A dangling symlink where the archive's `_chain` folder goes: the
        chain start cannot be recorded, so the cycle deletes nothing and its
        report says why; once the link is gone, the next cycle records it and
        deletes."""
        p: List[str] = []
        for i in range(3):
            self.write(seg(i), content(i))
        os.makedirs(os.path.join(self.archive, PREFIX))
        blocker = os.path.join(self.archive, PREFIX, CHAIN_DIR)
        os.symlink(os.path.join(self.tmp.name, "nowhere"), blocker)
        want = [seg(i) for i in range(3)]
        r = self.cycle(empty_state(), p)
        if r is None:
            return p
        self.expect(p, "archived", sorted(r.archived), want)
        self.expect(p, "deleted", r.deleted, [])
        self.expect(p, "not deleted", r.not_deleted, [])
        self.expect(p, "delete-segment calls", self.calls("delete-segment"), [])
        self.expect(p, "WAL directory after", self.wal_names(), want)
        failure = r.chain_start_not_recorded
        if failure is None:
            p.append("the report does not say that the chain start was not recorded")
        else:
            self.expect(p, "chain start not recorded", (failure.start, failure.cause.tag), (1, "io"))
            if "chain start" not in str(failure.cause.value):
                p.append(f"the cause does not say what failed: {failure.cause.value!r}")
        os.unlink(blocker)
        r = self.cycle(r.state, p)
        if r is None:
            return p
        self.expect(p, "chain start not recorded, once the store takes it", r.chain_start_not_recorded, None)
        self.expect(p, "deleted, once recorded", sorted(r.deleted), want)
        self.expect(p, "WAL directory, once recorded", self.wal_names(), [])
        self.expect_archive(p, [0, 1, 2], 1)
        self.tmp.cleanup()
        return p


def checks(component: Any) -> List[Tuple[str, Callable[[], List[str]]]]:
    """The steps, in order, each returning its problems."""
    c = Cycles(component)
    blocked = Cycles(component)
    return [
        ("three segments and a .partial: archived, deleted, chain start recorded", c.first),
        ("a second cycle has nothing to do", c.again),
        ("after a lost state an archived segment is compared, not uploaded", c.lost_state),
        ("other bytes under a segment's key: a conflict, nothing replaced or deleted", c.conflict),
        ("storage.py's host duties, called directly", c.duties),
        ("a chain start the archive cannot take: nothing deleted, the report says why", blocked.chain_start_blocked),
    ]


def main() -> int:
    from wit_values import PlannerComponent
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PLANNER_WASM") or os.path.join(here, "planner.wasm")
    failed = 0
    for name, check in checks(PlannerComponent(path)):
        problems = check()
        failed += bool(problems)
        print(("FAILED " if problems else "ok ") + name + "".join("\n  " + x for x in problems))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
