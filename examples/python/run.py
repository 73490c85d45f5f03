"""Runs the planner component in wasmtime-py on the shared test vectors and
checks that its plans are the ones every host must get (the same steps and
the same `got` values as `run_vector` in tests/plugin.rs), then runs whole
cycles through the Python storage imports (cycle.py).

    python3 run.py [COMPONENT.wasm] VECTORS.json

The component is COMPONENT.wasm, else --component, else $PLANNER_WASM, else
planner.wasm beside this file. Prints one line per case and `N passed, M
failed`; exits 0 when all passed, 1 on any failure, 2 on a setup problem
(no wasmtime, no component, unreadable vectors).

Each vector also builds its WAL directory for real in a temporary directory
(files, a directory, a symlink, a FIFO, a name with an invalid UTF-8 byte in
place of each U+FFFD) and checks that `list-wal-dir` of storage.py lists it
as the vector does (a check of this host, reported as `fixture:`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


# --- How the vectors write values --------------------------------------------------

def lsn_text(v: Optional[int]) -> Optional[str]:
    return None if v is None else str(v)


def lsn_of(v: Optional[str]) -> Optional[int]:
    return None if v is None else int(v)


def reason_text(r: Any) -> str:
    """A skip reason as the vectors write it: kind[:detail[:detail]]."""
    if r.tag == "not-a-file":
        return f"not-a-file:{r.value}"
    if r.tag == "bad-name":
        e = r.value
        return f"bad-name:wrong-length:{e.value}" if e.tag == "wrong-length" else f"bad-name:{e.tag}"
    return r.tag  # not-utf8, listed-twice


def break_text(b: Any) -> str:
    """A chain break as the vectors write it."""
    v = b.value
    if b.tag == "gap":
        return f"gap:{v.from_lsn}:{v.to_lsn}"
    return f"overlap:{v.from_lsn}:{v.to_lsn}:{v.held_by}:{v.after}"


def range_text(e: Any) -> str:
    return f"beyond-end:{e.value}" if e.tag == "beyond-end" else e.tag


def json_equal(a: Any, b: Any) -> bool:
    """Deep equality of JSON values, where true is not 1 and 1 is not 1.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return a == b


# --- One vector, as tests/plugin.rs runs it ---------------------------------------

def config(c: Dict[str, Any]) -> Any:
    """tests/util config(prefix), with the vector's batch size and delete flag."""
    from types import SimpleNamespace
    cfg = c["config"]
    return SimpleNamespace(prefix=cfg["prefix"], batch_size=cfg["batch_size"], batch_bytes=0,
                           verify_checksums=True, delete_after_archive=cfg.get("delete_after_archive", False),
                           retry_base_ms=1, retry_max_ms=4, compression=cfg.get("compression", "none"))


def run_vector(planner: Any, c: Dict[str, Any]) -> Dict[str, Any]:
    """What the planner gives for vector `c`, keyed as `expected` is."""
    from types import SimpleNamespace
    from storage import empty_state, names_of, pack_archive, pack_listing
    from wit_values import Case, Err, Ok

    listing = pack_listing((e["name"], e["utf8"], e["kind"], e["size"]) for e in c["listing"])
    archive_objects = [(o["name"], o["crc32c"]) for o in c.get("archive", [])]
    archive = None
    if "archive" in c:
        archive = pack_archive(
            ((o["name"], True, "file", o["size"], None if o["crc32c"] is None else int(o["crc32c"], 16))
             for o in c["archive"]),
            lsn_of(c.get("archive_chain_start")), lsn_of(c.get("archive_pruned_below")))
    cfg = config(c)

    # (1) scan and (2) plan-batches
    report = planner.scan(empty_state(), listing, archive)
    batches = planner.plan_batches(cfg, report.pending)
    got: Dict[str, Any] = {
        "pending": names_of(report.pending),
        "to_confirm": names_of(report.to_confirm),
        "pruned": report.pruned,
        "skipped": [[s.name, reason_text(s.reason)] for s in report.skipped],
        "breaks": [break_text(b) for b in report.breaks],
        "chain_start": lsn_text(report.state.chain_start),
        "batches": batches,
    }

    # (3) record-uploads: to-confirm, then pending, then record_extra
    def receipt(size: int, crc: int, existed: bool) -> Ok:
        return Ok(SimpleNamespace(read_size=size, read_crc32c=crc, stored_size=size,
                                  stored_crc32c=crc, existed=existed))
    fail = set(c.get("fail", []))
    outcomes = []
    for name, size in zip(names_of(report.to_confirm), report.to_confirm.sizes):
        crc = next(int(h, 16) for n, h in archive_objects if n == name)  # its archive entry's crc32c
        outcomes.append(SimpleNamespace(name=name, size=size, receipt=receipt(size, crc, True)))
    for name, size in zip(names_of(report.pending), report.pending.sizes):
        r = Err(Case("io", "injected")) if name in fail else receipt(size, 7, False)
        # An upload's outcome is named by its object: with zstd, `{name}.zst`.
        obj = name + ".zst" if cfg.compression == "zstd" else name
        outcomes.append(SimpleNamespace(name=obj, size=size, receipt=r))
    for x in c.get("record_extra", []):
        outcomes.append(SimpleNamespace(name=x["name"], size=x["size"], receipt=receipt(x["size"], 7, False)))
    recorded = planner.record_uploads(cfg, report.state, outcomes)
    got["recorded"] = {
        "watermark": lsn_text(recorded.state.last_archived_lsn),
        "archived": sorted(recorded.archived),
        "failed": sorted(f.name for f in recorded.failed),
        "refused": recorded.refused,
        "record_chain_start": lsn_text(recorded.record_chain_start),
    }

    # (4) deletable, with delete-after-archive on
    on = SimpleNamespace(**vars(cfg))
    on.delete_after_archive = True
    got["deletable"] = names_of(planner.deletable(on, recorded.state, listing))

    # (5) verify-plan, (6) restore-plan, (7) prune-plan of the archive listing
    archive = archive if archive is not None else pack_archive([])
    if "verify" in c:
        v = c["verify"]
        r = planner.verify_plan(archive, lsn_of(v["from"]), lsn_of(v["until"]))
        got["verify"] = ({"breaks": [break_text(b) for b in r.value.breaks], "off_chain": r.value.off_chain}
                         if isinstance(r, Ok) else {"error": range_text(r.value)})
    if "restore" in c:
        v = c["restore"]
        r = planner.restore_plan(archive, lsn_of(v["from"]), lsn_of(v["until"]))
        if isinstance(r, Ok):
            got["restore"] = {"chain": names_of(r.value)}
        elif r.value.tag == "broken":
            got["restore"] = {"break": break_text(r.value.value)}
        else:
            got["restore"] = {"range": range_text(r.value.value)}
    if "prune" in c:
        results = []
        for x in c["prune"]:
            r = planner.prune_plan(archive, lsn_of(x["before"]))
            if isinstance(r, Ok):
                o = r.value
                results.append({"segments": names_of(o.segments), "chain_start": str(o.chain_start),
                                "pruned_below": str(o.pruned_below)})
            elif r.value.tag == "no-chain":
                results.append({"error": "no-chain"})
            else:
                results.append({"error": f"above-watermark:{r.value.value}"})
        got["prune"] = results
    return got


# --- The fixture: the vector's WAL directory, built for real -----------------------

def disk_name(entry: Dict[str, Any]) -> bytes:
    """The name to create on disk: a name that is not UTF-8 is written in the
    vectors with U+FFFD; on disk each U+FFFD becomes the invalid byte 0xFF."""
    raw = entry["name"].encode("utf-8")
    if entry["utf8"]:
        return raw
    bad = raw.replace("\ufffd".encode("utf-8"), b"\xff")
    if bad == raw:
        raise ValueError(f"{entry['name']!r} is marked not UTF-8 but has no U+FFFD")
    return bad


def build_wal_dir(root: str, listing: List[Dict[str, Any]]) -> Tuple[str, List[Tuple[str, bool, str, int]]]:
    """Creates the entries of a vector's listing in `root`/wal (a name listed
    twice once) and returns the directory and the entries it holds."""
    wal = os.path.join(root, "wal")
    os.mkdir(wal)
    outside = os.path.join(root, "outside.seg")  # what symlinks point to: a regular file
    with open(outside, "wb") as f:
        f.write(b"not in the WAL directory")
    made: Dict[bytes, Tuple[str, bool, str, int]] = {}
    for e in listing:
        raw = disk_name(e)
        if raw in made:
            continue
        path = os.path.join(os.fsencode(wal), raw)
        kind = e["kind"]
        if kind == "file":
            with open(path, "wb") as f:
                f.write(bytes((i * 7 + len(path)) & 0xFF for i in range(e["size"])))
        elif kind == "dir":
            os.mkdir(path)
        elif kind == "symlink":
            os.symlink(os.fsencode(outside), path)
        elif kind == "other":
            os.mkfifo(path)
        else:
            raise ValueError(f"unknown kind {kind!r}")
        made[raw] = (e["name"], e["utf8"], kind, e["size"] if kind == "file" else 0)
    return wal, list(made.values())


def check_fixture(c: Dict[str, Any], tmp: str) -> List[str]:
    from storage import DirStorage, unpack_listing
    from wit_values import Ok
    wal, entries = build_wal_dir(tmp, c["listing"])
    listed = DirStorage(wal, os.path.join(tmp, "archive"), c["config"]["prefix"]).list_wal_dir()
    if not isinstance(listed, Ok) or sorted(unpack_listing(listed.value)) != sorted(entries):
        return [f"fixture: list-wal-dir gives {listed}, not the vector's entries {sorted(entries)}"]
    return []


def vector_case(component: Any, c: Dict[str, Any]) -> List[str]:
    from storage import DirStorage
    # Every vector gets a fresh instance; the storage is there to link (the
    # pure functions call no import).
    with tempfile.TemporaryDirectory(prefix="wal-archiver-py-") as tmp:
        problems = check_fixture(c, tmp)
        _store, planner = component.instantiate(DirStorage(os.path.join(tmp, "wal"), os.path.join(tmp, "archive")))
        got = run_vector(planner, c)
    for key, want in c["expected"].items():
        if not json_equal(got.get(key), want):
            problems.append(f"{key}: got {json.dumps(got.get(key), ensure_ascii=False)}, "
                            f"want {json.dumps(want, ensure_ascii=False)}")
    return problems


# --- Main ---------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 usage="run.py [--component COMPONENT.wasm] [COMPONENT.wasm] VECTORS.json")
    ap.add_argument("--component", help="the planner component (when not given as the first argument)")
    ap.add_argument("paths", nargs="+", help="[COMPONENT.wasm] VECTORS.json")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code == 0 else 2
    if len(args.paths) > 2 or (len(args.paths) == 2 and args.component):
        print("usage: run.py [COMPONENT.wasm] VECTORS.json", file=sys.stderr)
        return 2
    vectors = args.paths[-1]
    component_path = (args.paths[0] if len(args.paths) == 2 else args.component) \
        or os.environ.get("PLANNER_WASM") or os.path.join(HERE, "planner.wasm")
    try:
        import wit_values  # imports wasmtime
    except ImportError as e:
        print(f"cannot import wasmtime ({e}): pip install -r {os.path.join(HERE, 'requirements.txt')}",
              file=sys.stderr)
        return 2
    if not os.path.isfile(component_path):
        print(f"no component at {component_path}: pass it first, or set PLANNER_WASM", file=sys.stderr)
        return 2
    try:
        component = wit_values.PlannerComponent(component_path)
    except Exception as e:
        print(f"cannot load the component {component_path}: {e}", file=sys.stderr)
        return 2
    try:
        with open(vectors, encoding="utf-8") as f:
            doc = json.load(f)
        cases = doc["cases"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"cannot read the vectors {vectors}: {e}", file=sys.stderr)
        return 2

    import cycle
    checks: List[Tuple[str, Callable[[], List[str]]]] = [
        (c["name"], (lambda c=c: vector_case(component, c))) for c in cases
    ]
    checks += [(f"whole cycle: {name}", f) for name, f in cycle.checks(component)]

    passed = failed = 0
    for name, check in checks:
        try:
            problems = check()
        except Exception as e:  # a trap or a conversion error fails this case only
            tb = traceback.extract_tb(e.__traceback__)[-1]
            problems = [f"{type(e).__name__}: {e} (at {os.path.basename(tb.filename)}:{tb.lineno})"]
        if problems:
            failed += 1
            print(f"FAILED {name}\n  " + "\n  ".join(problems))
        else:
            passed += 1
            print(f"ok {name}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
