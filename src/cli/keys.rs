//! `voice-search keys`: API keys for `serve --api-keys`.

use std::num::NonZeroU32;
use std::path::PathBuf;

use clap::Subcommand;
use voice_search::service::auth::keys::{add_key, KeyLimits, Role};

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Draw a new key, append its hash to the key file (created if missing) and print the
    /// key: it is shown this once and stored nowhere.
    Add {
        /// A name for the key's holder, shown in logs and PERMISSION_DENIED messages.
        name: String,
        /// The key file `serve --api-keys` reads.
        #[arg(long)]
        file: PathBuf,
        /// What the key may do (repeatable): search (voice and text search, reading
        /// documents), catalog (writing documents), monitor (the drift report).
        #[arg(long = "role", value_enum, required = true)]
        roles: Vec<Role>,
        /// Calls the key may make per minute, as many at once (default: no limit).
        #[arg(long)]
        calls_per_minute: Option<NonZeroU32>,
        /// Streams the key may hold open at once (default: no limit beyond the server's).
        #[arg(long)]
        max_streams: Option<NonZeroU32>,
    },
}

pub(crate) fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Add {
            name,
            file,
            roles,
            calls_per_minute,
            max_streams,
        } => {
            let limits = KeyLimits {
                calls_per_minute,
                max_streams,
            };
            let key = add_key(&file, &name, &roles, limits)?;
            let roles: Vec<&str> = roles.iter().map(|r| r.name()).collect();
            eprintln!(
                "added {name:?} (roles: {}) to {}; the server reads it at start. The key:",
                roles.join(", "),
                file.display()
            );
            println!("{key}");
            Ok(())
        }
    }
}
