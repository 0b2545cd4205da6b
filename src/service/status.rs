//! The one place where library errors become gRPC statuses.

use tonic::Status;

use crate::asr::AsrError;
use crate::audio::AudioError;
use crate::pipeline::PipelineError;
use crate::search::SearchError;

impl From<AudioError> for Status {
    fn from(error: AudioError) -> Self {
        match error {
            AudioError::TooLong { .. } => Status::out_of_range(error.to_string()),
            AudioError::Resample(_) => Status::internal(error.to_string()),
            _ => Status::invalid_argument(error.to_string()),
        }
    }
}

impl From<SearchError> for Status {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::InvalidDocument(_) | SearchError::InvalidQuery(_) => {
                Status::invalid_argument(error.to_string())
            }
            SearchError::IncompatibleVersion { .. } | SearchError::Locked(_) => {
                Status::failed_precondition(error.to_string())
            }
            SearchError::Io { .. } | SearchError::Index(_) => Status::internal(error.to_string()),
        }
    }
}

impl From<AsrError> for Status {
    fn from(error: AsrError) -> Self {
        match error {
            AsrError::Language(..) => Status::invalid_argument(error.to_string()),
            AsrError::TooLong { .. } => Status::out_of_range(error.to_string()),
            _ => Status::internal(error.to_string()),
        }
    }
}

impl From<PipelineError> for Status {
    fn from(error: PipelineError) -> Self {
        match error {
            PipelineError::Audio(e) => e.into(),
            PipelineError::Asr(e) => e.into(),
            PipelineError::Search(e) => e.into(),
            PipelineError::NoModel | PipelineError::NoIndex => {
                Status::failed_precondition(error.to_string())
            }
        }
    }
}

/// The answer of an RPC whose implementation has not landed yet.
pub fn not_yet(what: &str, issue: u32) -> Status {
    Status::unimplemented(format!(
        "{what} is not implemented yet (tracked in issue #{issue})"
    ))
}

/// Runs blocking library work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
}
