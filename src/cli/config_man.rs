//! `trayback.yaml(5)`, generated from the commented default configuration
//! (`config/trayback.yaml`, the file installed as `/etc/trayback/trayback.yaml`), so the
//! configuration has one description: the comments above each key, and its inline comment.
//!
//! The file's shape, which this reader relies on (and `tests/package.rs` checks against the
//! parser's own list of keys): the opening comment block describes the file; a key at column
//! 0 without a value opens a section (`schedule:`, `pare:`, `agent:`) whose keys are indented;
//! a key may be commented out (`# daily_at: "02:00"`), which documents a key without a
//! default; the comment lines right above a key (up to a blank line) describe it.

use roff::{bold, italic, roman, Roff};

/// One documented key.
struct Key {
    /// `agent.state_dir`
    path: String,
    /// The value in the file (the default), or an example for a commented-out key.
    value: String,
    commented_out: bool,
    text: Vec<String>,
}

/// A key line, `name: value  # comment`, with its indentation; `None` for other lines.
fn key_line(line: &str) -> Option<(usize, &str, &str)> {
    let indent = line.len() - line.trim_start().len();
    let rest = line.trim_start();
    let (name, value) = rest.split_once(':')?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return None;
    }
    if !(value.is_empty() || value.starts_with(' ')) {
        return None;
    }
    Some((indent, name, value.trim()))
}

/// `value  # comment` → (value, comment).
fn split_comment(v: &str) -> (String, Option<String>) {
    match v.find(" #") {
        Some(i) if !v[..i].contains('"') || v[..i].matches('"').count() % 2 == 0 => (
            v[..i].trim().to_string(),
            Some(v[i + 2..].trim().to_string()),
        ),
        _ => (v.trim().to_string(), None),
    }
}

/// A section (`agent`) and the comment above it.
type Section = (Option<String>, Vec<String>);

/// The opening description, the sections and every key, in file order.
fn parse(text: &str) -> (Vec<String>, Vec<Section>, Vec<Key>) {
    let mut lines = text.lines().peekable();
    let mut intro = Vec::new();
    while let Some(l) = lines.next_if(|l| l.starts_with('#')) {
        intro.push(l.trim_start_matches('#').trim().to_string());
    }
    let mut sections: Vec<Section> = Vec::new();
    let mut keys: Vec<Key> = Vec::new();
    let mut section: Option<String> = None;
    let mut comment: Vec<String> = Vec::new();
    for line in lines {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            comment.clear();
            continue;
        }
        let (commented_out, body) = match trimmed.strip_prefix('#') {
            Some(c) => (true, c.strip_prefix(' ').unwrap_or(c)),
            None => (false, line),
        };
        if let Some(item) = body
            .trim_start()
            .strip_prefix("- ")
            .filter(|_| !commented_out)
        {
            if let Some(k) = keys.last_mut() {
                let sep = if k.value.is_empty() { "" } else { ", " };
                k.value = format!("{}{sep}{}", k.value, item.trim());
            }
            continue;
        }
        let indent = if commented_out {
            line.len() - trimmed.len()
        } else {
            0
        };
        match key_line(body) {
            Some((ind, name, value)) => {
                let top = indent + ind == 0;
                if top && value.is_empty() && !commented_out {
                    // A section, or a list-valued key ("sources:") whose items follow.
                    let is_list = text
                        .lines()
                        .skip_while(|l| *l != line)
                        .nth(1)
                        .is_some_and(|n| n.trim_start().starts_with("- "));
                    if !is_list {
                        section = Some(name.to_string());
                        sections.push((section.clone(), std::mem::take(&mut comment)));
                        continue;
                    }
                }
                if top && !commented_out {
                    section = None;
                }
                let (value, inline) = split_comment(value);
                let mut text = std::mem::take(&mut comment);
                text.extend(inline);
                let path = match (&section, top) {
                    (Some(s), false) => format!("{s}.{name}"),
                    _ => name.to_string(),
                };
                keys.push(Key {
                    path,
                    value,
                    commented_out,
                    text,
                });
            }
            None if commented_out => comment.push(body.trim().to_string()),
            None => comment.clear(),
        }
    }
    (intro, sections, keys)
}

/// The page, as roff.
pub fn page(default_config: &str) -> String {
    let (intro, sections, keys) = parse(default_config);
    let mut r = Roff::new();
    r.control("TH", ["TRAYBACK.YAML", "5"]);
    r.control("SH", ["NAME"]);
    r.text([roman(
        "trayback.yaml - configuration of the trayback backup agent and CLI",
    )]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([bold("/etc/trayback/trayback.yaml")]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(intro.join(" "))]);
    r.control("PP", []);
    r.text([roman(
        "A command reads the file given with --config, else this one when it exists, else uses the defaults below. \
         Each key below shows its default (or, for a key without one, an example).",
    )]);
    r.control("SH", ["KEYS"]);
    let mut shown: Option<Option<String>> = None;
    for k in &keys {
        let sec = k.path.split_once('.').map(|(s, _)| s.to_string());
        if shown.as_ref() != Some(&sec) {
            if let Some(s) = &sec {
                r.control("SS", [s.as_str()]);
                if let Some((_, text)) = sections.iter().find(|(n, _)| n.as_ref() == Some(s)) {
                    r.text([roman(text.join(" "))]);
                }
            }
            shown = Some(sec);
        }
        r.control("TP", []);
        let what = if k.commented_out {
            "example: "
        } else {
            "default: "
        };
        let value = if k.value.is_empty() {
            "(none)"
        } else {
            &k.value
        };
        r.text([
            bold(k.path.as_str()),
            roman(" ("),
            roman(what),
            italic(value),
            roman(")"),
        ]);
        r.text([roman(k.text.join(" "))]);
    }
    r.control("SH", ["EXAMPLE"]);
    r.text([roman("The default file, as installed:")]);
    r.control("PP", []);
    r.control("nf", []);
    for l in default_config.lines() {
        r.text([roman(l)]);
    }
    r.control("fi", []);
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("trayback"),
        roman("(1), "),
        bold("trayback-agent"),
        roman("(1)"),
    ]);
    r.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys the parser accepts in a section, as its own error for an unknown key lists
    /// them (serde's "expected one of …").
    fn accepted(section: Option<&str>) -> Vec<String> {
        let text = match section {
            Some(s) => format!("{s}:\n  no_such_key: 1\n"),
            None => "no_such_key: 1\n".to_string(),
        };
        let err = crate::config::Config::parse(&text, std::path::Path::new("t.yaml"))
            .unwrap_err()
            .to_string();
        let list = err
            .split_once("expected one of ")
            .unwrap_or_else(|| panic!("{err}"))
            .1;
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(|k| match section {
                Some(s) => format!("{s}.{k}"),
                None => k.to_string(),
            })
            .collect()
    }

    #[test]
    fn every_key_the_parser_accepts_is_in_the_page() {
        let (_, sections, keys) = parse(crate::cli::agent_cmds::DEFAULT_CONFIG);
        let documented: Vec<&str> = keys.iter().map(|k| k.path.as_str()).collect();
        let mut all = accepted(None);
        let names: Vec<String> = sections.iter().filter_map(|(n, _)| n.clone()).collect();
        for s in &names {
            all.extend(accepted(Some(s)));
        }
        assert!(all.len() > 20, "{all:?}");
        for key in &all {
            let section_itself = names.contains(key);
            assert!(
                section_itself || documented.contains(&key.as_str()),
                "{key} is accepted by the parser but not described in config/trayback.yaml \
                 (so not in trayback.yaml(5))"
            );
        }
        // And the page shows each one.
        let page = page(crate::cli::agent_cmds::DEFAULT_CONFIG);
        for key in &documented {
            assert!(page.contains(&format!("\\fB{key}\\fR")), "{key}");
        }
    }

    #[test]
    fn keys_sections_and_commented_out_examples() {
        let text = "# intro\n# more\n\n# the sources\nsources:\n  - /a\n  - /b\n\n# level\nlevel: 3   # inline\n\n# sec\nagent:\n  # where\n  run_dir: /run/x\n  # e.g.:\n  # label: \"T*\"\n";
        let (intro, sections, keys) = parse(text);
        assert_eq!(intro, ["intro", "more"]);
        assert_eq!(
            sections,
            [(Some("agent".to_string()), vec!["sec".to_string()])]
        );
        let got: Vec<(&str, &str, bool, String)> = keys
            .iter()
            .map(|k| {
                (
                    k.path.as_str(),
                    k.value.as_str(),
                    k.commented_out,
                    k.text.join("|"),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("sources", "/a, /b", false, "the sources".to_string()),
                ("level", "3", false, "level|inline".to_string()),
                ("agent.run_dir", "/run/x", false, "where".to_string()),
                ("agent.label", "\"T*\"", true, "e.g.:".to_string()),
            ]
        );
    }
}
