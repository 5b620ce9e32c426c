//! Attacks on the bounded walk, the streamed listings and the web interface's name index:
//! real source trees, real backups by the real binary, the library's own readers over the
//! medium they made.
//!
//! What broke: the name index and the search keyed paths by a 64-bit FxHash, which is not
//! keyed (rustc-hash 2: a 16-byte chunk whose first half equals the hash state multiplies to
//! zero), so a local user could name files whose full paths all hash alike
//! ([`colliding_names`]). Paths are now keyed by two SipHashes under random keys
//! (`query::paths`).

#[path = "support/util.rs"]
mod util;

use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trayback::medium::{Medium, Unlock};
use trayback::query::{self, Names};
use util::*;

/// rustc-hash 2's hash of `bytes` as a `[u8]` (what the index and the search key paths by).
fn fx(bytes: &[u8]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    bytes.hash(&mut h);
    h.finish()
}

fn mix(x: u64, y: u64) -> u64 {
    let f = (x as u128).wrapping_mul(y as u128);
    (f as u64) ^ ((f >> 64) as u64)
}

/// `n` distinct file names (at most 80 bytes, no NUL or `/`) that, appended to `prefix` (a
/// directory's path with its trailing `/`), give paths of one and the same FxHash: rustc-hash
/// 2 mixes each 16-byte chunk `(x, y)` of a long input as `mix(s0 ^ x, C ^ y)`, so a chunk
/// with `x = s0` gives 0 whatever its `y`, and `y` (8 bytes) tells the names apart.
fn colliding_names(prefix: &[u8], n: usize) -> Vec<Vec<u8>> {
    const SEED1: u64 = 0x243f6a8885a308d3;
    const SEED2: u64 = 0x13198a2e03707344;
    const C: u64 = 0xa4093822299f31d0;
    const TAIL: &[u8] = b"-same-fx-hash.txt";
    let pad_len = 32 + (16 - prefix.len() % 16) % 16;
    for attempt in 0u64.. {
        let pad: Vec<u8> = (0..pad_len as u64)
            .map(|i| b'a' + ((attempt * 7919 + i * 31 + attempt * i) % 26) as u8)
            .collect();
        let head = [prefix, &pad].concat();
        let (mut s0, mut s1) = (SEED1, SEED2);
        for c in head.chunks_exact(16) {
            let x = u64::from_le_bytes(c[..8].try_into().unwrap());
            let y = u64::from_le_bytes(c[8..].try_into().unwrap());
            let t = mix(s0 ^ x, C ^ y);
            s0 = s1;
            s1 = t;
        }
        let x = s0.to_le_bytes();
        if x.iter().any(|&b| b == 0 || b == b'/') {
            continue;
        }
        let names: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let y = format!("{i:08}");
                [&pad[..], &x, y.as_bytes(), TAIL].concat()
            })
            .collect();
        let h = fx(&[prefix, &names[0]].concat());
        for name in &names {
            assert_eq!(fx(&[prefix, name].concat()), h, "the names collide");
        }
        return names;
    }
    unreachable!()
}

fn under(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(std::ffi::OsStr::from_bytes(name))
}

fn prefix_of(dir: &Path) -> Vec<u8> {
    [dir.as_os_str().as_bytes(), b"/"].concat()
}

/// Two directories whose paths FxHash alike and whose listings are the same blob (each holds
/// a hard link, same name, to one file): with paths keyed by that hash, the search took the
/// second for "already walked at the same path" and never found the file under it, by the
/// walk or the index. Both are found.
#[test]
fn a_directory_whose_path_hash_collides_is_still_searched() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let names = colliding_names(&prefix_of(&env.src), 2);
    let (a, b) = (under(&env.src, &names[0]), under(&env.src, &names[1]));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    write(&a.join("payroll.ods"), b"salaries\n");
    std::fs::hard_link(a.join("payroll.ods"), b.join("payroll.ods")).unwrap();
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);

    let m = Medium::open_read(&env.medium, &Unlock::host(&env.state_dir())).unwrap();
    let h = query::read_header(&m);
    let want = vec![a.join("payroll.ods"), b.join("payroll.ods")];
    let walked: Vec<PathBuf> = query::search(&m, "payroll", 10)
        .unwrap()
        .found
        .into_iter()
        .map(|f| f.raw)
        .collect();
    let indexed: Vec<PathBuf> = Names::build(&m, &h)
        .unwrap()
        .search("payroll", 10)
        .unwrap()
        .found
        .into_iter()
        .map(|f| f.raw)
        .collect();
    assert_eq!(
        (walked, indexed),
        (want.clone(), want),
        "both files are on the medium (restore has them)"
    );
}

/// Build the name index of a medium whose source holds `names` (empty files) in `many/`;
/// how long the build took.
fn index_time(names: impl Fn(&Path) -> Vec<Vec<u8>>) -> (Duration, usize) {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let dir = env.src.join("many");
    std::fs::create_dir(&dir).unwrap();
    let names = names(&dir);
    for n in &names {
        std::fs::File::create(under(&dir, n)).unwrap();
    }
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    let m = Medium::open_read(&env.medium, &Unlock::host(&env.state_dir())).unwrap();
    let h = query::read_header(&m);
    let t0 = Instant::now();
    let n = Names::build(&m, &h).unwrap();
    (t0.elapsed(), n.len())
}

/// A directory of 40 000 names whose paths all FxHash alike: with that hash they all probed
/// one chain of a hash set and the index build was quadratic (9.6 s against 54 ms). The same
/// number of ordinary names is the yardstick.
#[test]
fn a_name_index_over_colliding_paths_costs_what_ordinary_paths_cost() {
    const N: usize = 40_000;
    let (plain, rows) = index_time(|_| {
        (0..N)
            .map(|i| format!("ordinary-name-{i:08}-of-some-length.txt").into_bytes())
            .collect()
    });
    let (colliding, crafted_rows) = index_time(|dir| colliding_names(&prefix_of(dir), N));
    assert_eq!(rows, crafted_rows);
    eprintln!("index of {N} names: ordinary {plain:?}, colliding {colliding:?}");
    assert!(
        colliding < plain * 20 + Duration::from_secs(2),
        "index of {N} colliding names took {colliding:?}, of ordinary ones {plain:?}"
    );
}

/// A local user's directory whose listing is longer than the format allows (66 000 symlinks
/// with 4 000-byte targets: a 280 MB listing, 256 MiB allowed) failed the backup of the
/// whole host, naming the medium, not the directory. Now it is backed up empty with a
/// problem naming it, and everything else is backed up.
#[test]
fn a_directory_over_the_listing_cap_does_not_fail_the_backup_of_everything_else() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("thesis.tex"), b"chapter one\n");
    let huge = env.src.join("huge");
    std::fs::create_dir(&huge).unwrap();
    let target = "t".repeat(4000);
    for i in 0..66_000 {
        std::os::unix::fs::symlink(format!("{target}{i:08}"), huge.join(format!("l{i:06}")))
            .unwrap();
    }
    let out = env.try_backup(&["--kind", "monthly"]);
    std::fs::remove_dir_all(&huge).unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 3)) && stderr(&out).contains("huge"),
        "the backup ({}) keeps everything but the oversized directory, and names it:\n{}",
        out.status,
        stderr(&out)
    );
}

/// A medium whose tree says fixed blocks (format 1) while its backups' listings are
/// content-defined (format 3): a crafted `tree.yaml`, plain YAML on a plaintext medium. An
/// incremental backup of a directory of more than one batch, changed only past its first
/// batch, copied the parent's first entries into the new fixed-format listing unchecked and
/// committed a listing its own readers refuse. Now those entries pass the same check as every
/// other, and the backup is refused.
#[test]
fn a_crafted_tree_format_never_commits_a_listing_the_readers_refuse() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    let d = env.src.join("d");
    write(&d.join("a0000"), &vec![0u8; 2 << 20]);
    for i in 0..1500 {
        write(&d.join(format!("f{i:04}")), format!("{i}\n").as_bytes());
    }
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    let tree = env.medium.join("trayback/tree.yaml");
    let yaml = std::fs::read_to_string(&tree).unwrap();
    // The tree's format line, whichever content-defined format new media have.
    let from = ["format: 3", "format: 2"]
        .into_iter()
        .find(|f| yaml.contains(f))
        .expect("a content-defined tree format");
    let crafted = yaml.replacen(from, "format: 1", 1);
    std::fs::write(&tree, crafted).unwrap();
    write(&d.join("f1400"), b"changed\n");
    let out = env.try_backup(&["--kind", "micro", "--at", "2026-03-02 09:15"]);
    let list = env.ok(&["list", "--medium", "{medium}"]);
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some("2")),
        "no backup 2 committed (the backup said {}: {}):\n{list}",
        out.status,
        stderr(&out)
    );
}
