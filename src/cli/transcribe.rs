//! `voice-search transcribe`: WAV files to transcripts.

use std::path::PathBuf;
use std::sync::Arc;

use super::{load_model, progress_bar, DecodingArgs, DEFAULT_MODEL};
use anyhow::Context;
use clap::Args;
use voice_search::audio::{AudioFormat, Encoding};
use voice_search::pipeline::Pipeline;

#[derive(Args)]
pub(crate) struct TranscribeArgs {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[arg(long, env = "VOICE_SEARCH_MODEL", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    #[command(flatten)]
    decoding: DecodingArgs,
}

pub(crate) fn transcribe(args: TranscribeArgs) -> anyhow::Result<()> {
    let whisper = load_model(&args.model, &args.decoding)?;
    // The pipeline without a catalog: the front end, Whisper, and times counted from each
    // file's first sample, as the server reports them.
    let pipeline = Pipeline::new(Some(Arc::new(whisper)), None);
    let options = args.decoding.options();
    let bar = progress_bar(args.files.len() as u64, "files");
    if args.files.len() == 1 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let format = AudioFormat {
        encoding: Encoding::Wav,
        sample_rate: None,
        channels: None,
    };
    for file in &args.files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let transcript = pipeline
            .run_bytes(&bytes, &format, &options, None)
            .with_context(|| file.display().to_string())?
            .transcript;
        bar.suspend(|| {
            println!("{}\t{}", file.display(), transcript.text);
            if args.decoding.timestamps {
                for segment in &transcript.segments {
                    println!(
                        "  [{:6.2} -> {:6.2}] {}",
                        segment.start_seconds, segment.end_seconds, segment.text
                    );
                }
            }
            if args.decoding.word_times {
                for word in &transcript.words {
                    println!(
                        "  {:6.2} {:6.2}  {:.2}  {}",
                        word.start_seconds, word.end_seconds, word.confidence, word.word
                    );
                }
            }
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}
