//! Any bytes as a listing blob: decoding returns an error or a listing, never panics, and a
//! listing it accepts encodes back to exactly the same bytes (the encoding is canonical) and
//! passes or fails the readers' entry check without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trayback::listing::Listing;

fuzz_target!(|data: &[u8]| {
    if let Ok(l) = Listing::decode(data) {
        assert_eq!(l.encode(), data, "decode accepted a non-canonical encoding");
        for e in &l.entries {
            let rel = std::path::Path::new("/x").join(e.name.as_os());
            let _ = trayback::index::check_entry(&rel, e);
        }
    }
});
