//! The "done when", in a real browser, on a tray the real agent holds (a loop device,
//! real udevd): see which trays are where, watch a backup's progress, find a file by name,
//! pick one of its versions from the list and get exactly it back (restored and downloaded),
//! eject, and see the agent's warning about the tray now away.

#[path = "support/lab.rs"]
mod lab;
#[path = "support/slow.rs"]
mod slow;
#[path = "support/util.rs"]
mod util;
#[path = "support/web.rs"]
mod web;

use serde_json::json;
use util::*;
use web::*;

#[test]
fn on_a_held_tray_find_a_version_by_name_get_it_back_watch_a_backup_and_eject() {
    let b = Browser::start();
    // Any tray away counts as away too long: the page must show the agent's warning.
    let mut lab = lab::Lab::new("  away_warning_days: 0\n");
    let letter = lab.src.join("letters/letter.txt");
    write(&letter, b"Dear tray, first\n");
    let label = lab.label("ui");
    let img = lab.image("tray.img", &label, "1G");
    let dev = lab.insert(&img);
    lab.wait_first_monthly(&label);
    let ui = Ui::start(&lab.state_dir(), &lab.socket, &[], Some(&lab.config));
    b.goto(&ui.login);
    let card = ".tray[data-state='inserted']".to_string();
    let shown = b.wait_text(&format!("{card} h2"), &label);
    assert!(shown.contains("inserted"), "{shown}");
    assert!(b.wait_text(card.as_str(), &dev).contains(&dev));

    // Back up now with new data: the card shows the running job, then the result. The job
    // provably runs until the page has shown it: one new file is on the disk only (not in the
    // page cache), and the agent's reads from that disk go at 64 KiB/s (8 MiB: two minutes)
    // until the test has seen the card (then they are let go).
    let wanted = b"Dear tray, the version to get back\n".to_vec();
    write(&letter, &wanted);
    let held = lab.src.join("held.bin");
    slow::uncached(&held, &bytes(40, 8 << 20));
    let agent = lab.agent.as_ref().unwrap().id();
    let slow = slow::Slow::reads(agent, &held, 64 << 10);
    b.click(&b.find(&format!("{card} button.backup-now")));
    let running = b.wait("the running backup on the card", 60, |b| {
        b.text_of(&format!("{card} .job"))
    });
    assert!(running.starts_with("running: "), "{running}");
    assert!(!b.all(&format!("{card} .job progress")).is_empty());
    drop(slow);
    let said = b.wait("the backup's result", 120, |b| {
        b.text_of(&format!("{card} .result.ok, {card} .result.failed"))
    });
    assert!(said.contains("made, verified"), "{said}");
    let made: u64 = said
        .split('#')
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no backup number in {said:?}"));

    // The letter changes again, and the agent backs it up once more.
    write(&letter, b"Dear tray, a later version\n");
    b.click(&b.find(&format!("{card} button.backup-now")));
    b.wait("the second backup's result", 120, |b| {
        b.text_of(&format!("{card} .result.ok"))
            .filter(|t| !t.contains(&format!("#{made} ")))
    });

    // Files: find it by name, list its versions, pick the one backup `made` holds.
    let id = b.attr(&b.find(&card), "data-media").unwrap();
    b.goto(&ui.url(&format!("/m/{id}/files")));
    b.type_into(&b.find("#search"), "LETTER");
    b.click(&b.find("#find"));
    // (The directory "letters" is a hit too.)
    b.click(&b.find("li.hit[data-key$='/letter.txt'] button.versions"));
    let row = format!("#versions tr.version[data-backup='{made}']");
    b.find(&row);
    assert!(b.all("#versions tr.version.changed").len() >= 3);
    b.click(&b.find(&format!("{row} button.restore-version")));
    b.wait_text("#restore ul.picked li", "letter.txt");
    let target = lab.src.parent().unwrap().join("got-back");
    b.type_into(&b.find("#target-dir"), target.to_str().unwrap());
    b.click(&b.find("#restore-go"));
    let summary = b.wait("the restore's result", 60, |b| {
        b.text_of("#restore-result.ok .summary, #restore-result.failed .summary")
    });
    assert!(summary.starts_with("restored 1 files"), "{summary}");
    let got = target.join(letter.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(&got).unwrap(), wanted);

    // And downloaded, through the page's own calls: the same bytes.
    let got = b.exec_async(
        "const done = arguments[arguments.length - 1];
         TB.api('/api/media/' + arguments[0] + '/download', {backup: arguments[1], path: arguments[2]})
           .then((r) => fetch(r.url)).then((r) => r.arrayBuffer())
           .then((buf) => done(Array.from(new Uint8Array(buf))))
           .catch((e) => done('failed: ' + e.message));",
        json!([id, made, letter.to_str().unwrap()]),
    );
    let got: Vec<u8> = serde_json::from_value(got.clone()).unwrap_or_else(|_| panic!("{got}"));
    assert_eq!(got, wanted);

    // Eject from the trays page: safe to remove, unmounted, and then away (with the warning).
    b.goto(&ui.login);
    b.click(&b.find(&format!("{card} button.eject")));
    let said = b.wait("the eject's result", 60, |b| {
        b.text_of(".tray .result.ok[data-op='eject'], .tray .result.failed[data-op='eject']")
    });
    assert!(said.contains("safe to remove"), "{said}");
    assert!(!lab::mounted(&dev), "{dev} is still mounted after {said:?}");
    b.wait_text(
        &format!(".tray[data-state='away'][data-media='{id}'] h2"),
        &label,
    );
    let warned = b.wait_text(".warnings li", "away");
    assert!(warned.contains(&label), "{warned}");
}
