//! The deployment examples in deploy/ are checked, not just shown: the
//! systemd units pass `systemd-analyze verify`, the Kubernetes manifests
//! parse, keep every secret out of the manifest, and — like the units —
//! call only cairn commands and flags that exist; the example plan passes
//! `cairn config check`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cairn_tests::redis::require_tool;
use cairn_tests::repo::cairn_bin;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("deploy")
}

/// `cairn <path> --help`, memoised.
struct Help(HashMap<Vec<String>, String>);

impl Help {
    fn of(&mut self, path: &[String]) -> &str {
        self.0.entry(path.to_vec()).or_insert_with(|| {
            let o = Command::new(cairn_bin()).args(path).arg("--help").output().unwrap();
            assert!(o.status.success(), "cairn {path:?} --help: {}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8(o.stdout).unwrap()
        })
    }

    /// The subcommands `cairn <path>` lists.
    fn subcommands(&mut self, path: &[String]) -> Vec<String> {
        let h = self.of(path);
        let Some(i) = h.find("Commands:") else { return Vec::new() };
        h[i..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// Whether `--flag` of `cairn <path>` takes a value (`--flag <V>` in help).
    fn flag(&mut self, path: &[String], flag: &str) -> Option<bool> {
        let h = self.of(path);
        let at = h.match_indices(flag).find(|(i, _)| {
            let next = h.as_bytes().get(i + flag.len()).copied();
            h[..*i].ends_with(' ') && matches!(next, Some(b' ' | b'\n' | b','))
        })?;
        Some(h[at.0 + flag.len()..].starts_with(" <"))
    }
}

/// Asserts that `args` (what follows the cairn binary) names an existing
/// subcommand and only flags it has.
fn check_invocation(help: &mut Help, what: &str, args: &[String]) {
    let mut path: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(flag) = a.strip_prefix("--").map(|f| format!("--{}", f.split('=').next().unwrap())) {
            let takes_value =
                help.flag(&path, &flag).unwrap_or_else(|| panic!("{what}: `cairn {}` has no {flag}", path.join(" ")));
            if takes_value && !a.contains('=') {
                i += 1;
            }
        } else if !a.starts_with('-') && help.subcommands(&path).contains(a) {
            path.push(a.clone());
        }
        i += 1;
    }
    assert!(!path.is_empty(), "{what}: no cairn subcommand in {args:?}");
    assert!(help.subcommands(&path).is_empty(), "{what}: `cairn {}` needs a subcommand", path.join(" "));
}

fn config_check(what: &str, path: &Path) {
    let o = Command::new(cairn_bin()).arg("--config").arg(path).args(["config", "check"]).env_clear().output().unwrap();
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn systemd_units_verify_and_call_existing_commands() {
    require_tool("systemd-analyze");
    let src = deploy().join("systemd");
    let dir = tempfile::tempdir().unwrap();
    let bin = cairn_bin().display().to_string();
    let mut help = Help(HashMap::new());
    let mut units = Vec::new();
    let mut services = 0;
    let mut receivers = 0;
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(e.path()).unwrap();
        for line in text.lines().filter_map(|l| l.strip_prefix("ExecStart=")) {
            let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            assert_eq!(words[0], "/usr/local/bin/cairn", "{name}");
            check_invocation(&mut help, &name, &words[1..]);
            services += 1;
            if words[1..].windows(2).any(|w| w == ["pg", "receive"]) {
                // A long-running receiver: restarted whatever ends it, and
                // stopped with the signal that makes it flush first.
                receivers += 1;
                for want in ["Restart=always", "KillSignal=SIGTERM", "StartLimitIntervalSec=0"] {
                    assert!(text.lines().any(|l| l == want), "{name}: no {want}");
                }
            }
        }
        // Secrets come from files (credentials, EnvironmentFile), never
        // from the unit itself.
        for line in text.lines().filter(|l| l.starts_with("Environment=") || l.starts_with("ExecStart=")) {
            for secret in ["PASSWORD", "SECRET", "password="] {
                assert!(!line.contains(secret), "{name}: a secret in the unit: {line}");
            }
        }
        // The binary the units name is this build's, for verify.
        std::fs::write(dir.path().join(&name), text.replace("/usr/local/bin/cairn", &bin)).unwrap();
        units.push(name);
    }
    assert_eq!(receivers, 1, "a unit for `cairn pg receive`");
    assert!(services >= 5 && units.iter().filter(|u| u.ends_with(".timer")).count() >= 6, "{units:?}");
    let o = Command::new("systemd-analyze").arg("verify").args(&units).current_dir(dir.path()).output().unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    config_check("deploy/cairn.toml", &deploy().join("cairn.toml"));
}

#[test]
fn kubernetes_manifests_parse_keep_secrets_out_and_call_existing_commands() {
    require_tool("python3");
    let mut p = Command::new("python3")
        .args(["-c", "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = std::fs::read(deploy().join("kubernetes/cronjobs.yaml")).unwrap();
    std::io::Write::write_all(&mut p.stdin.take().unwrap(), &text).unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(o.status.success(), "the manifests do not parse: {}", String::from_utf8_lossy(&o.stderr));
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let mut help = Help(HashMap::new());
    let mut jobs = Vec::new();
    for d in &docs {
        match d["kind"].as_str().unwrap() {
            "ConfigMap" => {
                let dir = tempfile::tempdir().unwrap();
                let cfg = dir.path().join("cairn.toml");
                std::fs::write(&cfg, d["data"]["cairn.toml"].as_str().unwrap()).unwrap();
                config_check("the ConfigMap's cairn.toml", &cfg);
            }
            "CronJob" => {
                let name = d["metadata"]["name"].as_str().unwrap();
                let schedule = d["spec"]["schedule"].as_str().unwrap();
                assert_eq!(schedule.split_whitespace().count(), 5, "{name}: schedule {schedule:?}");
                let pod = &d["spec"]["jobTemplate"]["spec"]["template"]["spec"];
                assert_eq!(pod["restartPolicy"], "Never", "{name}");
                for c in pod["containers"].as_array().unwrap() {
                    let cmd: Vec<String> =
                        c["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
                    assert_eq!(cmd, ["/usr/local/bin/cairn"], "{name}");
                    let args: Vec<String> =
                        c["args"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
                    check_invocation(&mut help, name, &args);
                    for e in c["env"].as_array().unwrap() {
                        let var = e["name"].as_str().unwrap();
                        let secret = ["SECRET", "PASSWORD", "ACCESS_KEY", "TOKEN"].iter().any(|s| var.contains(s));
                        if secret {
                            assert!(
                                e.get("value").is_none() && e["valueFrom"]["secretKeyRef"].is_object(),
                                "{name}: {e}"
                            );
                        }
                    }
                }
                for v in pod["volumes"].as_array().unwrap() {
                    if let Some(s) = v.get("secret") {
                        assert_eq!(s["defaultMode"], 0o400, "{name}: secret volumes are private: {v}");
                    }
                }
                jobs.push(name.to_string());
            }
            k => panic!("unexpected kind {k}"),
        }
    }
    for want in [
        "cairn-run-pg-main",
        "cairn-run-redis-main",
        "cairn-run-models",
        "cairn-run-configs",
        "cairn-check",
        "cairn-drill",
    ] {
        assert!(jobs.iter().any(|j| j == want), "no CronJob {want}: {jobs:?}");
    }
    // No secret material anywhere in the file.
    let text = String::from_utf8(text).unwrap();
    assert!(!text.contains("kind: Secret"), "secrets are created out of band, not in the manifest");
}
