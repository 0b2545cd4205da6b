//! What ships: the container image, built and run here ([`image`]), and the Kubernetes
//! manifests, validated offline ([`manifests`]).

mod image;
mod manifests;
