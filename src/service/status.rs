//! The one place where library errors become gRPC statuses.

use tonic::Status;

use crate::audio::AudioError;

impl From<AudioError> for Status {
    fn from(error: AudioError) -> Self {
        match error {
            AudioError::TooLong { .. } => Status::out_of_range(error.to_string()),
            AudioError::Resample(_) => Status::internal(error.to_string()),
            _ => Status::invalid_argument(error.to_string()),
        }
    }
}

/// The answer of an RPC whose implementation has not landed yet.
pub fn not_yet(what: &str, issue: u32) -> Status {
    Status::unimplemented(format!(
        "{what} is not implemented yet (tracked in issue #{issue})"
    ))
}
