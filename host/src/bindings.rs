//! The WIT world `nodedb:wal-archiver/archiver`, as wasmtime generates it,
//! and helpers for its packed lists. Both the runtime ([`crate::component`])
//! and the storage imports ([`crate::imports`]) use these types, so that the
//! I/O code does not depend on the runtime.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "archiver",
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});

/// The WIT types, as the host uses them.
pub use nodedb::wal_archiver::types as wit;
pub use exports::nodedb::wal_archiver::planner::{
    CycleReport, PruneError, PruneOrder, RangeError, RecordReport, RestoreError, ScanReport, VerifyReport,
};

/// Appends `name` to a packed buffer, and where it ends to `ends`.
fn push_name(names: &mut String, ends: &mut Vec<u32>, name: &str) {
    names.push_str(name);
    ends.push(u32::try_from(names.len()).expect("a packed list under 4 GiB of names"));
}

/// The names of a packed list, each with its index. A host reads only lists
/// that it built or that came from the planner; a name whose bounds are not
/// valid reads as "" and is refused wherever a name is used.
fn names<'a>(names: &'a str, ends: &'a [u32]) -> impl Iterator<Item = &'a str> + 'a {
    let mut start = 0usize;
    ends.iter().map(move |&end| {
        let end = end as usize;
        let name = names.get(start..end).unwrap_or("");
        start = end.max(start);
        name
    })
}

impl wit::EntryKind {
    /// The byte a packed listing carries: the position of the case in the
    /// WIT's `entry-kind`.
    pub fn code(self) -> u8 {
        match self {
            Self::File => 0,
            Self::Dir => 1,
            Self::Symlink => 2,
            Self::Other => 3,
        }
    }

    /// The kind a packed listing's byte stands for; the inverse of
    /// [`wit::EntryKind::code`]. Any other byte is `Other`, as the planner reads it.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => Self::File,
            1 => Self::Dir,
            2 => Self::Symlink,
            _ => Self::Other,
        }
    }
}

/// A packed flag as the planner reads it: 1 is set, anything else is not.
fn flag(byte: Option<&u8>) -> bool {
    byte == Some(&1)
}

/// One entry of a [`wit::DirListing`] or [`wit::ArchiveListing`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedEntry<'a> {
    pub name: &'a str,
    pub utf8: bool,
    pub kind: wit::EntryKind,
    pub size: u64,
}

impl Default for wit::DirListing {
    fn default() -> Self {
        Self { names: String::new(), ends: Vec::new(), sizes: Vec::new(), kinds: Vec::new(), utf8: Vec::new() }
    }
}

impl wit::DirListing {
    /// Appends an entry: its name to the names, and each field to its list.
    pub fn push(&mut self, name: &str, utf8: bool, kind: wit::EntryKind, size: u64) {
        push_name(&mut self.names, &mut self.ends, name);
        self.sizes.push(size);
        self.kinds.push(kind.code());
        self.utf8.push(u8::from(utf8));
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = ListedEntry<'_>> {
        names(&self.names, &self.ends).enumerate().map(|(i, name)| ListedEntry {
            name,
            utf8: flag(self.utf8.get(i)),
            kind: self.kinds.get(i).map_or(wit::EntryKind::Other, |k| wit::EntryKind::from_code(*k)),
            size: self.sizes.get(i).copied().unwrap_or(0),
        })
    }

    /// The size of the regular file `name`, as listed.
    pub fn file_size(&self, name: &str) -> Option<u64> {
        self.entries().find(|e| e.name == name && e.utf8 && e.kind == wit::EntryKind::File).map(|e| e.size)
    }
}

impl Default for wit::ArchiveListing {
    fn default() -> Self {
        Self {
            names: String::new(),
            ends: Vec::new(),
            sizes: Vec::new(),
            kinds: Vec::new(),
            utf8: Vec::new(),
            crc32cs: Vec::new(),
            recorded: Vec::new(),
            chain_start: None,
            pruned_below: None,
        }
    }
}

impl wit::ArchiveListing {
    /// Appends an object; `crc32c` is its recorded checksum, if any.
    pub fn push(&mut self, name: &str, utf8: bool, kind: wit::EntryKind, size: u64, crc32c: Option<u32>) {
        push_name(&mut self.names, &mut self.ends, name);
        self.sizes.push(size);
        self.kinds.push(kind.code());
        self.utf8.push(u8::from(utf8));
        self.crc32cs.push(crc32c.unwrap_or(0));
        self.recorded.push(u8::from(crc32c.is_some()));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The entries, in order, with their recorded checksums.
    pub fn entries(&self) -> impl Iterator<Item = (ListedEntry<'_>, Option<u32>)> {
        names(&self.names, &self.ends).enumerate().map(|(i, name)| {
            let entry = ListedEntry {
                name,
                utf8: flag(self.utf8.get(i)),
                kind: self.kinds.get(i).map_or(wit::EntryKind::Other, |k| wit::EntryKind::from_code(*k)),
                size: self.sizes.get(i).copied().unwrap_or(0),
            };
            let crc = match self.crc32cs.get(i) {
                Some(c) if flag(self.recorded.get(i)) => Some(*c),
                _ => None,
            };
            (entry, crc)
        })
    }
}

impl Default for wit::SegmentList {
    fn default() -> Self {
        Self { names: String::new(), ends: Vec::new(), sizes: Vec::new() }
    }
}

impl wit::SegmentList {
    pub fn push(&mut self, name: &str, size: u64) {
        push_name(&mut self.names, &mut self.ends, name);
        self.sizes.push(size);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Names and sizes, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        names(&self.names, &self.ends).enumerate().map(|(i, n)| (n, self.sizes.get(i).copied().unwrap_or(0)))
    }

    /// The entries `from..to`, as a list of their own.
    pub fn slice(&self, from: usize, to: usize) -> wit::SegmentList {
        let mut out = wit::SegmentList::default();
        for (name, size) in self.iter().skip(from).take(to.saturating_sub(from)) {
            out.push(name, size);
        }
        out
    }
}

impl Default for wit::ArchivedList {
    fn default() -> Self {
        Self { names: String::new(), ends: Vec::new(), sizes: Vec::new(), crc32cs: Vec::new() }
    }
}

impl wit::ArchivedList {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Names, sizes and recorded checksums, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64, u32)> {
        names(&self.names, &self.ends)
            .enumerate()
            .map(|(i, n)| (n, self.sizes.get(i).copied().unwrap_or(0), self.crc32cs.get(i).copied().unwrap_or(0)))
    }
}

impl Default for wit::FailureList {
    fn default() -> Self {
        Self { names: String::new(), ends: Vec::new(), attempts: Vec::new(), reasons: String::new(), reason_ends: Vec::new() }
    }
}

impl wit::FailureList {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The failures, in order.
    pub fn iter(&self) -> impl Iterator<Item = wit::SegmentFailure> + '_ {
        let reasons: Vec<&str> = names(&self.reasons, &self.reason_ends).collect();
        names(&self.names, &self.ends).enumerate().map(move |(i, n)| wit::SegmentFailure {
            name: n.to_owned(),
            attempts: self.attempts.get(i).copied().unwrap_or(1),
            last_reason: reasons.get(i).copied().unwrap_or("").to_owned(),
        })
    }

    /// The failure of `name`, if it is failing.
    pub fn get(&self, name: &str) -> Option<wit::SegmentFailure> {
        self.iter().find(|f| f.name == name)
    }
}

/// The state a fresh archiver starts from.
pub fn empty_state() -> wit::ArchiverState {
    wit::ArchiverState {
        chain_start: None,
        last_archived_lsn: None,
        pruned_below: None,
        segments_archived: 0,
        bytes_archived: 0,
        failures: 0,
        archived: wit::ArchivedList::default(),
        failing: wit::FailureList::default(),
        conflicts: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wal_archiver_guest::packed::EntryKind;

    #[test]
    fn every_kind_round_trips_through_the_byte_the_planner_reads() {
        let pairs = [
            (wit::EntryKind::File, EntryKind::File),
            (wit::EntryKind::Dir, EntryKind::Dir),
            (wit::EntryKind::Symlink, EntryKind::Symlink),
            (wit::EntryKind::Other, EntryKind::Other),
        ];
        for (host, planner) in pairs {
            assert_eq!(wit::EntryKind::from_code(host.code()), host);
            assert_eq!(host.code(), planner.code(), "{host:?}");
        }
        for byte in 0..=u8::MAX {
            assert_eq!(wit::EntryKind::from_code(byte).code(), EntryKind::from_code(byte).code(), "byte {byte}");
        }
    }

    #[test]
    fn a_listing_reads_back_what_was_pushed_and_foreign_flags_as_unset() {
        let mut l = wit::DirListing::default();
        l.push("a", true, wit::EntryKind::File, 5);
        l.push("b", false, wit::EntryKind::Symlink, 0);
        let got: Vec<_> = l.entries().map(|e| (e.name, e.utf8, e.kind, e.size)).collect();
        assert_eq!(got, [("a", true, wit::EntryKind::File, 5), ("b", false, wit::EntryKind::Symlink, 0)]);
        let mut a = wit::ArchiveListing::default();
        a.push("c", true, wit::EntryKind::File, 7, Some(9));
        assert_eq!(a.entries().next().unwrap().1, Some(9));
        a.recorded[0] = 2;
        a.utf8[0] = 2;
        let (entry, crc) = a.entries().next().unwrap();
        assert_eq!((entry.utf8, crc), (false, None));
    }
}
