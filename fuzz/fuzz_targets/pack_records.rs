//! Any bytes as a pack file: the trailer reader, the record scan used for salvage, the
//! payload decoder and the frame opener (packs of version 3, FORMAT.md "Frames") return
//! errors or checked records, never panic, and never allocate beyond the caps (libFuzzer's
//! -rss_limit_mb and -malloc_limit_mb catch that).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;
use trayback::crypt::Crypt;
use trayback::ids::PackId;
use trayback::store::pack::{self, frame, Encoding};

/// Read `e`'s blob from `data` as a reader would: through its frame, or as a record.
fn read(e: &pack::Entry, data: &[u8]) {
    let start = e.offset as usize;
    let Some(payload) = data.get(start..start.saturating_add(e.stored_len as usize)) else {
        return;
    };
    if e.encoding.inner() == Encoding::Frame {
        let head = if e.frame_len == 0 { *e } else { frame::record_of(e, e.id) };
        if let Ok(opened) = frame::open(&Crypt::Plain, &head, payload) {
            let _ = opened.blob(&Crypt::Plain, e);
        }
    } else {
        let _ = pack::decode(&Crypt::Plain, e, payload);
    }
}

fuzz_target!(|data: &[u8]| {
    // Every window that could be a record header parses or is refused.
    for (i, w) in data.windows(44).enumerate().take(64) {
        if let Ok(e) = pack::parse_record(w.try_into().unwrap(), i as u64 + 44) {
            read(&e, data);
        }
    }
    for e in pack::scan_records(&Crypt::Plain, data) {
        if e.encoding.inner() != Encoding::Frame {
            let start = e.offset as usize;
            let payload = &data[start..start + e.stored_len as usize];
            assert!(
                pack::decode(&Crypt::Plain, &e, payload).is_ok(),
                "scan_records kept a bad record"
            );
        }
    }
    // The trailer reader works on a file (written only for what could be a pack: files are slow).
    if !data.starts_with(b"TRAYPACK") || data.len() < 80 {
        return;
    }
    let path = std::env::temp_dir().join(format!("trayback-fuzz-{}.pack", std::process::id()));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(data).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    let id = PackId([0; 16]);
    if let Ok(t) = pack::read_trailer(&Crypt::Plain, &id, &f) {
        for e in t.entries {
            read(&e, data);
        }
    }
});
