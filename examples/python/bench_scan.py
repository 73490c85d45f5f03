"""How long `scan` and an idle `run-cycle` take from Python, and where the time goes.

    python3 bench_scan.py [--component PLANNER.wasm] [--rounds 5] [N ...]

Segment i holds LSNs i*1000+1 ..= (i+1)*1000, every entry a 16 MiB file.
  steady   scan: N listed, all but the newest 16 archived below the
           watermark in the state (small report: 16 pending)
  backlog  scan: N listed, nothing archived (the report carries N segments back)
  archive  scan as run-cycle does it every cycle: the steady state, the
           listing and an archive listing of the N-16 archived objects
  cycle    run-cycle, nothing to do: N listed, N archived; the listings come
           from Python storage imports (built beforehand), so they cross
           from Python into the guest as import results

Columns (medians, milliseconds):
  pack     building the packed listings in Python (storage.pack_*)
  lower    wit_values: plain values -> wasmtime-py values (range checks, Record)
  to_c     wasmtime-py: its values -> C values (ValType.convert_to_c), measured
           alone; for cycle, of the two import results
  call     wasmtime-py Func call with ready wasmtime-py values: to_c, wasm
           and wasmtime-py's C values -> its values (from_c)
  wasm     of call, the time inside the C call wasmtime_component_func_call:
           C values into guest memory (canonical ABI), the planner, and back
           to C values; what the Rust host's figures compare with. For cycle
           it includes the Python import calls and their conversions
  lift     wit_values: wasmtime-py values -> plain values
  total    the plain call (planner.scan(...), planner.run_cycle(...)): all but pack
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from importlib.metadata import version
from types import SimpleNamespace
from typing import Any, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from storage import empty_state, pack, pack_archive, pack_listing  # noqa: E402
from wit_values import Ok, PlannerComponent, lower  # noqa: E402

SPAN = 1000
SEGMENT_BYTES = 16 << 20
NEW = 16


def name(i: int) -> str:
    return f"wal-{i * SPAN + 1:016x}-{(i + 1) * SPAN:016x}.seg"


def state(names: List[str], archived: int) -> SimpleNamespace:
    """The state of an archiver that archived the first `archived` segments."""
    s = empty_state()
    if archived:
        s.chain_start = 1
        s.last_archived_lsn = archived * SPAN
        s.segments_archived = archived
        s.bytes_archived = archived * SEGMENT_BYTES
        s.archived = pack(names[:archived], sizes=[SEGMENT_BYTES] * archived, crc32cs=list(range(archived)))
    return s


def archive(names: List[str], archived: int) -> SimpleNamespace:
    return pack_archive(((n, True, "file", SEGMENT_BYTES, i) for i, n in enumerate(names[:archived])), chain_start=1)


class ListingsOnly:
    """Storage imports that hand out listings built beforehand, and refuse
    anything else (an idle cycle calls nothing else)."""

    def __init__(self, listing: Any, archive_listing: Any):
        self.listing, self.archive_listing = Ok(listing), Ok(archive_listing)

    def list_wal_dir(self) -> Any:
        return self.listing

    def list_archive(self) -> Any:
        return self.archive_listing

    def __getattr__(self, attr: str) -> Any:
        def refuse(*_a: Any) -> Any:
            raise RuntimeError(f"an idle cycle called {attr}")
        return refuse


def median_ms(f, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def to_c_only(store, tys, args) -> None:
    """wasmtime-py's own lowering of values to C values, then freed."""
    from wasmtime import _ffi as ffi  # internal: only to split the call's time
    vals = (ffi.wasmtime_component_val_t * len(tys))()
    for i, (ty, a) in enumerate(zip(tys, args)):
        ty.convert_to_c(store, a, ctypes.pointer(vals[i]))
    for i in range(len(tys)):
        ffi.wasmtime_component_val_delete(ctypes.byref(vals[i]))


class WasmClock:
    """Times the C call inside wasmtime-py's Func.__call__ (patched in _ffi)."""

    def __init__(self) -> None:
        from wasmtime import _ffi as ffi  # internal: only to split the call's time
        self.last = 0.0
        inner = ffi.wasmtime_component_func_call

        def timed(*a):
            t = time.perf_counter()
            try:
                return inner(*a)
            finally:
                self.last = (time.perf_counter() - t) * 1000
        ffi.wasmtime_component_func_call = timed


def row(case: str, n: int, cols: List[float], out: str) -> None:
    pack_ms, lower_ms, to_c, call, wasm, lift_ms, total = cols
    print(f"{case:8} {n:>7} {pack_ms:8.1f} {lower_ms:8.1f} {to_c:8.1f} {call:9.1f} {wasm:8.2f} "
          f"{lift_ms:8.1f} {total:9.1f}  {out}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--component", default=os.environ.get("PLANNER_WASM")
                    or os.path.join(os.path.dirname(os.path.abspath(__file__)), "planner.wasm"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000])
    args = ap.parse_args()

    clock = WasmClock()
    component = PlannerComponent(args.component)
    print(f"wasmtime-py {version('wasmtime')}, component {component.version}, "
          f"{args.rounds} rounds, medians in ms")
    print(f"{'case':8} {'N':>7} {'pack':>8} {'lower':>8} {'to_c':>8} {'call':>9} {'wasm':>8} "
          f"{'lift':>8} {'total':>9}  report")
    r = args.rounds

    def wasm_ms(f) -> float:
        times = []
        for _ in range(r):
            f()
            times.append(clock.last)
        return statistics.median(times)

    for n in args.sizes:
        names = [name(i) for i in range(n)]
        entries = [(nm, True, "file", SEGMENT_BYTES) for nm in names]
        listing = pack_listing(entries)
        cases = {
            "steady": (state(names, n - NEW), None),
            "backlog": (state(names, 0), None),
            "archive": (state(names, n - NEW), archive(names, n - NEW)),
        }
        # scan calls no import: the storage is there only to link.
        store, planner = component.instantiate(ListingsOnly(listing, archive(names, 0)))
        scan = planner.scan
        tys = [ty for _, ty in scan.func.type(store).params]
        for case, (st, arch) in cases.items():
            plain = (st, listing, arch)
            low = [f(a) for (_, f), a in zip(scan.params, plain)]
            out = scan.result(scan.raw(*low))
            raw = scan.raw(*low)
            t_pack = median_ms(lambda: pack_listing(entries), r) + (
                median_ms(lambda: archive(names, n - NEW), r) if arch is not None else 0.0)
            cols = [
                t_pack,
                median_ms(lambda: [f(a) for (_, f), a in zip(scan.params, plain)], r),
                median_ms(lambda: to_c_only(store, tys, low), r),
                median_ms(lambda: scan.raw(*low), r),
                wasm_ms(lambda: scan.raw(*low)),
                median_ms(lambda: scan.result(raw), r),
                median_ms(lambda: scan(*plain), r),
            ]
            row(case, n, cols, f"pending {len(out.pending.ends)}, to-confirm {len(out.to_confirm.ends)}")

        # An idle run-cycle: every segment archived, the state up to date.
        full = archive(names, n)
        storage = ListingsOnly(listing, full)
        store, planner = component.instantiate(storage)
        cycle = planner.run_cycle
        config = SimpleNamespace(prefix="", batch_size=16, batch_bytes=0, verify_checksums=True,
                                 delete_after_archive=False, retry_base_ms=1000, retry_max_ms=60_000,
                                 compression="none")
        st = state(names, n)
        rep = cycle(config, st)
        assert isinstance(rep, Ok) and not rep.value.archived and rep.value.state.last_archived_lsn == n * SPAN, rep
        low = [f(a) for (_, f), a in zip(cycle.params, (config, st))]
        raw = cycle.raw(*low)
        imports = component.storage_funcs
        results = [imports["list-wal-dir"].result, imports["list-archive"].result]
        listings = [storage.listing, storage.archive_listing]
        low_results = [lower(ty)(v) for ty, v in zip(results, listings)]
        cols = [
            median_ms(lambda: (pack_listing(entries), archive(names, n)), r),
            median_ms(lambda: [f(a) for (_, f), a in zip(cycle.params, (config, st))], r)
            + median_ms(lambda: [lower(ty)(v) for ty, v in zip(results, listings)], r),
            median_ms(lambda: to_c_only(store, results, low_results), r),
            median_ms(lambda: cycle.raw(*low), r),
            wasm_ms(lambda: cycle.raw(*low)),
            median_ms(lambda: cycle.result(raw), r),
            median_ms(lambda: cycle(config, st), r),
        ]
        row("cycle", n, cols, "nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
