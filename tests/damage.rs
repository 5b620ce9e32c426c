//! Damage on the medium is found by verify and named by file.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::os::unix::fs::FileExt;
use util::*;

/// The medium's packs, largest first (data packs before listing packs).
fn packs(env: &Env) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(env.medium.join("trayback/packs")).unwrap() {
        for p in fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(p.unwrap().path());
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    out
}

/// XOR `mask` into the byte of `path` at `at(file length)`, durably.
fn flip_bits(path: &std::path::Path, at: impl Fn(u64) -> u64, mask: u8) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let at = at(f.metadata().unwrap().len());
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ mask], at).unwrap();
    f.sync_all().unwrap();
}

on_both_media!(
    one_flipped_byte_fails_verify_and_names_the_file,
    |env: &Env| {
        env.init();
        write(&env.src.join("small.txt"), b"tiny file");
        write(&env.src.join("victim.bin"), &bytes(5, 2 << 20));
        let b = env.backup(&["--kind", "monthly"]);
        env.ok(&["verify", "--medium", "{medium}", "--read-all"]);
        // The largest pack holds the data: victim.bin's 8 blocks (incompressible, so stored
        // raw) and small.txt's; a byte a quarter of the way in lies inside victim.bin's.
        let pack = packs(env).into_iter().next().unwrap();
        flip_bits(&pack, |len| len / 4, 0x40);
        let out = env.run(&[
            "verify",
            "--medium",
            "{medium}",
            &b.to_string(),
            "--read-all",
        ]);
        assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("victim.bin"), "{stdout}");
        assert!(!stdout.contains("small.txt"), "{stdout}");
        // The damaged backup is no longer verified, so it is never a parent.
        let list: serde_json::Value =
            serde_json::from_str(&env.ok(&["list", "--medium", "{medium}", "--json"])).unwrap();
        assert_eq!(list[0]["verified"], false);
        // Restoring it fails loudly rather than writing wrong bytes.
        let to = env.path("r");
        let out = env.try_restore(b, &to);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("damaged"),
            "{}",
            text(&out.stderr)
        );
    }
);

on_both_media!(
    a_truncated_pack_fails_verify_but_its_records_are_salvaged,
    |env: &Env| {
        env.init();
        write(&env.src.join("data.bin"), &bytes(8, 1 << 20));
        let b = env.backup(&["--kind", "monthly"]);
        let pack = packs(env).into_iter().next().unwrap();
        let len = fs::metadata(&pack).unwrap().len();
        // Cut the footer and part of the trailer off, as a torn write would.
        fs::OpenOptions::new()
            .write(true)
            .open(&pack)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
        let out = env.run(&["verify", "--medium", "{medium}", &b.to_string()]);
        assert_eq!(out.status.code(), Some(4));
        assert!(
            text(&out.stdout).contains("truncated pack"),
            "{}",
            text(&out.stdout)
        );
        // Every record is still there, so the backup still restores byte-for-byte.
        let restored = env.restore(b, "r");
        assert_same(&env.src, &restored);
    }
);

on_both_media!(
    a_damaged_trailer_behind_an_intact_footer_fails_verify_and_is_salvaged,
    |env: &Env| {
        env.init();
        write(&env.src.join("data.bin"), &bytes(9, 1 << 20));
        let b = env.backup(&["--kind", "monthly"]);
        let pack = packs(env).into_iter().next().unwrap();
        // The trailer (52 bytes per record) ends where the 64-byte footer begins: flip a byte
        // of its last entry, so only the footer's checksum of the trailer can notice.
        flip_bits(&pack, |len| len - 64 - 20, 0x01);
        let out = env.run(&["verify", "--medium", "{medium}", &b.to_string()]);
        assert_eq!(out.status.code(), Some(4), "{}", text(&out.stdout));
        assert!(
            text(&out.stdout).contains("checksum")
                || text(&out.stdout).contains("trailer does not authenticate"),
            "{}",
            text(&out.stdout)
        );
        // The data pack is indexed lazily, by walking its records: restore is still exact.
        let restored = env.restore(b, "r");
        assert_same(&env.src, &restored);
        // And a new backup on this medium still works.
        write(&env.src.join("more.txt"), b"more");
        env.backup(&["--kind", "monthly"]);
    }
);

/// A device that returns something else than what was written (simulated: each pack checked
/// while the backup goes on is changed between its fsync and that check) fails the backup's
/// verify, which relies on those checks and does not read those packs again.
#[test]
fn damage_found_while_the_backup_writes_fails_its_verify() {
    use std::sync::atomic::AtomicBool;
    use trayback::medium::Beneath;
    use trayback::store::{self, PackCheck};
    use trayback::{backup, config::Config, ids::PackId, progress::Meter, tree::Kind, verify};

    fn flaky_device(dir: &Beneath, crypt: &trayback::crypt::Crypt, id: &PackId) -> PackCheck {
        flip_bits(&dir.shown(&store::pack_rel(id)), |len| len / 2, 0x10);
        store::check_pack(dir, crypt, id)
    }

    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    // 40 MiB that does not compress: the first 32 MiB pack closes (and is checked) while the
    // backup goes on; the rest is closed at the end and checked by the verify itself.
    write(&env.src.join("big.bin"), &bytes(3, 40 << 20));
    write(&env.src.join("small.txt"), b"small");
    let mut m = trayback::medium::Medium::open_write(&env.medium, 3, &env.state_dir()).unwrap();
    m.set_pack_check(flaky_device);
    let cfg = Config::default()
        .with_sources(vec![env.src.clone()])
        .unwrap();
    let h = backup::run(
        &mut m,
        &backup::Request {
            kind: Kind::Monthly,
            parent: None,
            at: chrono::Utc::now(),
            config: &cfg,
            meter: &Meter::hidden(),
            cancel: &AtomicBool::new(false),
            verify_after: true,
        },
    )
    .unwrap();
    let r = verify::verify(&mut m, h.id, false, &Meter::hidden()).unwrap();
    assert!(!r.ok, "{r:?}");
    assert!(
        r.affected.iter().any(|p| p.ends_with("big.bin")),
        "{:?}",
        r.affected
    );
    assert!(!r.affected.iter().any(|p| p.ends_with("small.txt")));
    drop(m);
    // The backup is not verified, so it will never be a parent.
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--medium", "{medium}", "--json"])).unwrap();
    assert_eq!(list[0]["verified"], false);
}
