#!/usr/bin/env bash
# Validates the Kubernetes manifests offline, strictly (unknown fields are errors),
# against Kubernetes 1.33: the kustomize base as `kubectl kustomize` renders it (the files
# one by one where kubectl is missing), and prometheus-adapter.yaml.
#
#   deploy/k8s/validate.sh [FOLDER]      (default: deploy/k8s)
#
# kubernetes-validate (PyPI) is installed into target/deploy-venv on first use.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
folder=${1:-$root/deploy/k8s}
venv=$root/target/deploy-venv
mkdir -p "$root/target"
(
    flock 9
    if ! [ -x "$venv/bin/kubernetes-validate" ]; then
        [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
    fi
) 9>"$root/target/deploy-venv.lock"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if command -v kubectl >/dev/null; then
    kubectl kustomize "$folder" >"$work/rendered.yaml"
    manifests=("$work/rendered.yaml")
else
    echo "kubectl is missing: validating the files one by one, unrendered"
    manifests=()
    for file in "$folder"/*.yaml; do
        case "$(basename "$file")" in
            kustomization.yaml | envoy-config.yaml | prometheus-adapter.yaml) ;;
            *) manifests+=("$file") ;;
        esac
    done
fi
"$venv/bin/kubernetes-validate" --strict --quiet -k 1.33.0 "${manifests[@]}" "$folder/prometheus-adapter.yaml"
echo "the manifests in $folder are valid for Kubernetes 1.33"
