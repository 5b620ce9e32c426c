//! Fleet metrics and journald-friendly logs from the real agent: `status --format
//! openmetrics` and the agent's metrics file, read back by an independent OpenMetrics parser
//! (python prometheus_client), with a medium whose label is hostile (quotes, backslash).
//! Root only, like every agent test (real udevd, loop devices).

#[path = "support/lab.rs"]
mod lab;
#[path = "support/util.rs"]
mod util;
use lab::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use util::*;

/// The samples of an OpenMetrics text, as prometheus_client's parser reads them.
fn parse(text: &str) -> Vec<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openmetrics_parse.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the metrics (scripts/setup.sh installs it): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The value of sample `name` whose labels include every one of `labels`.
fn value(samples: &[serde_json::Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
}

fn epoch(rfc3339: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis() as f64
        / 1000.0
}

/// The metrics file once it shows the medium `who` inserted (1) or away (0).
fn wait_file(lab: &Lab, file: &Path, who: &[(&str, &str)], want: f64) -> Vec<serde_json::Value> {
    let t0 = Instant::now();
    loop {
        let text = fs::read_to_string(file).unwrap_or_default();
        if !text.is_empty() {
            let samples = parse(&text);
            if value(&samples, "trayback_medium_inserted", who) == Some(want) {
                return samples;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the metrics file never showed inserted={want}:\n{text}\nagent log:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn openmetrics_from_status_and_file_with_a_hostile_label() {
    let mut lab = Lab::custom(
        |l| {
            // The agent does not create the file's directory (node_exporter's is made by
            // its package).
            fs::create_dir_all(l.tmp.path().join("metrics")).unwrap();
            l.default_config(&format!(
                "  metrics_file: {}/metrics/trayback.prom\n",
                l.tmp.path().display()
            ))
        },
        &[],
    );
    write(&lab.src.join("a.txt"), b"metrics");
    // A label is user data: a quote and a backslash must not break the exposition.
    let label = lab.label("q\"\\");
    let img = lab.image("m.img", &label, "96M");
    let dev = lab.insert(&img);
    let s = lab.wait_first_monthly(&label);
    let m = &inserted(&s)[0];
    let id = m["media_id"].as_str().unwrap().to_string();

    let out = lab.ctl(&["status", "--format", "openmetrics"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let om = text(&out.stdout);
    assert!(om.ends_with("# EOF\n"), "{om}");
    let samples = parse(&om);
    let who = [("media_id", id.as_str()), ("label", label.as_str())];
    assert_eq!(value(&samples, "trayback_agent_up", &[]), Some(1.0));
    assert_eq!(value(&samples, "trayback_medium_inserted", &who), Some(1.0));
    let monthly = value(
        &samples,
        "trayback_medium_newest_backup_timestamp_seconds",
        &[who[0], who[1], ("kind", "monthly")],
    );
    assert_eq!(
        monthly,
        Some(epoch(m["newest"]["monthly"]["started"].as_str().unwrap()))
    );
    let free = value(&samples, "trayback_medium_free_bytes", &who).unwrap();
    let size = value(&samples, "trayback_medium_size_bytes", &who).unwrap();
    let used = value(&samples, "trayback_medium_used_bytes", &who).unwrap();
    assert!(size > 0.0 && free > 0.0 && used > 0.0, "{om}");
    assert_eq!(free + used, size);
    assert_eq!(
        value(&samples, "trayback_medium_last_verify_ok", &who),
        Some(1.0)
    );
    assert!(value(&samples, "trayback_medium_pared_backups", &who).is_some());
    assert_eq!(
        value(&samples, "trayback_medium_job_running", &who),
        Some(0.0)
    );

    // The agent's file says the same, and is rewritten when the tray is pulled.
    let file = lab.tmp.path().join("metrics/trayback.prom");
    let in_file = wait_file(&lab, &file, &who, 1.0);
    assert_eq!(
        value(
            &in_file,
            "trayback_medium_newest_backup_timestamp_seconds",
            &[who[0], who[1], ("kind", "monthly")]
        ),
        monthly
    );
    lab.pull(&dev);
    let away = wait_file(&lab, &file, &who, 0.0);
    assert!(value(&away, "trayback_medium_last_seen_timestamp_seconds", &who).is_some());
    assert_eq!(
        value(
            &away,
            "trayback_medium_newest_backup_timestamp_seconds",
            &[who[0], who[1], ("kind", "monthly")]
        ),
        monthly,
        "an away medium keeps its newest backups"
    );
    // No temporary file is left beside it for the collector to trip over.
    let names: Vec<String> = fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["trayback.prom"]);

    // The agent's log (stderr, not a terminal): no progress bars or colours, one line per
    // event with its fields.
    let log = lab.log();
    assert!(!log.contains('\x1b') && !log.contains('\r'), "{log}");
    assert!(
        log.lines().any(|l| l.contains("backup done")
            && l.contains("event=\"backup_done\"")
            && l.contains(&format!("medium={id}"))
            && l.contains("backup=1")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("medium inserted") && l.contains("event=\"medium_inserted\"")),
        "{log}"
    );

    // Stopped, the agent leaves its last status with agent_up 0.
    lab.stop_agent();
    let stopped = parse(&fs::read_to_string(&file).unwrap());
    assert_eq!(value(&stopped, "trayback_agent_up", &[]), Some(0.0));
    // And with no agent, the command says so to Prometheus, exit 0.
    let out = lab.ctl(&["status", "--format", "openmetrics"]);
    assert!(out.status.success());
    assert_eq!(
        value(&parse(&text(&out.stdout)), "trayback_agent_up", &[]),
        Some(0.0)
    );
}

/// Attack finding (atk-pkg, P2): the metrics file's directory is followed through a symlink
/// that a non-root user planted. On Debian `/var/lib/prometheus` is the `prometheus` user's
/// home (owned by it), so that user can swap `node-exporter` in it for a symlink to any
/// directory, and the agent (root) then creates and replaces `trayback.prom` there (here a
/// root-owned directory standing for /etc). Expected: the agent does not follow a symlink
/// for the metrics file's directory; it logs that it cannot write the file, naming it.
#[test]
fn metrics_file_does_not_follow_a_users_symlink() {
    let lab = Lab::custom(
        |l| {
            // The exporter user's home (uid 65534 stands for `prometheus`), in which that
            // user replaced the textfile directory with a symlink to a root-owned directory.
            let home = l.tmp.path().join("exporter-home");
            let victim = l.tmp.path().join("victim");
            fs::create_dir(&home).unwrap();
            fs::create_dir(&victim).unwrap();
            std::os::unix::fs::symlink(&victim, home.join("node-exporter")).unwrap();
            std::os::unix::fs::lchown(home.join("node-exporter"), Some(65534), Some(65534))
                .unwrap();
            std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
            l.default_config(&format!(
                "  metrics_file: {}/node-exporter/trayback.prom\n",
                home.display()
            ))
        },
        &[],
    );
    let t0 = Instant::now();
    while !lab.log().contains("metrics file")
        && !lab.tmp.path().join("victim/trayback.prom").exists()
        && t0.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let written: Vec<String> = fs::read_dir(lab.tmp.path().join("victim"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        written.is_empty(),
        "the agent wrote {written:?} through a non-root user's symlink; log:\n{}",
        lab.log()
    );
}

/// Attack finding (atk-pkg, P2): `status --format openmetrics` run by a user the control
/// socket refuses (it is root only; a textfile-collector script typically runs as the
/// exporter's user) prints `trayback_agent_up 0` and exits 0, exactly what it prints when
/// no agent runs: the agent is reported down while it runs, and the cause is only on
/// stderr. Expected: a refused connection is not "no agent": a non-zero exit, naming the
/// socket.
#[test]
fn openmetrics_refused_by_the_socket_is_not_agent_down() {
    let lab = Lab::new("");
    // The agent answers root.
    let out = lab.ctl(&["status", "--format", "openmetrics"]);
    assert!(
        value(&parse(&text(&out.stdout)), "trayback_agent_up", &[]) == Some(1.0),
        "{}",
        text(&out.stdout)
    );
    // As an unprivileged user (uid 65534): the socket refuses it.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .args(["status", "--format", "openmetrics"])
        .env("TRAYBACK_SOCKET", &lab.socket)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "refused by the socket, it reported the running agent down and exited 0:\nstdout: {}stderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
