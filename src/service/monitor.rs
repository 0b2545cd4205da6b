//! `voicesearch.v1.Monitor`: the drift table.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::monitor::Monitor;
use crate::proto::monitor_server;
use crate::proto::{self, GetDriftReportRequest};

/// Serves the drift report.
pub struct MonitorService {
    monitor: Arc<Monitor>,
}

impl MonitorService {
    pub fn new(monitor: Arc<Monitor>) -> Self {
        Self { monitor }
    }
}

#[tonic::async_trait]
impl monitor_server::Monitor for MonitorService {
    async fn get_drift_report(
        &self,
        _request: Request<GetDriftReportRequest>,
    ) -> Result<Response<proto::DriftReport>, Status> {
        Ok(Response::new(proto::DriftReport::from(
            self.monitor.drift.report(),
        )))
    }
}
