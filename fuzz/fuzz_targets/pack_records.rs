//! Any bytes as a pack file: the trailer reader, the record scan used for salvage and the
//! payload decoder return errors or checked records, never panic, and never allocate beyond
//! the caps (libFuzzer's -rss_limit_mb and -malloc_limit_mb catch that).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;
use trayback::store::pack;

fuzz_target!(|data: &[u8]| {
    // Every window that could be a record header parses or is refused.
    for (i, w) in data.windows(44).enumerate().take(64) {
        if let Ok(e) = pack::parse_record(w.try_into().unwrap(), i as u64 + 44) {
            let start = (i + 44).min(data.len());
            let end = start.saturating_add(e.stored_len as usize).min(data.len());
            let _ = pack::decode(&e, &data[start..end]);
        }
    }
    for e in pack::scan_records(data) {
        let start = e.offset as usize;
        let payload = &data[start..start + e.stored_len as usize];
        assert!(
            pack::decode(&e, payload).is_ok(),
            "scan_records kept a bad record"
        );
    }
    // The trailer reader works on a file (written only for what could be a pack: files are slow).
    if !data.starts_with(b"TRAYPACK") || data.len() < 80 {
        return;
    }
    let path = std::env::temp_dir().join(format!("trayback-fuzz-{}.pack", std::process::id()));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(data).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    if let Ok(t) = pack::read_trailer(&f) {
        for e in t.entries {
            let start = e.offset as usize;
            if let Some(payload) = data.get(start..start + e.stored_len as usize) {
                let _ = pack::decode(&e, payload);
            }
        }
    }
});
