//! The methods of our protos' services, read once from the compiled-in descriptor set:
//! what the metrics layer names and what the request layer bounds.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use crate::proto::FILE_DESCRIPTOR_SET;

/// One method of the protos.
#[derive(Debug, Clone)]
pub(super) struct Method {
    /// Its name, as the metrics label it.
    pub name: Arc<str>,
    /// Whether its request is a stream of messages rather than one.
    pub streams_requests: bool,
}

/// `/package.Service/Method` -> its [`Method`] for every service the protos declare.
pub(super) fn of_protos() -> HashMap<String, Method> {
    let files = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("the compiled-in descriptor set is valid");
    files
        .file
        .iter()
        .flat_map(|file| {
            let package = file.package().to_string();
            file.service.iter().flat_map(move |service| {
                let prefix = format!("/{package}.{}/", service.name());
                service.method.iter().map(move |method| {
                    let found = Method {
                        name: Arc::from(method.name()),
                        streams_requests: method.client_streaming(),
                    };
                    (format!("{prefix}{}", method.name()), found)
                })
            })
        })
        .collect()
}
