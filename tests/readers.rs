//! The readers rewritten without recursion (`ls`, `diff`) say what they said before.

#[path = "support/util.rs"]
mod util;
use util::*;

/// `ls` walks the parent's listings alongside: each row is `stored` when it differs from the
/// parent's entry at the same path, `unchanged` when it is the same, at any depth and from
/// any starting path (a directory or a file).
#[test]
fn ls_marks_stored_and_unchanged_against_the_parent() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("same.txt"), b"same");
    write(&env.src.join("changes.txt"), b"before");
    write(&env.src.join("d/e/deep_same.txt"), b"deep");
    write(&env.src.join("d/e/deep_changes.txt"), b"before");
    env.backup(&["--kind", "monthly"]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&env.src.join("changes.txt"), b"after!");
    write(&env.src.join("d/e/deep_changes.txt"), b"after!");
    write(&env.src.join("d/new.txt"), b"new");
    let b = env.backup(&["--kind", "daily"]).to_string();
    let src = env.src.to_str().unwrap().to_string();
    let origin = |args: &[&str]| -> Vec<(String, String)> {
        let mut a = vec!["ls", "--medium", "{medium}", "--json", &b];
        a.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_str(&env.ok(&a)).unwrap();
        let mut rows: Vec<(String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "file")
            .map(|r| {
                let p = r["path"].as_str().unwrap();
                let name = p.rsplit('/').next().unwrap().to_string();
                (name, r["origin"].as_str().unwrap().to_string())
            })
            .collect();
        rows.sort();
        rows
    };
    let want = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut v: Vec<_> = v
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        origin(&["-r"]),
        want(&[
            ("changes.txt", "stored"),
            ("same.txt", "unchanged"),
            ("deep_changes.txt", "stored"),
            ("deep_same.txt", "unchanged"),
            ("new.txt", "stored"),
        ])
    );
    let e = format!("{src}/d/e");
    assert_eq!(
        origin(&[&e]),
        want(&[
            ("deep_changes.txt", "stored"),
            ("deep_same.txt", "unchanged")
        ])
    );
    let f = format!("{src}/same.txt");
    assert_eq!(origin(&[&f]), want(&[("same.txt", "unchanged")]));
    let f = format!("{src}/d/new.txt");
    assert_eq!(origin(&[&f]), want(&[("new.txt", "stored")]));
    // diff (now an explicit stack) reports the same changes, in pre-order.
    let d = env.ok(&["diff", "--medium", "{medium}", "1", &b]);
    let lines: Vec<&str> = d.lines().collect();
    assert_eq!(lines.len(), 3, "{d}");
    assert!(
        lines[0].ends_with("changes.txt") && !lines[0].contains("/d/"),
        "{d}"
    );
    assert!(lines[1].ends_with("d/e/deep_changes.txt"), "{d}");
    assert!(lines[2].ends_with("d/new.txt"), "{d}");
}
