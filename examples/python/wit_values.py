"""Loading the planner component with wasmtime-py and converting its values.

This is the only module that touches wasmtime. It turns wasmtime-py's own
value representation into a plain, predictable one and back, driven by the
types the component declares, so that nothing else depends on how
wasmtime-py happens to represent a WIT type:

    WIT                         here (both directions)
    record {first-lsn: u64}     types.SimpleNamespace(first_lsn=...)   (a dict
                                with snake_case or kebab-case keys is also
                                accepted when lowering)
    variant / enum case         Case(tag, value)  /  str
    option<T>                   None or the value
    result<T, E>                Ok(value) or Err(value)
    list<u8>                    bytes
    list<T>, tuple<...>         list, tuple
    u8..u64, s8..s64            int, range-checked when lowering
    bool, string, char          bool, str, str

wasmtime-py itself (50.0.1) gives records as `wasmtime.component.Record`
objects whose attribute names are the WIT kebab-case names (reach them with
getattr), and gives a variant, option or result *untagged* (the bare payload,
or None for a case without one) whenever the Python classes of its cases do
not overlap, and tagged (`Variant(tag, payload)`) otherwise. Whether a type is
tagged can change with the WIT, so it is decided here from the types.

Its rule counts a case without payload as the class `object`, and an untagged
variant nested in a case passes that `object` on: in WIT 0.4.0
`result<prune-order, prune-error>` is untagged (Record, or None for
`no-chain`, or an int for `above-watermark`), yet by `isinstance` a Record is
also an `object`. Lifting here therefore tells cases apart by what each can
really give (`_shape`), and lowering checks that wasmtime-py's first-match
rule picks the intended case (`_lowered_case`).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import wasmtime
from wasmtime import Engine, Store
from wasmtime.component import (
    Bool, Char, Component, EnumType, F32, F64, FlagsType, FuncType, Linker, ListType,
    OptionType, Record, RecordType, ResultType, S8, S16, S32, S64, String, TupleType,
    U8, U16, U32, U64, Variant, VariantType,
)

PACKAGE = "nodedb:wal-archiver"


# --- The plain representation -------------------------------------------------

@dataclass(frozen=True)
class Case:
    """A case of a WIT variant: its kebab-case name and payload (None if none)."""
    tag: str
    value: Any = None


@dataclass(frozen=True)
class Ok:
    value: Any = None


@dataclass(frozen=True)
class Err:
    value: Any = None


def snake(name: str) -> str:
    return name.replace("-", "_")


# --- Converters built once per type --------------------------------------------
#
# lift(ty)  returns a function: wasmtime-py value -> plain value
# lower(ty) returns a function: plain value -> wasmtime-py value
# Either may return None, meaning "no conversion needed" (a fast path for the
# long lists of integers, booleans and enum names in a dir-listing).

Conv = Optional[Callable[[Any], Any]]

INT_RANGES = {
    U8: (0, 2**8 - 1), U16: (0, 2**16 - 1), U32: (0, 2**32 - 1), U64: (0, 2**64 - 1),
    S8: (-2**7, 2**7 - 1), S16: (-2**15, 2**15 - 1), S32: (-2**31, 2**31 - 1), S64: (-2**63, 2**63 - 1),
}


def _classes(ty: Any) -> set:
    s: set = set()
    ty.add_classes(s)
    return s


def _cases(ty: Any) -> List[Tuple[str, Any]]:
    if isinstance(ty, OptionType):
        return [("none", None), ("some", ty.payload)]
    if isinstance(ty, ResultType):
        return [("ok", ty.ok), ("err", ty.err)]
    return ty.cases


def _is_tagged(ty: Any, cases: List[Tuple[str, Any]]) -> bool:
    """Whether wasmtime-py wraps values of `ty` in `Variant`: the rule of
    wasmtime-py's VariantLikeType._tagged, restated from public methods."""
    seen: set = set()
    tagged = False
    for _, case_ty in cases:
        cls = {object} if case_ty is None else _classes(case_ty)
        if cls & seen:
            tagged = True
            break
        seen |= cls
    private = getattr(ty, "_tagged", None)
    if private is not None and private() != tagged:
        raise RuntimeError("this wasmtime-py tags variants differently from the rule in wit_values.py")
    return tagged


def _shape(ty: Any) -> Tuple[Tuple[type, ...], bool]:
    """What a bare value lifted by wasmtime-py from `ty` can be: instances of
    these classes, and None when the bool is true. Unlike `add_classes`,
    which stands for a case without payload with `object` (the class of
    everything), this is exact."""
    if isinstance(ty, (VariantType, OptionType, ResultType)) and not _is_tagged(ty, _cases(ty)):
        classes: set = set()
        none = False
        for _, cty in _cases(ty):
            if cty is None:
                none = True
            else:
                c, n = _shape(cty)
                classes |= set(c)
                none |= n
        return tuple(classes), none
    return tuple(_classes(ty)), False


def _lifted_case(cases: List[Tuple[str, Any]]) -> Callable[[Any], str]:
    """For an untagged type: which case a bare value that wasmtime-py lifted
    came from. Refuses a value that several cases can give (wasmtime-py has
    dropped the tag, and nothing can recover it)."""
    tests = [(name, ((), True) if cty is None else _shape(cty)) for name, cty in cases]

    def match(v: Any) -> str:
        hits = [name for name, (cls, none) in tests if (v is None and none) or isinstance(v, cls)]
        if len(hits) != 1:
            raise TypeError(f"value {v!r} cannot be told apart among cases {[n for n, _ in tests]}: matches {hits}")
        return hits[0]

    return match


def _lowered_case(cases: List[Tuple[str, Any]]) -> Callable[[Any], Optional[str]]:
    """For an untagged type: the case wasmtime-py picks when it lowers a bare
    value, by its own rule: the first case without payload if the value is
    None, else the first case whose `add_classes` the value is an instance
    of (where `object`, from a nested case without payload, takes anything)."""
    tests = [(name, None if cty is None else tuple(_classes(cty))) for name, cty in cases]

    def pick(v: Any) -> Optional[str]:
        for name, cls in tests:
            if (v is None) if cls is None else isinstance(v, cls):
                return name
        return None

    return pick


def lift(ty: Any) -> Conv:
    if isinstance(ty, (Bool, Char, String, EnumType, F32, F64)) or type(ty) in INT_RANGES:
        return None
    if isinstance(ty, ListType):
        el = ty.element
        if isinstance(el, U8):
            return None  # wasmtime-py already gives bytes
        f = lift(el)
        return None if f is None else (lambda v: [f(x) for x in v])
    if isinstance(ty, TupleType):
        fs = [lift(e) for e in ty.elements]
        if all(f is None for f in fs):
            return None
        return lambda v: tuple(x if f is None else f(x) for f, x in zip(fs, v))
    if isinstance(ty, RecordType):
        fields = [(name, snake(name), lift(fty)) for name, fty in ty.fields]

        def lift_record(v: Any) -> types.SimpleNamespace:
            out = types.SimpleNamespace()
            d = out.__dict__
            for kebab, py, f in fields:
                x = getattr(v, kebab)
                d[py] = x if f is None else f(x)
            return out
        return lift_record
    if isinstance(ty, FlagsType):
        return None  # a set of names
    if isinstance(ty, (VariantType, OptionType, ResultType)):
        cases = _cases(ty)
        if isinstance(ty, OptionType) and isinstance(ty.payload, OptionType):
            raise NotImplementedError("option<option<T>> has no plain representation here")
        payload = {name: (None if cty is None else lift(cty)) for name, cty in cases}
        if isinstance(ty, OptionType):
            make = lambda tag, x: x if tag == "some" else None
        elif isinstance(ty, ResultType):
            make = lambda tag, x: Ok(x) if tag == "ok" else Err(x)
        else:
            make = Case
        if _is_tagged(ty, cases):
            def lift_tagged(v: Any) -> Any:
                f = payload[v.tag]
                return make(v.tag, v.payload if f is None else f(v.payload))
            return lift_tagged
        which = _lifted_case(cases)

        def lift_untagged(v: Any) -> Any:
            tag = which(v)
            f = payload[tag]
            return make(tag, v if f is None else f(v))
        return lift_untagged
    raise NotImplementedError(f"no conversion for {type(ty).__name__}")


def _check_int(lo: int, hi: int, what: str) -> Callable[[Any], Any]:
    def check(v: Any) -> int:
        # bool is an int in Python; ctypes would silently wrap out-of-range values.
        if type(v) is bool or not isinstance(v, int) or not lo <= v <= hi:
            raise TypeError(f"{v!r} is not a {what}")
        return v
    return check


def lower(ty: Any) -> Conv:
    rng = INT_RANGES.get(type(ty))
    if rng is not None:
        return _check_int(*rng, type(ty).__name__.lower())
    if isinstance(ty, (Bool, Char, String, EnumType, F32, F64)):
        return None  # wasmtime-py checks these itself (bool must be a real bool)
    if isinstance(ty, ListType):
        el = ty.element
        if isinstance(el, U8):
            return lambda v: v if type(v) is bytes else bytes(v)
        f = lower(el)
        if f is None:
            return lambda v: v if type(v) is list else list(v)
        if isinstance(el, (U32, U64)):
            lo, hi = INT_RANGES[type(el)]

            def lower_ints(v: Any) -> list:
                v = v if type(v) is list else list(v)
                # One pass for the common case; the per-element check only on failure.
                if v and (min(v) < lo or max(v) > hi or not all(type(x) is int for x in v)):
                    return [f(x) for x in v]
                return v
            return lower_ints
        return lambda v: [f(x) for x in v]
    if isinstance(ty, TupleType):
        fs = [lower(e) for e in ty.elements]
        return lambda v: tuple(x if f is None else f(x) for f, x in zip(fs, v))
    if isinstance(ty, RecordType):
        fields = [(name, snake(name), lower(fty)) for name, fty in ty.fields]

        def lower_record(v: Any) -> Record:
            out = Record()
            d = out.__dict__
            mapping = isinstance(v, dict)
            for kebab, py, f in fields:
                if mapping:
                    x = v[py] if py in v else v[kebab]
                else:
                    x = getattr(v, py)
                d[kebab] = x if f is None else f(x)
            return out
        return lower_record
    if isinstance(ty, FlagsType):
        return lambda v: set(v)
    if isinstance(ty, (VariantType, OptionType, ResultType)):
        cases = _cases(ty)
        payload = {name: (None if cty is None else lower(cty)) for name, cty in cases}
        bare = {name for name, cty in cases if cty is None}
        if isinstance(ty, OptionType):
            split = lambda v: ("none", None) if v is None else ("some", v)
        elif isinstance(ty, ResultType):
            def split(v: Any) -> Tuple[str, Any]:
                if isinstance(v, Ok):
                    return "ok", v.value
                if isinstance(v, Err):
                    return "err", v.value
                raise TypeError(f"expected Ok(...) or Err(...), got {v!r}")
        else:
            def split(v: Any) -> Tuple[str, Any]:
                if isinstance(v, Case):
                    return v.tag, v.value
                if isinstance(v, str):
                    return v, None  # a case without payload may be given by name
                raise TypeError(f"expected Case(tag, value), got {v!r}")
        tagged = _is_tagged(ty, cases)
        which = None if tagged else _lowered_case(cases)

        def lower_variant(v: Any) -> Any:
            tag, x = split(v)
            if tag not in payload:
                raise TypeError(f"no case {tag!r} in {[n for n, _ in cases]}")
            if tag in bare:
                if x is not None:
                    raise TypeError(f"case {tag!r} carries no value, got {x!r}")
            else:
                f = payload[tag]
                x = x if f is None else f(x)
            if tagged:
                return Variant(tag, x)
            picked = which(x)
            if picked != tag:  # wasmtime-py picks the case from the value's class
                raise TypeError(f"wasmtime-py would lower {x!r} for case {tag!r} as case {picked!r}")
            return x
        return lower_variant
    raise NotImplementedError(f"no conversion for {type(ty).__name__}")


def _apply(f: Conv, v: Any) -> Any:
    return v if f is None else f(v)


# --- Exported functions -----------------------------------------------------------

class ExportedFunc:
    """An exported component function taking and returning plain values."""

    def __init__(self, store: Store, func: Any, name: str):
        self.store, self.func, self.name = store, func, name
        fty = func.type(store)
        self.params = [(pname, lower(pty)) for pname, pty in fty.params]
        rty = fty.result
        self.result = None if rty is None else lift(rty)

    def raw(self, *args: Any) -> Any:
        """Calls with wasmtime-py values as they are, and returns its value."""
        return self.func(self.store, *args)

    def __call__(self, *args: Any) -> Any:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {[p for p, _ in self.params]}")
        low = [_apply(f, a) for (_, f), a in zip(self.params, args)]
        return _apply(self.result, self.func(self.store, *low))


class Planner:
    """The planner's exports as Python methods: `planner.plan_batch(...)`."""

    def __init__(self, funcs: Dict[str, ExportedFunc]):
        self.funcs = funcs
        for name, f in funcs.items():
            setattr(self, snake(name), f)


# --- Loading and linking ------------------------------------------------------------

def _interface(names: List[str], iface: str) -> Optional[str]:
    """The full name `nodedb:wal-archiver/{iface}@x.y.z` among `names`."""
    for n in names:
        if n.startswith(f"{PACKAGE}/{iface}@"):
            return n
    return None


class PlannerComponent:
    """The compiled component, ready to instantiate against Python imports."""

    def __init__(self, path: str, engine: Optional[Engine] = None):
        self.engine = engine or Engine()
        self.component = Component.from_file(self.engine, path)
        ctype = self.component.type
        self.imports = ctype.imports(self.engine)
        self.exports = ctype.exports(self.engine)
        self.storage_name = _interface(list(self.imports), "storage")
        self.planner_name = _interface(list(self.exports), "planner")
        if self.planner_name is None:
            raise ValueError(f"{path} does not export {PACKAGE}/planner: exports {list(self.exports)}")
        self.version = self.planner_name.rsplit("@", 1)[1]
        # The storage functions the component actually imports (wit-component
        # leaves out those the guest never calls), with their types.
        self.storage_funcs: Dict[str, FuncType] = {}
        if self.storage_name is not None:
            for fname, item in self.imports[self.storage_name].ty.exports(self.engine).items():
                ty = item.ty
                if isinstance(ty, FuncType):
                    self.storage_funcs[fname] = ty

    def instantiate(self, storage: Any) -> Tuple[Store, Planner]:
        """A fresh store and instance whose storage imports call methods of
        `storage` (`list-wal-dir` -> `storage.list_wal_dir`, taking and
        returning plain values). After a trap, an instance cannot be entered
        again: instantiate anew."""
        linker = Linker(self.engine)
        if self.storage_name is not None:
            with linker.root() as root:
                with root.add_instance(self.storage_name) as inst:
                    for fname, fty in self.storage_funcs.items():
                        inst.add_func(fname, _import_adapter(storage, fname, fty))
        store = Store(self.engine)
        instance = linker.instantiate(store, self.component)
        idx = instance.get_export_index(store, self.planner_name)
        funcs = {}
        for fname, item in self.exports[self.planner_name].ty.exports(self.engine).items():
            if not isinstance(item.ty, FuncType):
                continue
            fidx = instance.get_export_index(store, fname, idx)
            func = instance.get_func(store, fidx)
            funcs[fname] = ExportedFunc(store, func, fname)
        return store, Planner(funcs)


def _import_adapter(storage: Any, fname: str, fty: FuncType) -> Callable[..., Any]:
    method = getattr(storage, snake(fname))
    params = [lift(pty) for _, pty in fty.params]
    rty = fty.result
    result = None if rty is None else lower(rty)

    def call(_store: Any, *args: Any) -> Any:
        # wasmtime-py passes the StoreContext first. An exception raised here
        # traps the guest and is raised again from the export call.
        plain = [_apply(f, a) for f, a in zip(params, args)]
        return _apply(result, method(*plain))
    return call


__all__ = ["Case", "Ok", "Err", "PlannerComponent", "Planner", "ExportedFunc", "lift", "lower", "snake", "wasmtime"]
