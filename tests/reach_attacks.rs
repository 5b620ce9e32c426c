//! The medium's history sizing (`media show --reach`, `simulate --from-medium`, the web UI's
//! forecast, the agent's status after a backup) on a tree whose backups started less than a
//! second apart: found while attacking frames (see tests/frames_attacks.rs).

#[path = "support/util.rs"]
mod util;
use util::*;

/// Finding F5 (P1: a panic on input a forged `tree.yaml`, or two quick backups, give).
/// `sizing::history` (src/sizing.rs:36-46) takes the span between the first and the last
/// backup in whole seconds when the last started later, so a span of 0.5 s is `Some(0)`
/// and the change rate divided by it (fixed here: such a span is no span).
#[test]
fn reach_of_backups_less_than_a_second_apart_does_not_panic() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    write(&env.src.join("a"), b"one");
    env.backup(&["--kind", "monthly", "--at", "2026-03-02T00:00:00Z"]);
    write(&env.src.join("a"), b"two");
    env.backup(&["--kind", "micro", "--at", "2026-03-02T00:00:00.5Z"]);
    let out = env.run(&["media", "show", "{medium}", "--reach"]);
    assert!(
        out.status.success() && !stderr(&out).contains("panicked"),
        "media show --reach: {}",
        stderr(&out)
    );
}
