//! `deploy/image/build.sh` builds an image that serves from a container as the manifests
//! run it (read-only root, the index on a volume, a published loopback port): health
//! says SERVING, the image's own health check passes, and Search finds a demo document.
//! Needs root and Debian's podman, runc and mmdebstrap, installed here when missing; where
//! they cannot be had the test says why and passes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use voice_search::proto::search_client::SearchClient;
use voice_search::proto::SearchRequest;

use crate::fleet::harness::{channel, free_port, wait_for};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const IMAGE: &str = "localhost/voice-search:test";

fn has(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether podman, runc and mmdebstrap are here, installing them from Debian's packages
/// when they are not; the reason when they cannot be had.
fn container_tools() -> Result<(), String> {
    let missing = || {
        !["podman", "runc", "mmdebstrap"]
            .iter()
            .all(|tool| has(tool))
    };
    if !missing() {
        return Ok(());
    }
    let install = |update: bool| {
        let mut command = Command::new("sh");
        let line = "apt-get install -y -qq podman runc mmdebstrap";
        command.args([
            "-c",
            &if update {
                format!("apt-get update -qq && {line}")
            } else {
                line.into()
            },
        ]);
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if !(install(false) || install(true)) || missing() {
        return Err("podman, runc and mmdebstrap could not be installed (apt-get as root)".into());
    }
    Ok(())
}

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("running podman")
}

/// The container, removed (with its volume) however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        podman(&["rm", "--force", &self.0]);
        podman(&["volume", "rm", "--force", &format!("{}-index", self.0)]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_answers_health_and_search_from_a_container() {
    if let Err(reason) = container_tools() {
        println!("skipped: {reason}");
        return;
    }
    let built = Command::new(Path::new(ROOT).join("deploy/image/build.sh"))
        .arg(IMAGE)
        .env("VOICE_SEARCH_BINARY", env!("CARGO_BIN_EXE_voice-search"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&built.stdout);
    assert!(
        built.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&built.stderr)
    );
    println!("{}", said.trim());

    let name = format!("voice-search-test-{}", std::process::id());
    let port = free_port();
    let container = Container(name.clone());
    let hard_files = String::from_utf8(
        Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let nofile = format!("nofile={0}:{0}", hard_files.trim());
    let started = podman(&[
        "--runtime",
        "runc",
        "run",
        "--detach",
        "--name",
        &name,
        "--read-only",
        "--volume",
        &format!("{name}-index:/var/lib/voice-search"),
        "--ulimit",
        &nofile,
        "--ulimit",
        "nproc=4096:4096",
        "--publish",
        &format!("127.0.0.1:{port}:50051"),
        IMAGE,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );

    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for(
        "the container to serve",
        Duration::from_secs(120),
        || async {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .ok()?;
            let status = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .ok()?
                .into_inner()
                .status();
            (status == tonic_health::pb::health_check_response::ServingStatus::Serving)
                .then_some(())
        },
    )
    .await;
    let checked = podman(&["healthcheck", "run", &name]);
    assert!(
        checked.status.success(),
        "the image's health check: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    let hits = SearchClient::new(channel(addr).await)
        .search(SearchRequest {
            query: "directions to tokyo".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits.first().map(|h| h.title.as_str()), Some("Tokyo"));

    drop(container);
    podman(&["rmi", "--force", IMAGE]);
}
