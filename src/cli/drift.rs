//! `voice-search drift` and `voice-search capture`: baselines, the drift table, labelling.

use std::path::{Path, PathBuf};

use super::ConnectArgs;
use anyhow::{bail, Context};
use clap::Subcommand;
use voice_search::monitor::capture::CapturedUtterance;
use voice_search::monitor::{Baseline, UtteranceFeatures};
use voice_search::proto::monitor_client::MonitorClient;
use voice_search::proto::GetDriftReportRequest;

#[derive(Subcommand)]
pub(crate) enum DriftCommand {
    /// Build a reference profile from an in-process eval report (`eval --report`) or
    /// from a capture folder (live traffic), for `serve --drift-baseline`.
    Baseline {
        /// An eval report written by `voice-search eval --report` (without --server).
        #[arg(long, conflicts_with = "capture", required_unless_present = "capture")]
        report: Option<PathBuf>,
        /// With --report: keep only clips of this condition (repeatable).
        #[arg(long)]
        condition: Vec<String>,
        /// A capture folder (`serve --capture-dir`).
        #[arg(long)]
        capture: Option<PathBuf>,
        /// Where to write the baseline.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the drift table of a running server.
    Report {
        #[arg(long, default_value = "127.0.0.1:50051")]
        server: String,
        #[command(flatten)]
        connection: ConnectArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum CaptureCommand {
    /// Write DIR/to-label.jsonl: every capture as an eval manifest line, the transcript
    /// and first hit pre-filled; corrected and saved as DIR/manifest.jsonl, it feeds
    /// `voice-search eval --manifest DIR/manifest.jsonl`.
    Manifest { dir: PathBuf },
}

pub(crate) fn drift_baseline(
    report: Option<PathBuf>,
    conditions: &[String],
    capture: Option<PathBuf>,
    out: &Path,
) -> anyhow::Result<()> {
    let (features, source) = match (report, capture) {
        (Some(report), _) => {
            let text = std::fs::read_to_string(&report)
                .with_context(|| format!("reading {}", report.display()))?;
            let parsed: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an eval report", report.display()))?;
            let features: Vec<UtteranceFeatures> = parsed["clips"]
                .as_array()
                .context("the report has no clips")?
                .iter()
                .filter(|clip| {
                    conditions.is_empty()
                        || conditions
                            .iter()
                            .any(|c| clip["condition"].as_str() == Some(c))
                })
                .filter_map(|clip| serde_json::from_value(clip["features"].clone()).ok())
                .collect();
            let source = if conditions.is_empty() {
                report.display().to_string()
            } else {
                format!("{} ({})", report.display(), conditions.join(", "))
            };
            (features, source)
        }
        (None, Some(dir)) => {
            let mut features = Vec::new();
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "json") {
                    let text = std::fs::read_to_string(&path)?;
                    if let Ok(record) = serde_json::from_str::<CapturedUtterance>(&text) {
                        features.push(record.features);
                    }
                }
            }
            (features, dir.display().to_string())
        }
        (None, None) => bail!("give --report or --capture"),
    };
    if features.is_empty() {
        bail!("no utterance features found: an eval report needs clips run in process (not --server, not --text-queries)");
    }
    let baseline = Baseline::from_features(&features, &source)?;
    baseline.save(out)?;
    println!(
        "baseline of {} utterances from {source} written to {}",
        baseline.utterances,
        out.display()
    );
    Ok(())
}

pub(crate) fn drift_report(server: &str, connection: &ConnectArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let channel = connection.connect(server).await?;
        anyhow::Ok(
            MonitorClient::new(channel)
                .get_drift_report(GetDriftReportRequest {})
                .await?
                .into_inner(),
        )
    })?;
    print!(
        "{}",
        voice_search::monitor::drift::DriftReport::from(report).table()
    );
    Ok(())
}

pub(crate) fn drift(command: DriftCommand) -> anyhow::Result<()> {
    match command {
        DriftCommand::Baseline {
            report,
            condition,
            capture,
            out,
        } => drift_baseline(report, &condition, capture, &out),
        DriftCommand::Report { server, connection } => drift_report(&server, &connection),
    }
}

pub(crate) fn capture(command: CaptureCommand) -> anyhow::Result<()> {
    match command {
        CaptureCommand::Manifest { dir } => {
            let lines = voice_search::monitor::capture::labelling_manifest(&dir)?;
            let path = dir.join("to-label.jsonl");
            std::fs::write(&path, &lines).with_context(|| format!("writing {}", path.display()))?;
            println!(
                "{} captures listed in {}",
                lines.lines().count(),
                path.display()
            );
            Ok(())
        }
    }
}
