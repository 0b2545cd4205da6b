//! `voice-search keys`: API keys for `serve --api-keys`.

use std::num::NonZeroU32;
use std::path::PathBuf;

use clap::Subcommand;
use voice_search::keys::{add_key, Role};

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Draw a new key, append its hash to the key file (created if missing) and print the
    /// key: it is shown this once and stored nowhere.
    Add {
        /// The key file `serve --api-keys` reads.
        #[arg(long)]
        file: PathBuf,
        /// A name for the key's holder, shown in logs and PERMISSION_DENIED messages.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// Calls the key may make per minute, as many at once (default: no limit).
        #[arg(long)]
        calls_per_minute: Option<NonZeroU32>,
    },
}

pub(crate) fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Add {
            file,
            name,
            role,
            calls_per_minute,
        } => {
            let key = add_key(&file, &name, role, calls_per_minute)?;
            eprintln!(
                "added {name:?} ({} role) to {}; the server reads it at start. The key:",
                role.name(),
                file.display()
            );
            println!("{key}");
            Ok(())
        }
    }
}
