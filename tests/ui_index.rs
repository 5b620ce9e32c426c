//! The web interface's name index (`query::Names`, built in the background for the tree the
//! interface read): a search answered from it is exactly the search answered by walking the
//! medium; after a new backup the old index is not used (the search walks, saying it is
//! still indexing) until one is built for the new tree; an index over its caps is marked
//! incomplete and answers only what its rows settle.

#[path = "support/util.rs"]
mod util;
#[path = "support/web.rs"]
mod web;

use serde_json::Value;
use std::time::{Duration, Instant};
use trayback::medium::{Medium, Unlock};
use trayback::query::{self, Names, Search};
use util::*;
use web::*;

/// The medium's search answer for `q`.
fn search(ui: &Ui, session: &(String, String), id: &str, q: &str) -> Value {
    let r = ui.get(
        &session.0,
        &session.1,
        &format!("/api/media/{id}/search?q={q}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The answer once the index is there (asking again until it says so, at most 60 s).
fn indexed(ui: &Ui, session: &(String, String), id: &str, q: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let v = search(ui, session, id, q);
        if v["index"] == "used" {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the name index was not built in 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Each hit: its path's end under the source, its kind and the newest backup holding it.
fn hits(v: &Value, src: &std::path::Path) -> Vec<(String, String, u64)> {
    v["found"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let p = f["path"].as_str().unwrap();
            let rel = p.strip_prefix(src.to_str().unwrap()).unwrap_or(p);
            (
                rel.to_string(),
                f["kind"].as_str().unwrap().to_string(),
                f["backup"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_search_from_the_index_is_the_walks_answer_and_a_new_backup_is_not_answered_from_the_old_index()
{
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("docs/notes.txt"), b"first\n");
    write(&env.src.join("docs/report.odt"), &bytes(1, 10_000));
    write(&env.src.join("NOTES/todo"), b"x\n");
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    write(&env.src.join("docs/notes.txt"), b"second\n");
    write(&env.src.join("docs/old-notes.txt"), b"old\n");
    env.backup(&["--kind", "micro", "--at", "2026-03-02 09:15"]);
    std::fs::remove_file(env.src.join("docs/old-notes.txt")).unwrap();
    std::fs::remove_dir_all(env.src.join("NOTES")).unwrap();
    env.backup(&["--kind", "micro", "--at", "2026-03-02 09:30"]);

    let ui = Ui::start(
        &env.state_dir(),
        &env.path("no-agent.sock"),
        &[&env.medium],
        None,
    );
    let id = media_id(&env);
    let s = ui.session();
    let v = indexed(&ui, &s, &id, "NoTeS");
    let mut got = hits(&v, &env.src);
    got.sort();
    let want: Vec<(String, String, u64)> = [
        ("/NOTES", "dir", 2),
        ("/docs/notes.txt", "file", 3),
        ("/docs/old-notes.txt", "file", 2),
    ]
    .iter()
    .map(|(p, k, b)| (p.to_string(), k.to_string(), *b))
    .collect();
    assert_eq!(got, want, "{v}");

    // A new backup: the index of the old tree is not used; the walk answers (and says the
    // index is being built), then the index for the new tree gives the same answer.
    write(&env.src.join("docs/notes.txt"), b"third\n");
    write(&env.src.join("more-notes.md"), b"more\n");
    env.backup(&["--kind", "micro", "--at", "2026-03-02 09:45"]);
    let walked = search(&ui, &s, &id, "notes");
    assert_eq!(walked["index"], "building", "{walked}");
    assert!(hits(&walked, &env.src).contains(&("/more-notes.md".into(), "file".into(), 4)));
    let from_index = indexed(&ui, &s, &id, "notes");
    assert_eq!(walked["found"], from_index["found"]);
    assert_eq!(walked["truncated"], from_index["truncated"]);

    // Many hits: the first 200 in the walk's order, truncated, from either.
    for i in 0..250 {
        write(&env.src.join(format!("many/n{i:03}.txt")), b"n\n");
    }
    env.backup(&["--kind", "micro", "--at", "2026-03-02 10:00"]);
    let walked = search(&ui, &s, &id, ".txt");
    assert_eq!(walked["index"], "building", "{walked}");
    assert_eq!(walked["truncated"], true);
    let from_index = indexed(&ui, &s, &id, ".txt");
    assert_eq!(walked["found"], from_index["found"]);
    assert_eq!(from_index["truncated"], true);
    assert_eq!(from_index["found"].as_array().unwrap().len(), 200);
}

/// Paths and backups of a search's answer, and whether it was cut short.
fn answer(s: &Search) -> (Vec<(std::path::PathBuf, u64)>, bool) {
    let found = s
        .found
        .iter()
        .map(|f| (f.raw.clone(), f.backup.0))
        .collect();
    (found, s.truncated)
}

#[test]
fn an_index_over_its_caps_is_incomplete_and_answers_only_what_its_rows_settle() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    for i in 0..50 {
        write(&env.src.join(format!("a/f{i:02}.txt")), b"x\n");
    }
    write(&env.src.join("z/last.md"), b"y\n");
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    write(&env.src.join("a/f07.txt"), b"changed\n");
    env.backup(&["--kind", "micro", "--at", "2026-03-02 09:15"]);
    let m = Medium::open_read(&env.medium, &Unlock::host(&env.state_dir())).unwrap();
    let h = query::read_header(&m);
    let walk = |q: &str, max: usize| answer(&query::search(&m, q, max).unwrap());

    let whole = Names::build(&m, &h).unwrap();
    assert!(whole.complete());
    for (q, max) in [
        (".txt", 3),
        (".txt", 200),
        ("LAST", 5),
        ("f07", 5),
        ("nothing", 5),
    ] {
        assert_eq!(
            answer(&whole.search(q, max).unwrap()),
            walk(q, max),
            "{q} {max}"
        );
    }

    // 20 rows: the source's directories and the first files of a/, not z/.
    let capped = Names::build_within(&m, &h, 20, usize::MAX).unwrap();
    assert!(!capped.complete());
    assert_eq!(capped.len(), 20);
    let settled = capped
        .search(".txt", 3)
        .expect("four matches among the rows settle it");
    assert_eq!(answer(&settled), walk(".txt", 3));
    assert!(
        capped.search("last", 3).is_none(),
        "not among the rows: left to the walk"
    );
    assert!(capped.search(".txt", 200).is_none());

    // The bytes of paths are capped too.
    let small = Names::build_within(&m, &h, usize::MAX, 200).unwrap();
    assert!(!small.complete());
    assert!(
        small.len() < 20,
        "{} rows in 200 bytes of paths",
        small.len()
    );
}
