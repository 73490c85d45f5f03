//! Fuzzes the strict segment-name parser: it never panics, and every name it
//! accepts formats back to itself with first <= last.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wal_archiver_guest::{format_segment_name, SegmentName};

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else { return };
    if let Ok(parsed) = SegmentName::parse(name) {
        assert!(parsed.first() <= parsed.last());
        assert_eq!(parsed.to_string(), name);
        assert_eq!(format_segment_name(parsed.first(), parsed.last()).as_deref(), Ok(name));
        assert_eq!(name.len(), "wal-".len() + 16 + 1 + 16 + ".seg".len());
    }
});
