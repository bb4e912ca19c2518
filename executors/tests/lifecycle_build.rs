//! The build phase against real bubblewrap and the shell buildpacks in tests/buildpacks:
//! Buildpack Plans, env-file layering between buildpacks, the CNB_* variables, processes
//! and the default process, labels, slices, layer types, and failures.

#[path = "buildpacks/fixture.rs"]
mod fixture;

use std::collections::BTreeMap;

use executors::lifecycle::build::{build, BuildError};
use executors::lifecycle::descriptor::LayerTypes;
use executors::lifecycle::detect::{detect, DetectOutcome};
use executors::lifecycle::Phase;
use fixture::{add_buildpack, env_dump, fixture, order, read, Fixture, Logs};

async fn detected(f: &Fixture, group: &[&str]) -> DetectOutcome {
    let entries: Vec<(&str, bool)> = group.iter().map(|id| (*id, false)).collect();
    detect(&f.ctx, &order(&[&entries]), &Logs::default())
        .await
        .expect("detect passes")
}

#[tokio::test]
async fn builds_in_group_order_with_plans_env_layering_processes_and_slices() {
    let f = fixture(&["node-engine", "npm", "reporter"]);
    detected(&f, &["test/node-engine", "test/npm", "test/reporter"]).await;
    // build reads what detect left in the layers dir.
    let outcome = DetectOutcome::read(&f.ctx.layers_dir).expect("group.toml and plan.toml");
    let logs = Logs::default();
    let output = build(&f.ctx, &outcome, &logs).await.expect("build");
    let app = &f.ctx.app_dir;
    let layers = &f.ctx.layers_dir;

    // Buildpack Plans: npm's requirement went to node-engine, the provider; npm has none.
    let node_plan = read(app.join("node-engine-plan.toml"));
    assert!(node_plan.contains("name = \"node\""), "{node_plan}");
    assert!(node_plan.contains("version = \"18\""), "{node_plan}");
    assert_eq!(read(app.join("npm-plan.toml")).trim(), "entries = []");

    // The first buildpack's environment: allow-list, user env, CNB_* variables.
    let env = env_dump(app.join("node-engine-env.txt"));
    let expected: BTreeMap<&str, &str> = BTreeMap::from([
        (
            "CNB_BUILDPACK_DIR",
            "/cnb/buildpacks/test_node-engine/1.0.0",
        ),
        ("CNB_LAYERS_DIR", "/layers/test_node-engine"),
        ("CNB_PLATFORM_DIR", "/platform"),
        ("CNB_BP_PLAN_PATH", "/tmp/plan.toml"),
        ("CNB_TARGET_OS", "linux"),
        ("CNB_TARGET_ARCH", "amd64"),
        ("CNB_TARGET_DISTRO_NAME", "ubuntu"),
        ("CNB_TARGET_DISTRO_VERSION", "24.04"),
        ("HOME", "/home/cnb"),
        ("USER_VAR", "from the user"),
        ("PATH", "/user/bin:/usr/bin:/bin"),
    ]);
    for (name, value) in expected {
        assert_eq!(
            env.get(name).map(String::as_str),
            Some(value),
            "{name} in {env:?}"
        );
    }
    assert!(!env.contains_key("NOT_ALLOWED"), "{env:?}");
    assert!(!env.contains_key("NODE_HOME"), "{env:?}");

    // Later buildpacks see earlier build layers: bin on PATH, env/ and env.build/ files
    // with their suffix rules, the user's env applied last.
    assert!(logs.has(
        Phase::Build,
        "test/npm",
        "npm: NODE_HOME=/layers/test_node-engine/node"
    ));
    assert!(logs.has(Phase::Build, "test/npm", "fake-node install"));
    let env = env_dump(app.join("reporter-env.txt"));
    assert_eq!(
        env["NODE_HOME"], "/layers/test_node-engine/node",
        "override wins over a later default"
    );
    assert_eq!(
        env["CHAIN"], "from-node:from-npm",
        "prepend, then append, with delimiters"
    );
    assert_eq!(env["SET_BY_NPM"], "npm");
    assert_eq!(
        env["PATH"],
        "/user/bin:/layers/test_npm/modules/bin:/layers/test_node-engine/node/bin:/usr/bin:/bin"
    );
    assert_eq!(env["CNB_LAYERS_DIR"], "/layers/test_reporter");

    // Processes: sorted by type, default from launch.toml, command arrays.
    let kinds: Vec<&str> = output.processes.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["node", "web", "worker"]);
    assert_eq!(output.default_process.as_deref(), Some("web"));
    let web = &output.processes[1];
    assert_eq!(web.command, ["fake-node", "server.js"]);
    assert_eq!(web.args, ["8080"]);
    assert!(web.direct);
    assert_eq!(web.working_dir.as_deref(), Some("/workspace"));
    assert_eq!(web.buildpack_id, "test/npm");
    assert_eq!(output.processes[0].buildpack_id, "test/node-engine");

    // Labels: the last buildpack wins; slices in order.
    let labels: Vec<(&str, &str)> = output
        .labels
        .iter()
        .map(|l| (l.key.as_str(), l.value.as_str()))
        .collect();
    assert_eq!(
        labels,
        [("org.example.node", "18.x"), ("org.example.npm", "yes")]
    );
    assert_eq!(output.slices.len(), 1);
    assert_eq!(output.slices[0].paths, ["static/*"]);

    // Layers and their types; the all-false layer is renamed away.
    let node = &output.buildpacks[0];
    assert_eq!(node.id, "test/node-engine");
    assert_eq!(node.layers_dir, layers.join("test_node-engine"));
    assert_eq!(node.layers.len(), 1);
    assert_eq!(node.layers[0].name, "node");
    assert_eq!(
        node.layers[0].types,
        LayerTypes {
            launch: true,
            build: true,
            cache: true
        }
    );
    assert_eq!(node.layers[0].metadata["version"].as_str(), Some("18.0.0"));
    assert!(node.layers[0].has_dir);
    assert!(layers
        .join("test_node-engine/scratch.ignore/file")
        .is_file());
    assert!(!layers.join("test_node-engine/scratch").exists());
    let npm = &output.buildpacks[1];
    assert_eq!(
        npm.store.as_ref().expect("store.toml").metadata["runs"].as_integer(),
        Some(1)
    );
    assert_eq!(output.buildpacks[2].layers.len(), 0);

    // SBOM files are collected under <layers>/sbom by layer type.
    for path in [
        "sbom/launch/test_node-engine/node/sbom.cdx.json",
        "sbom/cache/test_node-engine/node/sbom.cdx.json",
        "sbom/launch/test_node-engine/sbom.spdx.json",
    ] {
        assert!(layers.join(path).is_file(), "{path}");
    }
    assert!(!layers.join("sbom/build/test_node-engine/node").exists());

    // The standard on-disk form stays for export.
    assert!(layers.join("test_npm/launch.toml").is_file());
    assert!(layers.join("test_node-engine/node/bin/fake-node").is_file());
    let metadata = read(layers.join("config/metadata.toml"));
    assert!(
        metadata.contains("buildpack-default-process-type = \"web\""),
        "{metadata}"
    );
    assert!(
        metadata.contains("buildpack-id = \"test/npm\""),
        "{metadata}"
    );
    assert!(metadata.contains("[[slices]]"), "{metadata}");
}

#[tokio::test]
async fn older_api_string_commands_and_positional_arguments() {
    let f = fixture(&["old-api"]);
    let outcome = detected(&f, &["test/old-api"]).await;
    let logs = Logs::default();
    let output = build(&f.ctx, &outcome, &logs).await.expect("build");
    assert!(logs.has(
        Phase::Build,
        "test/old-api",
        "old-api: layers /layers/test_old-api platform /platform plan /tmp/plan.toml"
    ));
    assert!(read(f.ctx.app_dir.join("old-api-plan.toml")).contains("name = \"old\""));
    assert_eq!(output.default_process.as_deref(), Some("shell"));
    let direct = &output.processes[0];
    assert_eq!((direct.kind.as_str(), direct.direct), ("direct", true));
    assert_eq!(direct.command, ["/bin/echo"]);
    assert_eq!(direct.args, ["hi"]);
    let shell = &output.processes[1];
    assert_eq!(shell.command, ["echo hello from a shell"]);
    assert!(!shell.direct);
}

#[tokio::test]
async fn a_failing_build_carries_its_log() {
    let f = fixture(&["reporter", "fails-build"]);
    let outcome = detected(&f, &["test/reporter", "test/fails-build"]).await;
    let logs = Logs::default();
    let err = build(&f.ctx, &outcome, &logs)
        .await
        .expect_err("build fails");
    let message = err.to_string();
    assert!(
        message.contains("test/fails-build@1.0.0 failed: exit 7"),
        "{message}"
    );
    assert!(message.contains("| fails-build: compiling"), "{message}");
    assert!(message.contains("| error: boom"), "{message}");
    let BuildError::BuildpackFailed { id, output, .. } = err else {
        panic!("unexpected error: {err}")
    };
    assert_eq!(id, "test/fails-build");
    assert_eq!(output, ["fails-build: compiling", "error: boom"]);
    assert!(logs.has(Phase::Build, "test/fails-build", "error: boom"));
    assert!(logs.has(Phase::Build, "test/reporter", "reporter: done"));
    assert!(
        logs.has(
            Phase::Build,
            "test/reporter",
            "reporter: wrote to /home/cnb"
        ),
        "HOME is writable"
    );
}

#[tokio::test]
async fn a_malformed_launch_toml_is_a_clear_error() {
    let f = fixture(&["bad-launch"]);
    let outcome = detected(&f, &["test/bad-launch"]).await;
    let err = build(&f.ctx, &outcome, &Logs::default())
        .await
        .expect_err("launch.toml does not parse");
    let message = err.to_string();
    let path = f.ctx.layers_dir.join("test_bad-launch/launch.toml");
    assert!(message.contains("test/bad-launch"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[tokio::test]
async fn plan_entries_a_buildpack_meets_are_gone_for_later_providers() {
    // partial and node-engine both provide node; npm requires it.
    let group = ["test/partial", "test/node-engine", "test/npm"];
    let f = fixture(&["partial", "node-engine", "npm"]);
    let outcome = detected(&f, &group).await;
    let providers: Vec<&str> = outcome.plan.entries[0]
        .providers
        .iter()
        .map(|p| p.id.as_str())
        .collect();
    assert_eq!(providers, ["test/partial", "test/node-engine"]);
    build(&f.ctx, &outcome, &Logs::default())
        .await
        .expect("build");
    assert!(read(f.ctx.app_dir.join("partial-plan.toml")).contains("name = \"node\""));
    assert_eq!(
        read(f.ctx.app_dir.join("node-engine-plan.toml")).trim(),
        "entries = []",
        "partial met node: node-engine does not see it"
    );

    // Listed as unmet in build.toml, it stays for the next provider.
    let f = fixture(&["partial", "node-engine", "npm"]);
    std::fs::write(f.ctx.platform_dir.join("env/PARTIAL_UNMET"), "node").expect("write");
    let outcome = detected(&f, &group).await;
    let output = build(&f.ctx, &outcome, &Logs::default())
        .await
        .expect("build");
    assert_eq!(output.buildpacks[0].unmet, ["node"]);
    assert!(read(f.ctx.app_dir.join("node-engine-plan.toml")).contains("name = \"node\""));

    // An unmet name that is not in the Buildpack Plan is an error.
    let f = fixture(&["partial", "node-engine", "npm"]);
    std::fs::write(f.ctx.platform_dir.join("env/PARTIAL_UNMET"), "python").expect("write");
    let outcome = detected(&f, &group).await;
    let err = build(&f.ctx, &outcome, &Logs::default())
        .await
        .expect_err("unknown unmet entry");
    assert!(
        matches!(&err, BuildError::UnmetNotInPlan { name, .. } if name == "python"),
        "{err}"
    );
    assert!(err.to_string().contains("build.toml"), "{err}");
}

#[tokio::test]
async fn dropping_the_build_kills_the_buildpack() {
    // sleeper touches `started`, sleeps 3 s, touches `finished`.
    let f = fixture(&["sleeper"]);
    let outcome = detected(&f, &["test/sleeper"]).await;
    let logs = Logs::default();
    let started = f.ctx.app_dir.join("started");
    let wait_for_start = async {
        while !started.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        result = build(&f.ctx, &outcome, &logs) => panic!("the build ended: {result:?}"),
        () = wait_for_start => {}
    }
    // The build future is dropped; had the sleep survived, it would end within 3 s.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert!(
        !f.ctx.app_dir.join("finished").exists(),
        "the buildpack went on after the build was dropped"
    );
}

#[tokio::test]
async fn build_futures_can_be_spawned() {
    let f = fixture(&["reporter"]);
    let outcome = detected(&f, &["test/reporter"]).await;
    let handle = tokio::spawn(async move {
        let logs = Logs::default();
        build(&f.ctx, &outcome, &logs)
            .await
            .map(|o| o.buildpacks.len())
    });
    assert_eq!(handle.await.expect("join").expect("build"), 1);
}

#[tokio::test]
async fn symlinks_a_buildpack_leaves_are_not_followed_on_the_host() {
    for (escape, expected) in [
        ("launch", "launch.toml is a symlink"),
        ("layers", "test_escaper is not a directory"),
    ] {
        let f = fixture(&["escaper"]);
        std::fs::write(f.ctx.platform_dir.join("env/ESCAPE"), escape).expect("write");
        let outcome = detected(&f, &["test/escaper"]).await;
        let err = build(&f.ctx, &outcome, &Logs::default())
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(expected), "{escape}: {err}");
    }
}

/// Buildpack spec, "Software-Bill-of-Materials" and "Data Format: buildpack.toml"
/// (`sbom-formats`): a buildpack declares the SBOM media types it writes. As the
/// reference lifecycle, kpackd fails the build on an SBOM file of an undeclared type,
/// naming the buildpack and the file.
#[tokio::test]
async fn an_sbom_of_an_undeclared_media_type_fails_the_build() {
    let mut f = fixture(&[]);
    let writes_two_sboms = "#!/bin/sh\n\
        echo '{}' > \"$CNB_LAYERS_DIR/launch.sbom.cdx.json\"\n\
        echo '{}' > \"$CNB_LAYERS_DIR/launch.sbom.spdx.json\"\n";
    let programs = [
        ("detect", "#!/bin/sh\nexit 0\n"),
        ("build", writes_two_sboms),
    ];
    for (id, formats) in [
        ("test/sbom", r#""application/vnd.cyclonedx+json""#),
        (
            "test/sbom-declared",
            r#""application/vnd.cyclonedx+json", "application/spdx+json; version=2.3""#,
        ),
    ] {
        let descriptor = format!(
            "api = \"0.10\"\n[buildpack]\nid = \"{id}\"\nversion = \"1.0.0\"\n\
             sbom-formats = [{formats}]\n"
        );
        add_buildpack(&mut f, id, &descriptor, &programs);
    }

    let outcome = detected(&f, &["test/sbom"]).await;
    let err = build(&f.ctx, &outcome, &Logs::default())
        .await
        .expect_err("application/spdx+json is not declared");
    assert!(matches!(err, BuildError::Sbom(_)), "{err}");
    let message = err.to_string();
    for expected in [
        "undeclared SBOM media type `application/spdx+json`",
        "test/sbom@1.0.0",
        "/layers/test_sbom/launch.sbom.spdx.json",
    ] {
        assert!(
            message.contains(expected),
            "{expected:?} missing from {message}"
        );
    }

    // Declared, both are kept where export takes the launch SBOM from.
    let outcome = detected(&f, &["test/sbom-declared"]).await;
    build(&f.ctx, &outcome, &Logs::default())
        .await
        .expect("both media types are declared");
    let sbom = f.ctx.layers_dir.join("sbom/launch/test_sbom-declared");
    assert!(sbom.join("sbom.cdx.json").is_file());
    assert!(sbom.join("sbom.spdx.json").is_file());
}

/// With network, a buildpack reaches an address of the machine but not an HTTP server on
/// the host's loopback (where the registry and kpackd's own endpoints listen).
#[tokio::test]
async fn a_build_with_network_cannot_reach_host_loopback() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    testkit::require("slirp4netns", "slirp4netns");
    let http = |ip: &str| {
        let listener = std::net::TcpListener::bind((ip, 0)).expect("listen");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = stream.read(&mut [0u8; 1024]);
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nserved\n");
            }
        });
        (port, requests)
    };
    let (loopback_port, loopback_requests) = http("127.0.0.1");
    let machine = machine_address();
    let (machine_port, machine_requests) = http(&machine);

    let mut f = fixture(&[]);
    f.ctx.network = true;
    let get = |host: &str, port: u16| {
        format!(
            "(exec 3<>/dev/tcp/{host}/{port} && printf 'GET /v2/ HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3) 2>/dev/null"
        )
    };
    let build_script = format!(
        "#!/bin/bash\n\
         if {}; then echo 'reached host loopback'; exit 1; fi\n\
         echo 'host loopback unreachable'\n\
         {} | tail -n 1\n",
        get("127.0.0.1", loopback_port),
        get(&machine, machine_port),
    );
    let programs = [
        ("detect", "#!/bin/sh\nexit 0\n"),
        ("build", build_script.as_str()),
    ];
    let descriptor = "api = \"0.10\"\n[buildpack]\nid = \"test/net\"\nversion = \"1.0.0\"\n";
    add_buildpack(&mut f, "net", descriptor, &programs);
    let outcome = detected(&f, &["test/net"]).await;
    let logs = Logs::default();
    build(&f.ctx, &outcome, &logs).await.expect("build");
    assert!(logs.has(Phase::Build, "test/net", "host loopback unreachable"));
    assert!(
        logs.has(Phase::Build, "test/net", "served"),
        "the machine is reachable"
    );
    assert_eq!(loopback_requests.load(Ordering::SeqCst), 0);
    assert_eq!(machine_requests.load(Ordering::SeqCst), 1);
}

/// A global IPv4 address of this machine (not loopback), from `ip -4 addr`.
fn machine_address() -> String {
    testkit::require("ip", "iproute2");
    let output = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace().skip_while(|f| *f != "inet");
            Some(fields.nth(1)?.split('/').next()?.to_owned())
        })
        .unwrap_or_else(|| panic!("no global IPv4 address on this machine: {text}"))
}
