//! The deployment files in `deploy/` (no container engine or cluster runs here): the Kubernetes
//! manifests parse and hold together (selectors, volumes, ports, probes, a non-root and
//! read-only container), their configuration and environment are what `warden serve` accepts,
//! the probes' routes answer on a daemon started from that configuration, and the Dockerfile is
//! a multi-stage build whose runtime stage runs `warden serve` as a non-root user.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::WARDEN;
use common::serve::Server;
use serde_json::Value;

fn deploy() -> PathBuf {
    common::mcp::root().join("deploy")
}

/// Every document of a manifest file.
fn documents(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap();
    text.split("\n---\n")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .map(|d| {
            serde_saphyr::from_str::<Value>(d).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        })
        .collect()
}

fn all_documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(deploy().join("kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for doc in documents(&path) {
            out.push((name.clone(), doc));
        }
    }
    assert!(out.len() >= 4, "{out:?}");
    out
}

/// `warden ARGS` with exactly the WARDEN_* variables `vars`.
fn warden(args: &[&str], vars: &[(String, String)]) -> Output {
    let mut command = Command::new(WARDEN);
    command.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("WARDEN_") {
            command.env_remove(k);
        }
    }
    command
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

/// The ConfigMap's files written to `dir` (`warden.yaml` and the policies under `policies/`).
fn config_map(docs: &[(String, Value)], dir: &Path) -> PathBuf {
    let map = docs
        .iter()
        .find(|(_, d)| d["kind"] == "ConfigMap")
        .map(|(_, d)| d)
        .expect("a ConfigMap");
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    for (name, content) in map["data"].as_object().unwrap() {
        let path = if name == "warden.yaml" {
            dir.join(name)
        } else {
            dir.join("policies").join(name)
        };
        std::fs::write(path, content.as_str().unwrap()).unwrap();
    }
    dir.join("warden.yaml")
}

#[test]
fn kubernetes_manifests_hold_together() {
    let docs = all_documents();
    let config_maps: Vec<&Value> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "ConfigMap")
        .map(|(_, d)| d)
        .collect();
    for (file, doc) in &docs {
        for field in ["apiVersion", "kind"] {
            assert!(doc[field].is_string(), "{file}: {field} missing");
        }
        assert!(doc["metadata"]["name"].is_string(), "{file}: metadata.name");
        if doc["kind"] != "Deployment" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap();
        let what = format!("{file} {name}");
        let pod = &doc["spec"]["template"];
        for (k, v) in doc["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&pod["metadata"]["labels"][k], v, "{what}: selector");
        }
        let spec = &pod["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{what}");
        assert_ne!(spec["securityContext"]["runAsUser"], 0, "{what}");
        let volumes: Vec<&Value> = spec["volumes"].as_array().unwrap().iter().collect();
        for container in spec["containers"].as_array().unwrap() {
            let c = format!("{what}/{}", container["name"]);
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{c}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{c}");
            assert_eq!(security["capabilities"]["drop"][0], "ALL", "{c}");
            for mount in container["volumeMounts"].as_array().into_iter().flatten() {
                let volume = volumes
                    .iter()
                    .find(|v| v["name"] == mount["name"])
                    .unwrap_or_else(|| panic!("{c}: no volume {}", mount["name"]));
                // A ConfigMap volume takes keys its ConfigMap has.
                if let Some(cm) = volume["configMap"]["name"].as_str() {
                    let map = config_maps
                        .iter()
                        .find(|m| m["metadata"]["name"] == cm)
                        .unwrap_or_else(|| panic!("{c}: no ConfigMap {cm}"));
                    for item in volume["configMap"]["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let key = item["key"].as_str().unwrap();
                        assert!(map["data"][key].is_string(), "{c}: {cm} has no {key}");
                    }
                }
            }
            if !container["image"].as_str().unwrap().starts_with("warden:") {
                continue;
            }
            // Warden's probes: the daemon's health routes, on a port the container declares.
            let ports: Vec<&Value> = container["ports"].as_array().unwrap().iter().collect();
            for (probe, path) in [
                ("livenessProbe", "/health/live"),
                ("readinessProbe", "/health/ready"),
            ] {
                let get = &container[probe]["httpGet"];
                assert_eq!(get["path"], path, "{c}: {probe}");
                assert!(
                    ports
                        .iter()
                        .any(|p| p["name"] == get["port"] || p["containerPort"] == get["port"]),
                    "{c}: {probe} port {} is not declared",
                    get["port"]
                );
            }
        }
    }
}

#[test]
fn the_manifests_configuration_is_what_warden_serve_accepts() {
    let docs = all_documents();
    let dir = tempfile::tempdir().unwrap();
    let config = config_map(&docs, dir.path());
    let config = config.to_str().unwrap();
    // The mounted paths, here in the temporary directory.
    let here = |p: &str| dir.path().join(p).display().to_string();
    let paths = vec![
        ("WARDEN_POLICIES".to_owned(), here("policies")),
        ("WARDEN_KEYS_FILE".to_owned(), here("keys.json")),
    ];
    let check = warden(&["config", "check", "--config", config], &paths);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("support-agent"));
    // Every WARDEN_* variable the manifests give Warden's containers names a setting.
    for (file, doc) in &docs {
        let Some(containers) = doc["spec"]["template"]["spec"]["containers"].as_array() else {
            continue;
        };
        for container in containers
            .iter()
            .filter(|c| c["image"].as_str().unwrap().starts_with("warden:"))
        {
            let mut vars: Vec<(String, String)> = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_owned(),
                        e["value"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            vars.extend(paths.iter().cloned());
            let shown = warden(&["config", "show"], &vars);
            let stderr = String::from_utf8_lossy(&shown.stderr);
            assert!(shown.status.success(), "{file}: {stderr}");
            assert!(!stderr.contains("names no setting"), "{file}: {stderr}");
        }
    }
    // The probes' routes answer on a daemon started from this configuration (no key file yet:
    // the secret would hold it).
    let server = Server::spawn(
        &[
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
            "--policies",
            &here("policies"),
            "--keys",
            &here("keys.json"),
        ],
        &dir.path().join("port"),
        &dir.path().join("log"),
    );
    for path in ["/health/live", "/health/ready"] {
        assert_eq!(server.get(path).status, 200, "{path}");
    }
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_warden_as_a_non_root_user() {
    let text = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("FROM "))
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "a multi-stage build");
    assert!(
        lines[stages[0]].contains(" AS build"),
        "{}",
        lines[stages[0]]
    );
    let runtime = &lines[*stages.last().unwrap()..];
    let user = runtime
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric uid");
    assert_ne!(uid, 0, "non-root");
    assert!(
        runtime
            .iter()
            .any(|l| l.starts_with("COPY --from=build") && l.contains("/usr/local/bin/warden")),
        "the binary comes from the build stage"
    );
    let entrypoint = runtime
        .iter()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).unwrap();
    assert_eq!(entrypoint, ["/usr/local/bin/warden", "serve"]);
    assert!(runtime.contains(&"EXPOSE 8181"));
    // The configuration it bakes in is one `warden serve` accepts, and listens where EXPOSE says.
    let baked = deploy().join("warden.yaml");
    assert!(runtime.contains(&"COPY deploy/warden.yaml /etc/warden/warden.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let policies = common::mcp::root().join("examples").display().to_string();
    let check = warden(
        &["config", "show", "--config", baked.to_str().unwrap()],
        &[("WARDEN_POLICIES".to_owned(), policies)],
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let shown: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(shown["config"]["listen"], "0.0.0.0:8181");
    drop(dir);
}
