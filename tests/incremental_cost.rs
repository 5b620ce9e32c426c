//! The cost of an incremental follows what changed, not how many files there are.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::os::unix::fs::FileExt;
use util::*;

fn hundred_thousand_files(env: &Env) {
    for d in 0..100 {
        let dir = env.src.join(format!("d{d:03}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..1000 {
            fs::write(dir.join(format!("f{f:04}")), format!("file {d}/{f}\n")).unwrap();
        }
    }
}

on_both_media!(unchanged_100k_files_add_no_blocks, |env: &Env| {
    env.init();
    hundred_thousand_files(env);
    let b1 = env.backup(&["--kind", "monthly"]);
    assert_eq!(env.header(b1)["counts"]["files"], 100_000);
    let before = env.medium_bytes();
    let b2 = env.backup(&["--kind", "micro"]);
    let after = env.medium_bytes();
    let h = env.header(b2);
    assert_eq!(h["counts"]["files_unchanged"], 100_000);
    // Nothing under the source changed, so nothing of it is stored again. The directories
    // above it (/, /tmp, …) are recorded with their attributes, and /tmp changes whenever
    // anything on the machine makes a temporary file: their listings may be new, nothing else.
    let above = env.src.components().count() as u64 - 1;
    let new = h["counts"]["blobs_new"].as_u64().unwrap();
    assert!(
        new <= above,
        "{new} new blobs, at most {above} expected: {h:?}"
    );
    assert!(h["bytes"]["new"].as_u64().unwrap() < 4096, "{h:?}");
    assert!(
        after - before < 64 * 1024,
        "a no-change incremental added {} bytes",
        after - before
    );
    let diff = env.ok(&["diff", "--medium", "{medium}", &b2.to_string(), "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&diff).unwrap(),
        serde_json::json!([])
    );

    // Ten files in ten directories: ten data blocks, plus the listings of those ten
    // directories and of every directory above them (src, its parents, /).
    for d in 0..10 {
        fs::write(
            env.src.join(format!("d{:03}/f0007", d * 7)),
            format!("changed {d}"),
        )
        .unwrap();
    }
    let b3 = env.backup(&["--kind", "micro"]);
    let h = env.header(b3);
    let depth = env.src.components().count() as u64; // listings from / down to src
    assert_eq!(h["counts"]["files_read"], 10);
    assert_eq!(
        h["counts"]["blobs_new"].as_u64().unwrap(),
        10 + 10 + depth,
        "{h:?}"
    );
    let diff = env.ok(&["diff", "--medium", "{medium}", &b3.to_string(), "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&diff)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        10
    );
});

on_both_media!(
    a_1mib_change_in_a_100mib_file_stores_about_1mib,
    |env: &Env| {
        env.init();
        let big = env.src.join("big.img");
        let f = fs::File::create(&big).unwrap();
        for i in 0..100u64 {
            f.write_all_at(&bytes(100 + i, 1 << 20), i << 20).unwrap();
        }
        drop(f);
        env.backup(&["--kind", "monthly"]);
        let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
        f.write_all_at(&bytes(7, 1 << 20), 40 << 20).unwrap();
        drop(f);
        let b = env.backup(&["--kind", "micro"]);
        let h = env.header(b);
        let new = h["bytes"]["new"].as_u64().unwrap();
        assert!(
            (1 << 20..(1 << 20) + (64 << 10)).contains(&new),
            "{new} new bytes for a 1 MiB change"
        );
    }
);
