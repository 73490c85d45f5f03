"""The planner's storage imports (`nodedb:wal-archiver/storage@0.7.0`), in Python.

The WAL directory is a real directory; the archive is a plain directory
standing in for an object store (a key `{prefix}/{name}` is the file
`{archive}/{prefix}/{name}`):

    {archive}/{prefix}/{name}                                   the object
    {archive}/{prefix}/_checksums/{name}.crc32c-{8 hex}-{size}  its checksum record (empty;
                                                                the size in decimal)
    {archive}/{prefix}/_chain/start-{016x}                      a recorded chain start
    {archive}/{prefix}/_chain/pruned-below-{016x}               a recorded prune floor
    {archive}/{prefix}/_staging/                                uploads in flight
    {archive}/{prefix}/_conflicts/                              conflicts another host noted (not listed)

The three `_` folders are the host's own: they are not archive entries.

Methods take and return the plain values of wit_values (records as
SimpleNamespace with snake_case fields, results as Ok/Err, variants as Case);
they never see wasmtime. A method name is the WIT name in snake_case.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from wit_values import Case, Err, Ok

CHUNK = 1 << 20
CHECKSUM_DIR = "_checksums"
CHAIN_DIR = "_chain"
STAGING_DIR = "_staging"
CONFLICT_DIR = "_conflicts"
OWN_DIRS = {CHECKSUM_DIR.encode(), CHAIN_DIR.encode(), STAGING_DIR.encode(), CONFLICT_DIR.encode()}
MARKER_INFIX = b".crc32c-"
HEX = set(b"0123456789abcdef")


# --- CRC32C (Castagnoli), table-driven: plain Python, about 10 MB/s ----------

def _crc_table() -> List[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C of `data`, continuing from `crc` (0 to start)."""
    c = crc ^ 0xFFFFFFFF
    t = _TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C


# --- Packed lists ---------------------------------------------------------------
#
# Every list of names in the WIT is packed: the names in one string, where
# each one ends (in bytes of UTF-8) in `ends`, and each other field in a list
# of its own.

def pack(names: Iterable[str], **columns: Sequence[Any]) -> SimpleNamespace:
    """A packed record: `names`, `ends`, and the given columns as they are."""
    parts: List[str] = []
    ends: List[int] = []
    at = 0
    for n in names:
        parts.append(n)
        at += len(n.encode("utf-8"))
        ends.append(at)
    return SimpleNamespace(names="".join(parts), ends=ends, **{k: list(v) for k, v in columns.items()})


def unpack_names(names: str, ends: Sequence[int]) -> List[str]:
    """The names of a packed list. A bound outside the names or inside a
    character gives "" (the planner's own lists never have one)."""
    raw = names.encode("utf-8")
    out = []
    start = 0
    for end in ends:
        try:
            out.append(raw[start:end].decode("utf-8") if start <= end <= len(raw) else "")
        except UnicodeDecodeError:
            out.append("")
        start = max(start, end)
    return out


def names_of(packed: Any) -> List[str]:
    """The names of a packed record (segment-list, archived-list, ...)."""
    return unpack_names(packed.names, packed.ends)


# A listing carries each entry's kind as a byte, the position of its case in
# the WIT's `entry-kind`, and each flag (`utf8`, `recorded`) as 1 or 0.
KIND_CODES = {"file": 0, "dir": 1, "symlink": 2, "other": 3}
KIND_NAMES = {code: kind for kind, code in KIND_CODES.items()}


def pack_listing(entries: Iterable[Tuple[str, bool, str, int]]) -> SimpleNamespace:
    """A WIT `dir-listing` of entries (name, utf8, kind, size)."""
    entries = list(entries)
    return pack((e[0] for e in entries), sizes=[e[3] for e in entries],
                kinds=[KIND_CODES[e[2]] for e in entries], utf8=[int(e[1]) for e in entries])


def unpack_listing(listing: Any) -> List[Tuple[str, bool, str, int]]:
    """The entries of a packed `dir-listing`, as `pack_listing` takes them,
    read as the planner reads them (an unknown kind is `other`, a flag is
    set only when it is 1)."""
    return [(n, listing.utf8[i] == 1, KIND_NAMES.get(listing.kinds[i], "other"), listing.sizes[i])
            for i, n in enumerate(names_of(listing))]


def pack_archive(objects: Iterable[Tuple[str, bool, str, int, Optional[int]]],
                 chain_start: Optional[int] = None, pruned_below: Optional[int] = None) -> SimpleNamespace:
    """A WIT `archive-listing` of objects (name, utf8, kind, size, recorded CRC32C or None)."""
    objects = list(objects)
    listing = pack((o[0] for o in objects), sizes=[o[3] for o in objects],
                   kinds=[KIND_CODES[o[2]] for o in objects], utf8=[int(o[1]) for o in objects],
                   crc32cs=[o[4] or 0 for o in objects], recorded=[int(o[4] is not None) for o in objects])
    listing.chain_start = chain_start
    listing.pruned_below = pruned_below
    return listing


def empty_state() -> SimpleNamespace:
    """The WIT `archiver-state` of an archiver that knows nothing yet."""
    return SimpleNamespace(
        chain_start=None, last_archived_lsn=None, pruned_below=None,
        segments_archived=0, bytes_archived=0, failures=0,
        archived=pack([], sizes=[], crc32cs=[]),
        failing=SimpleNamespace(names="", ends=[], attempts=[], reasons="", reason_ends=[]),
        conflicts=[])


# --- Errors ------------------------------------------------------------------------

def _err(tag: str, text: str) -> Err:
    return Err(Case(tag, text))


def refused(why: str) -> Err:
    return _err("refused", why)


def check_name(name: str) -> Optional[Err]:
    """None if `name` is a plain entry name: not empty, not `.` or `..`, no `/` or NUL."""
    if name == "":
        return refused("the empty name is not an entry name")
    if name in (".", ".."):
        return refused(f"{name!r} is not an entry name")
    if "/" in name or "\0" in name:
        return refused(f"{name!r} is not directly inside the directory")
    return None


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _decode(raw: bytes) -> Tuple[str, bool]:
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


def _sync_dir(path: Union[str, bytes]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_synced(path: str) -> None:
    """Creates `path` and missing parents, each made durable in its parent."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    _makedirs_synced(parent)
    try:
        os.mkdir(path)
    except FileExistsError:
        # Made meanwhile is fine; a file or a symlink in its place is not.
        if os.path.isdir(path) and not os.path.islink(path):
            return
        raise
    _sync_dir(parent)


def _create_empty(path: str) -> bool:
    """Creates the empty file `path`, create-only, durably. False if it was there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return False
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _sync_dir(os.path.dirname(path))
    return True


class _Read(SimpleNamespace):
    """What was read from one descriptor: size, crc, and the fstat before."""


class DirStorage:
    """Storage over a WAL directory and an archive directory."""

    def __init__(self, wal_dir: str, archive_dir: str, prefix: str = ""):
        parts = prefix.split("/") if prefix else []
        if any(p in ("", ".", "..") or "\0" in p for p in parts):
            raise ValueError(f"prefix {prefix!r}: no leading, trailing or doubled '/', no '.' or '..'")
        self.wal_dir = os.path.abspath(wal_dir)
        self.archive_dir = os.path.abspath(archive_dir)
        self.prefix = prefix
        self.base = os.path.join(self.archive_dir, *parts)  # where the prefix's objects are
        self.calls: List[tuple] = []  # every call the component made, in order
        self._staged = itertools.count()

    # -- keys and paths ---------------------------------------------------------------

    def key_of(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _check(self, name: str, key: str) -> Optional[Err]:
        bad = check_name(name)
        if bad is None and key != self.key_of(name):
            bad = refused(f"key {key!r} is not the key of {name!r} ({self.key_of(name)!r})")
        return bad

    def _wal_path(self, name: str) -> bytes:
        return os.path.join(os.fsencode(self.wal_dir), name.encode("utf-8"))

    def _object_path(self, name: str) -> str:
        return os.path.join(self.base, name)

    def _marker_path(self, name: str, crc: int, size: int) -> str:
        return os.path.join(self.base, CHECKSUM_DIR, f"{name}.crc32c-{crc:08x}-{size}")

    # -- reading -----------------------------------------------------------------------

    def _read_local(self, name: str, size: Optional[int],
                    sink: Optional[Callable[[bytes], Any]] = None) -> Union[_Read, Err]:
        """Host duty, step 1 of `upload`: one descriptor, never through a
        symlink, fstat before and after the read. `changed` if the size or
        modification time moved, or the bytes read are not `size` (or, when
        `size` is None, not the size fstat gives)."""
        path = self._wal_path(name)
        shown = os.fsdecode(path)
        try:
            # O_NONBLOCK: a FIFO cannot hang the open; it changes nothing for a regular file.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return _err("not-found", f"cannot read segment {shown}: not found")
            if e.errno in (errno.ELOOP, errno.ENXIO):
                return _err("not-a-file", f"cannot read segment {shown}: a symlink, socket or device")
            return _err("io", f"cannot open segment {shown}: {e.strerror}")
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return _err("not-a-file", f"cannot read segment {shown}: not a regular file")
            n, crc = 0, 0
            while chunk := os.read(fd, CHUNK):
                n += len(chunk)
                crc = crc32c(chunk, crc)
                if sink is not None:
                    sink(chunk)
            after = os.fstat(fd)
        except OSError as e:
            return _err("io", f"cannot read segment {shown}: {e.strerror}")
        finally:
            os.close(fd)
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            return _err("changed", f"segment {shown} changed while it was read")
        want = after.st_size if size is None else size
        if n != want:
            return _err("changed", f"segment {shown}: {n} bytes read, {want} expected")
        return _Read(size=n, crc=crc, st=before)

    def _read_object(self, name: str) -> Union[None, Tuple[int, int], Err]:
        """The size and CRC32C (read back) of the object under `name`'s key;
        None when there is none."""
        path = self._object_path(name)
        key = self.key_of(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENXIO):
                return _err("io", f"cannot read archived {key}: not an object (a symlink, socket or device)")
            return _err("io", f"cannot read archived {key}: {e.strerror}")
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return _err("io", f"cannot read archived {key}: not an object (a directory or special file)")
            n, crc = 0, 0
            while chunk := os.read(fd, CHUNK):
                n += len(chunk)
                crc = crc32c(chunk, crc)
            os.fsync(fd)  # durable before anyone records or relies on it
            return n, crc
        except OSError as e:
            return _err("io", f"cannot read archived {key}: {e.strerror}")
        finally:
            os.close(fd)

    def _record(self, name: str, crc: int, size: int) -> None:
        """Step 4: the checksum record of an object already durable."""
        _makedirs_synced(os.path.join(self.base, CHECKSUM_DIR))
        _create_empty(self._marker_path(name, crc, size))

    def _same_or_conflict(self, name: str, local: _Read, obj: Tuple[int, int]) -> Any:
        """Step 5: the object under the key against the local bytes."""
        osize, ocrc = obj
        if (osize, ocrc) != (local.size, local.crc):
            return Err(Case("conflict", SimpleNamespace(
                name=name, local_size=local.size, local_crc32c=local.crc,
                archived_size=osize, archived_crc32c=ocrc)))
        try:
            _sync_dir(self.base)
            self._record(name, ocrc, osize)
        except OSError as e:
            return _err("io", f"cannot record the checksum of {self.key_of(name)}: {e.strerror}")
        return Ok(SimpleNamespace(read_size=local.size, read_crc32c=local.crc,
                                  stored_size=osize, stored_crc32c=ocrc, existed=True))

    # -- the imports ------------------------------------------------------------------

    def list_wal_dir(self) -> Any:
        self.calls.append(("list-wal-dir",))
        entries = []
        try:
            with os.scandir(os.fsencode(self.wal_dir)) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                        kind, size = _kind(st.st_mode), st.st_size
                    except FileNotFoundError:
                        continue  # gone between readdir and lstat: not there
                    except OSError:
                        kind, size = "other", 0  # listed all the same: never archived
                    name, utf8 = _decode(entry.name)
                    entries.append((name, utf8, kind, size if kind == "file" else 0))
        except OSError as e:
            return _err("io", f"cannot list the WAL directory {self.wal_dir}: {e.strerror}")
        return Ok(pack_listing(entries))

    def list_archive(self) -> Any:
        self.calls.append(("list-archive",))
        base = os.fsencode(self.base)
        objects: List[Tuple[bytes, str, int]] = []
        try:
            with os.scandir(base) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                        kind, size = _kind(st.st_mode), st.st_size
                    except FileNotFoundError:
                        continue
                    except OSError:
                        kind, size = "other", 0
                    if entry.name in OWN_DIRS and kind == "dir":
                        continue
                    objects.append((entry.name, kind, size if kind == "file" else 0))
        except FileNotFoundError:
            pass  # nothing under the prefix yet
        except OSError as e:
            return _err("io", f"cannot list the archive {self.base}: {e.strerror}")
        # Checksum records: name -> the (crc, size) pairs recorded for it.
        marks: Dict[bytes, Set[Tuple[int, int]]] = {}
        chain: List[int] = []
        floors: List[int] = []
        try:
            for raw in self._names_in(os.path.join(base, CHECKSUM_DIR.encode())):
                name, sep, fields = raw.rpartition(MARKER_INFIX)
                hexcrc, dash, size = fields.partition(b"-")
                if sep and dash and len(hexcrc) == 8 and set(hexcrc) <= HEX and size.isdigit():
                    marks.setdefault(name, set()).add((int(hexcrc, 16), int(size)))
            for raw in self._names_in(os.path.join(base, CHAIN_DIR.encode())):
                for head, into in ((b"start-", chain), (b"pruned-below-", floors)):
                    lsn = raw[len(head):]
                    if raw.startswith(head) and len(lsn) == 16 and set(lsn) <= HEX:
                        into.append(int(lsn, 16))
        except OSError as e:
            return _err("io", f"cannot list the archive's records under {self.base}: {e.strerror}")
        rows = []
        for raw, kind, size in sorted(objects):
            name, utf8 = _decode(raw)
            # A record of another size is no record; two records that disagree are none.
            crcs = {c for c, s in marks.get(raw, ()) if s == size}
            crc = crcs.pop() if kind == "file" and len(crcs) == 1 else None
            rows.append((name, utf8, kind, size, crc))
        return Ok(pack_archive(rows, max(chain, default=None), max(floors, default=None)))

    @staticmethod
    def _names_in(path: bytes) -> List[bytes]:
        try:
            with os.scandir(path) as it:
                return [e.name for e in it]
        except FileNotFoundError:
            return []

    def upload(self, name: str, key: str, size: int, verify: bool) -> Any:
        self.calls.append(("upload", name, key, size, verify))
        bad = self._check(name, key)
        if bad:
            return bad
        # Step 5 first when the key is taken: nothing is sent.
        obj = self._read_object(name)
        if isinstance(obj, Err):
            return obj
        if obj is not None:
            local = self._read_local(name, size)
            return local if isinstance(local, Err) else self._same_or_conflict(name, local, obj)
        dest = self._object_path(name)
        staging_dir = os.path.join(self.base, STAGING_DIR)
        staging = os.path.join(staging_dir, f"{name}.{os.getpid()}-{next(self._staged)}")
        try:
            _makedirs_synced(staging_dir)
            out = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            return _err("io", f"cannot stage {key}: {e.strerror}")
        try:
            try:
                # Steps 1 and 2: read once, into the staging object.
                local = self._read_local(name, size, lambda b: os.write(out, b))
                if isinstance(local, Err):
                    return local
                os.fsync(out)
            finally:
                os.close(out)
            # The staging object is checked before it is published.
            staged_size, staged_crc = 0, 0
            with open(staging, "rb") as f:
                while chunk := f.read(CHUNK):
                    staged_size += len(chunk)
                    staged_crc = crc32c(chunk, staged_crc)
            if (staged_size, staged_crc) != (local.size, local.crc):
                return _err("io", f"cannot upload {key}: the staged copy is not the bytes read")
            # Create-only publish: link(2) fails if anything is under the key.
            try:
                os.link(staging, dest)
            except FileExistsError:
                obj = self._read_object(name)  # another archiver got there first
                if isinstance(obj, Err) or obj is None:
                    return obj or _err("io", f"cannot upload {key}: the key was taken, then freed")
                return self._same_or_conflict(name, local, obj)
            _sync_dir(self.base)  # step 4: durable before it is recorded
            stored_size = os.lstat(dest).st_size
            stored_crc = None
            if verify:  # step 3: read back what carries the key
                back = self._read_object(name)
                if not isinstance(back, tuple):
                    return back or _err("not-found", f"cannot verify {key}: gone after the write")
                stored_size, stored_crc = back
            if stored_size == local.size and stored_crc in (None, local.crc):
                self._record(name, local.crc, local.size)
        except OSError as e:
            return _err("io", f"cannot upload {os.fsdecode(self._wal_path(name))} to {key}: {e.strerror}")
        finally:
            try:
                os.unlink(staging)
            except OSError:
                pass
        return Ok(SimpleNamespace(read_size=local.size, read_crc32c=local.crc,
                                  stored_size=stored_size, stored_crc32c=stored_crc, existed=False))

    def check_archived(self, name: str, key: str, size: int) -> Any:
        self.calls.append(("check-archived", name, key, size))
        bad = self._check(name, key)
        if bad:
            return bad
        local = self._read_local(name, size)
        if isinstance(local, Err):
            return local
        obj = self._read_object(name)
        if obj is None:
            return _err("not-found", f"nothing is archived under {key}")
        return obj if isinstance(obj, Err) else self._same_or_conflict(name, local, obj)

    def delete_segment(self, name: str, key: str) -> Any:
        self.calls.append(("delete-segment", name, key))
        bad = self._check(name, key)
        if bad:
            return bad
        path = self._wal_path(name)
        shown = os.fsdecode(path)
        # The proof, made now: the local bytes against the object's, read back.
        local = self._read_local(name, None)
        if isinstance(local, Err):
            return local
        obj = self._read_object(name)
        if obj is None:  # the WIT names conflict and io; not-found says what happened
            return _err("not-found", f"will not delete {shown}: nothing is archived under {key}")
        if isinstance(obj, Err):
            return obj
        if obj != (local.size, local.crc):
            return Err(Case("conflict", SimpleNamespace(
                name=name, local_size=local.size, local_crc32c=local.crc,
                archived_size=obj[0], archived_crc32c=obj[1])))
        try:
            now = os.lstat(path)
            st = local.st
            if (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) != (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):
                return _err("changed", f"will not delete {shown}: it changed after it was compared")
            os.unlink(path)
            _sync_dir(self.wal_dir)
        except FileNotFoundError:
            return _err("not-found", f"cannot delete {shown}: not found")
        except OSError as e:
            return _err("io", f"cannot delete {shown}: {e.strerror}")
        return Ok(None)

    def record_chain_start(self, start: int) -> Any:
        self.calls.append(("record-chain-start", start))
        try:
            _makedirs_synced(os.path.join(self.base, CHAIN_DIR))
            _create_empty(os.path.join(self.base, CHAIN_DIR, f"start-{start:016x}"))
        except OSError as e:
            return _err("io", f"cannot record the chain start {start} under {self.base}: {e.strerror}")
        return Ok(None)

    def record_pruned_below(self, floor: int) -> Any:
        """Not an import: the prune floor a host records before pruning (see `prune-order`)."""
        try:
            _makedirs_synced(os.path.join(self.base, CHAIN_DIR))
            _create_empty(os.path.join(self.base, CHAIN_DIR, f"pruned-below-{floor:016x}"))
        except OSError as e:
            return _err("io", f"cannot record the prune floor {floor} under {self.base}: {e.strerror}")
        return Ok(None)
