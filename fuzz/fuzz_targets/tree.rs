//! Tree streams: the first line through `parse_header`, every line through `TreeEntry::parse_line`.
#![no_main]
use ibs_repo::tree::{parse_header, TreeEntry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    if let Some(first) = lines.next() {
        let _ = parse_header(first);
        let _ = TreeEntry::parse_line(first);
    }
    for line in lines {
        if let Ok(e) = TreeEntry::parse_line(line) {
            // What parses must serialize and parse back to the same entry.
            let again = e.to_line();
            assert_eq!(
                TreeEntry::parse_line(&again[..again.len() - 1]).ok(),
                Some(e)
            );
        }
    }
});
