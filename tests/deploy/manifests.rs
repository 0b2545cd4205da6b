//! The kustomize base and the prometheus-adapter rule validate strictly against
//! Kubernetes 1.33 (`deploy/k8s/validate.sh`), and the validation does catch a mistake.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn validate(folder: &Path) -> std::process::Output {
    Command::new(Path::new(ROOT).join("deploy/k8s/validate.sh"))
        .arg(folder)
        .output()
        .expect("running deploy/k8s/validate.sh")
}

#[test]
fn the_manifests_validate_strictly_and_a_misspelled_field_does_not() {
    let folder = Path::new(ROOT).join("deploy/k8s");
    let valid = validate(&folder);
    assert!(
        valid.status.success(),
        "{}{}",
        String::from_utf8_lossy(&valid.stdout),
        String::from_utf8_lossy(&valid.stderr)
    );

    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if path.file_name().unwrap() == "followers.yaml" {
            text = text.replace("terminationGracePeriodSeconds:", "terminationGracePeriod:");
        }
        std::fs::write(copy.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let invalid = validate(copy.path());
    assert!(!invalid.status.success());
    let said = String::from_utf8_lossy(&invalid.stdout);
    assert!(said.contains("terminationGracePeriod"), "{said}");
}
