//! The one place where library errors become gRPC statuses.

use tonic::{Code, Status};

use crate::asr::AsrError;
use crate::audio::AudioError;
use crate::pipeline::PipelineError;
use crate::search::SearchError;
use crate::voice::{SessionError, StreamError, StreamsFull, UtteranceError};
use crate::workers::{JobFailed, PoolFull};

impl From<AudioError> for Status {
    fn from(error: AudioError) -> Self {
        match error {
            AudioError::TooLong { .. }
            | AudioError::TooManyBytes { .. }
            | AudioError::TooManySamples { .. } => Status::out_of_range(error.to_string()),
            AudioError::Resample(_) => Status::internal(error.to_string()),
            AudioError::Empty
            | AudioError::SampleRateOutOfRange(_)
            | AudioError::ChannelsOutOfRange(_)
            | AudioError::MissingSampleRate(_)
            | AudioError::PartialFrame { .. }
            | AudioError::NonFinite { .. }
            | AudioError::CorruptWav(_)
            | AudioError::UnsupportedWav(_)
            | AudioError::CorruptFlac(_)
            | AudioError::CorruptWebm(_)
            | AudioError::UnsupportedWebm(_)
            | AudioError::CorruptOgg(_)
            | AudioError::UnsupportedOgg(_)
            | AudioError::TruncatedWav { .. }
            | AudioError::HeaderMismatch { .. } => Status::invalid_argument(error.to_string()),
        }
    }
}

impl From<SearchError> for Status {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::InvalidDocument(_) | SearchError::InvalidQuery(_) => {
                Status::invalid_argument(error.to_string())
            }
            SearchError::IncompatibleVersion { .. }
            | SearchError::CarrierPhrases { .. }
            | SearchError::Locked(_)
            | SearchError::ReadOnly(_)
            | SearchError::Follower => Status::failed_precondition(error.to_string()),
            // Retryable: another replica, or this one after its next poll, has it.
            SearchError::CatalogBehind { .. } => Status::unavailable(error.to_string()),
            SearchError::DiskFull(_) => Status::resource_exhausted(error.to_string()),
            SearchError::Io { .. } | SearchError::Index(_) => Status::internal(error.to_string()),
        }
    }
}

impl From<AsrError> for Status {
    fn from(error: AsrError) -> Self {
        match error {
            AsrError::Language(..) | AsrError::HintsTooLong { .. } => {
                Status::invalid_argument(error.to_string())
            }
            AsrError::Cancelled => Status::cancelled(error.to_string()),
            AsrError::Io { .. }
            | AsrError::Folder(..)
            | AsrError::Weights(_)
            | AsrError::MissingTensor(_)
            | AsrError::BadShape { .. }
            | AsrError::Import(_)
            | AsrError::NoTemperatures
            | AsrError::Inference(_)
            | AsrError::Tokenizer(_)
            | AsrError::Unsupported(_) => Status::internal(error.to_string()),
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

impl From<SessionError> for Status {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Audio { index, source } => of_utterance(index, source.into()),
            SessionError::EmptyUtterance { .. } => Status::invalid_argument(error.to_string()),
            SessionError::StreamTooLong { .. } => Status::out_of_range(error.to_string()),
        }
    }
}

/// A status about one utterance of a stream names it.
fn of_utterance(index: u32, status: Status) -> Status {
    Status::new(
        status.code(),
        format!("utterance {index}: {}", status.message()),
    )
}

impl From<UtteranceError> for Status {
    fn from(error: UtteranceError) -> Self {
        match error {
            UtteranceError::Audio(e) => e.into(),
            UtteranceError::Pipeline(e) => e.into(),
            UtteranceError::PoolFull(e) => e.into(),
            UtteranceError::Failed(e) => e.into(),
        }
    }
}

impl From<StreamError<Status>> for Status {
    fn from(error: StreamError<Status>) -> Self {
        match error {
            StreamError::Transport(status) => status,
            StreamError::Session(e) => e.into(),
            StreamError::Utterance { index, source } => of_utterance(index, source.into()),
            StreamError::BeforeConfig { .. } | StreamError::SecondConfig => {
                Status::invalid_argument(error.to_string())
            }
            StreamError::NoConfig { .. } | StreamError::Idle { .. } => {
                Status::deadline_exceeded(error.to_string())
            }
            StreamError::OpenTooLong { .. } => Status::out_of_range(error.to_string()),
        }
    }
}

impl From<StreamsFull> for Status {
    fn from(error: StreamsFull) -> Self {
        Status::resource_exhausted(error.to_string())
    }
}

impl From<PoolFull> for Status {
    fn from(error: PoolFull) -> Self {
        Status::resource_exhausted(error.to_string())
    }
}

impl From<JobFailed> for Status {
    fn from(error: JobFailed) -> Self {
        Status::internal(error.to_string())
    }
}

/// Runs blocking library work (search, index writes) off the async runtime.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        // A panic's text is for the log, not for clients.
        tracing::error!(%error, "a blocking task failed");
        Status::internal("the server failed on this request; the failure is logged")
    })?
}

/// The canonical name of a status code, as gRPC documents it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
