//! The deployment files — `Dockerfile`, `deploy/docker-compose.yml`,
//! `deploy/kubernetes/*.yaml` — cannot be run here (no container engine), so
//! this checks that they parse and agree with what remora really does: the
//! binary and its subcommands, the config path and its environment variable,
//! the default ports, the proxy uid that `remora iptables` exempts, the
//! admin endpoints, and that every remora config they carry loads; and that
//! the training workload of the profile-guided release build runs.

use std::path::{Path, PathBuf};

use serde_json::Value;

use remora::config::{AdminConfig, Config, InboundConfig, TransparentConfig};

const CONFIG_PATH: &str = "/etc/remora/remora.yaml";
const BINARY: &str = "/usr/local/bin/remora";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("YAML: {e}"))
}

/// Subcommands `remora --help` lists.
fn subcommands() -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_remora"))
        .arg("--help")
        .output()
        .expect("remora --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn default_ports() -> [u16; 3] {
    [
        AdminConfig::default().listen.port(),
        TransparentConfig::default().outbound_listen.port(),
        InboundConfig::default().listen.port(),
    ]
}

#[test]
fn dockerfile_builds_and_runs_the_real_binary() {
    // One instruction per logical line (`\` continues a line).
    let dockerfile = read("Dockerfile").replace("\\\n", " ");
    let instructions: Vec<(&str, &str)> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once(' '))
        .collect();
    let all = |name: &str| -> Vec<&str> {
        (instructions.iter())
            .filter(|(instruction, _)| *instruction == name)
            .map(|(_, args)| *args)
            .collect()
    };
    assert!(all("FROM").len() >= 2, "multi-stage");
    assert!(all("FROM")[0].ends_with(" AS build"));
    assert!(
        all("RUN")
            .iter()
            .any(|run| run.starts_with("scripts/release.sh")),
        "the build stage builds the release as it ships"
    );
    let release = read("scripts/release.sh");
    assert!(release.contains("cargo build --release --locked --bin remora"));
    assert!(
        release
            .contains("cp \"target/pgo/release/$host/release/remora\" target/release-pgo/remora")
    );
    assert!(
        all("COPY").contains(&"--from=build /src/target/release-pgo/remora /usr/local/bin/remora"),
        "the runtime stage copies the profile-guided release binary"
    );
    assert_eq!(all("ENTRYPOINT"), [format!("[\"{BINARY}\"]")]);
    let command: Vec<String> = serde_json::from_str(all("CMD")[0]).expect("CMD in exec form");
    assert_eq!(command, ["run"]);
    assert!(subcommands().contains("run"));
    assert_eq!(all("ENV"), [format!("REMORA_CONFIG={CONFIG_PATH}")]);
    let exposed: Vec<u16> = all("EXPOSE")[0]
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(exposed, default_ports());
    let uid = TransparentConfig::default().proxy_uid.to_string();
    assert_eq!(
        all("USER"),
        [uid.as_str()],
        "the uid remora iptables exempts"
    );
    assert!(
        all("RUN")
            .iter()
            .any(|run| run.contains(&format!("--uid {uid}")))
    );
    assert!(
        all("RUN").iter().any(|run| run.contains("iptables")),
        "for the init container"
    );
}

/// The training workload of the shipped build (`scripts/release.sh`) runs
/// on the current binary: every configuration it trains on starts and
/// serves its load without an error (HTTP/1.1, the whole stack, h2c, and
/// sidecar-to-sidecar mTLS with certificates openssl makes), so a change
/// that breaks one fails here, not in a release build. This binary is not
/// instrumented: nothing is profiled, the workload only runs.
#[test]
fn the_release_builds_training_workload_runs() {
    let output = std::process::Command::new("bash")
        .arg(root().join("bench/pgo-training.sh"))
        .arg(env!("CARGO_BIN_EXE_remora"))
        .env("SECONDS_EACH", "1")
        .output()
        .expect("bash bench/pgo-training.sh (Debian: haproxy wrk nghttp2-client openssl curl)");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    for workload in ["http1", "full-stack", "h2c", "mesh-mtls"] {
        assert!(log.contains(&format!("{workload}: 1s of load")), "{log}");
    }
}

/// Loads a remora config given as YAML text.
fn load(text: &str, what: &str) -> Config {
    remora::config::parse(text, what).unwrap_or_else(|errors| panic!("{what}:\n{errors}"))
}

#[test]
fn compose_sidecars_mount_configs_that_load() {
    let compose = yaml(&read("deploy/docker-compose.yml"));
    let services = compose["services"].as_object().expect("services");
    for name in ["consul", "web", "web-sidecar", "api", "api-sidecar"] {
        assert!(services.contains_key(name), "service {name}");
    }
    for (sidecar, app) in [("web-sidecar", "web"), ("api-sidecar", "api")] {
        let service = &services[sidecar];
        assert_eq!(service["image"], "remora:latest");
        assert_eq!(service["command"], serde_json::json!(["run"]));
        let volume = service["volumes"][0].as_str().expect("a config volume");
        let (source, target) = volume.trim_end_matches(":ro").split_once(':').unwrap();
        assert_eq!(target, CONFIG_PATH);
        let config = load(
            &read(&format!("deploy/{}", source.trim_start_matches("./"))),
            source,
        );
        assert_eq!(config.service.name, app);
        assert_eq!(config.admin.listen.port(), default_ports()[0]);
        assert_eq!(services[app]["network_mode"], format!("service:{sidecar}"));
    }
    assert_eq!(services["api-sidecar"]["build"]["dockerfile"], "Dockerfile");
    // Consul sends callers to api's inbound listener at its fixed address.
    let registration: Value =
        serde_json::from_str(&read("deploy/compose/consul-api.json")).unwrap();
    let api = load(&read("deploy/compose/api-sidecar.yaml"), "api-sidecar");
    let inbound = api.inbound.expect("inbound");
    assert_eq!(registration["service"]["port"], inbound.listen.port());
    assert_eq!(
        registration["service"]["address"],
        services["api-sidecar"]["networks"]["mesh"]["ipv4_address"]
    );
    let web = load(&read("deploy/compose/web-sidecar.yaml"), "web-sidecar");
    let listen = web.upstreams[0].listen.expect("explicit listener");
    assert!(
        services["web"]["command"][2]
            .as_str()
            .unwrap()
            .contains(&format!("http://{listen}/"))
    );
}

fn kubernetes_documents() -> Vec<Value> {
    let dir = root().join("deploy/kubernetes");
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/kubernetes") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        documents.extend(text.split("\n---\n").map(yaml));
    }
    documents
}

fn by_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn kubernetes_pod_has_sidecar_probes_and_iptables_init() {
    let documents = kubernetes_documents();
    let deployments = by_kind(&documents, "Deployment");
    assert!(!deployments.is_empty());
    for deployment in deployments {
        let spec = &deployment["spec"]["template"]["spec"];
        let volume = &spec["volumes"][0];
        let config_map = volume["configMap"]["name"].as_str().unwrap();
        let config_text = by_kind(&documents, "ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"] == config_map)
            .and_then(|c| c["data"]["remora.yaml"].as_str())
            .expect("the ConfigMap with remora.yaml");
        let config = load(config_text, config_map);
        let transparent = config.transparent.clone().expect("transparent mode");
        let admin = config.admin.listen;
        assert!(admin.ip().is_unspecified(), "kubelet probes the pod IP");
        let mounted = |container: &Value| {
            let mount = &container["volumeMounts"][0];
            assert_eq!(mount["name"], volume["name"]);
            assert_eq!(
                Path::new(mount["mountPath"].as_str().unwrap()).join("remora.yaml"),
                Path::new(CONFIG_PATH)
            );
            assert_eq!(container["env"][0]["name"], "REMORA_CONFIG");
            assert_eq!(container["env"][0]["value"], CONFIG_PATH);
        };

        let init = &spec["initContainers"][0];
        assert_eq!(init["args"], serde_json::json!(["iptables", "--apply"]));
        assert!(subcommands().contains("iptables"));
        assert!(
            init["securityContext"]["capabilities"]["add"]
                .as_array()
                .unwrap()
                .contains(&"NET_ADMIN".into())
        );
        assert_eq!(init["securityContext"]["runAsUser"], 0);
        mounted(init);

        let containers = spec["containers"].as_array().unwrap();
        let sidecar = containers
            .iter()
            .find(|c| c["name"] == "remora")
            .expect("remora sidecar");
        assert_eq!(sidecar["image"], init["image"]);
        assert_eq!(sidecar["args"], serde_json::json!(["run"]));
        mounted(sidecar);
        assert_eq!(
            sidecar["securityContext"]["runAsUser"],
            transparent.proxy_uid
        );
        assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/live");
        assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/ready");
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(sidecar[probe]["httpGet"]["port"], admin.port());
        }
        assert!(sidecar["lifecycle"]["preStop"].is_object());
        let ports: Vec<u64> = (sidecar["ports"].as_array().unwrap().iter())
            .map(|p| p["containerPort"].as_u64().unwrap())
            .collect();
        let inbound = config.inbound.as_ref().expect("inbound").listen.port();
        let expected = [admin.port(), transparent.outbound_listen.port(), inbound];
        assert_eq!(ports, expected.map(u64::from));
        let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(grace > config.runtime.drain_timeout.as_secs() + 5);

        let app = containers
            .iter()
            .find(|c| c["name"] == "app")
            .expect("app container");
        let app_port = app["ports"][0]["containerPort"].as_u64().unwrap();
        assert_eq!(Some(app_port), config.service.port.map(u64::from));
    }
}
