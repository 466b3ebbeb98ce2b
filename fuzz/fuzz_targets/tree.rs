//! Tree streams: the first line through `parse_header`, every later line through
//! `TreeEntry::parse_line_in` under the format the header named (the current one if it named none).
#![no_main]
use ibs_repo::tree::{parse_header, TreeEntry, TREE_FORMAT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let mut format = TREE_FORMAT;
    if let Some(first) = lines.next() {
        if let Ok(f) = parse_header(first) {
            format = f;
        }
        let _ = TreeEntry::parse_line(first);
    }
    for line in lines {
        if let Ok(e) = TreeEntry::parse_line_in(line, format) {
            // What parses must serialize (in the current format) and parse back to the same entry.
            let again = e.to_line();
            assert_eq!(
                TreeEntry::parse_line(&again[..again.len() - 1]).ok(),
                Some(e)
            );
        }
    }
});
