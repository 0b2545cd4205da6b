//! `voice-search transcribe`: WAV files to transcripts.

use std::path::PathBuf;

use super::{load_model, progress_bar, DecodingArgs, DEFAULT_MODEL};
use anyhow::Context;
use clap::Args;
use voice_search::audio::{self, AudioFormat, Encoding};

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
        let prepared =
            audio::prepare(&bytes, &format).with_context(|| file.display().to_string())?;
        let transcript = if prepared.info.voice.speech {
            whisper.transcribe(&prepared.samples, &options)?
        } else {
            voice_search::asr::Transcript::silent()
        };
        bar.suspend(|| {
            println!("{}\t{}", file.display(), transcript.text);
            if args.decoding.timestamps {
                let shift = prepared.info.voice.start_seconds as f32;
                for segment in &transcript.segments {
                    println!(
                        "  [{:6.2} -> {:6.2}] {}",
                        segment.start_seconds + shift,
                        segment.end_seconds + shift,
                        segment.text
                    );
                }
            }
            if args.decoding.word_times {
                let shift = prepared.info.voice.start_seconds as f32;
                for word in &transcript.words {
                    println!(
                        "  {:6.2} {:6.2}  {:.2}  {}",
                        word.start_seconds + shift,
                        word.end_seconds + shift,
                        word.confidence,
                        word.word
                    );
                }
            }
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}
