//! The `identity-engine` binary: parse options, then serve or run a subcommand.

use std::process::ExitCode;

use clap::Parser;
use identity_engine::app::{shutdown_signal, App};
use identity_engine::config::{Cli, Command, Config, LogFormat};
use identity_engine::engine::Limits;
use identity_engine::storage::StorageOptions;
use identity_engine::telemetry::logging;
use identity_engine::tools::orders::{self, ImportFormat};
use identity_engine::tools::{backup, changes, check, erase, export, import, rekey};

fn main() -> ExitCode {
    identity_engine::storage::keep_new_files_private();
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(config)) => serve(config),
        Some(command) => {
            let _logs = logging::init(LogFormat::Text);
            run_tool(command)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_tool(command: Command) -> Result<(), String> {
    let report = match command {
        Command::Check {
            file: Some(file), ..
        } => backup::check(&file).map_err(|e| e.to_string()),
        Command::Check {
            data_dir,
            repair: false,
            ..
        } => check::check(&data_dir).map_err(|e| e.to_string()),
        Command::Check {
            data_dir,
            repair: true,
            yes,
            ..
        } => check::repair(&data_dir, &mut |loss| check::confirm(loss, yes))
            .map_err(|e| e.to_string()),
        Command::Restore {
            data_dir,
            file,
            erasures: None,
        } => backup::restore_dir(&file, &data_dir).map_err(|e| e.to_string()),
        Command::Restore {
            data_dir,
            file,
            erasures: Some(ledger),
        } => erase::restore_with_ledger(&file, &data_dir, &ledger),
        Command::Erase {
            data_dir,
            contact_id,
            email,
            phone,
        } => {
            let named = match (contact_id, email, phone) {
                (Some(id), _, _) => erase::Named::Contact(id),
                (_, Some(email), _) => erase::Named::Email(email),
                (_, _, Some(phone)) => erase::Named::Phone(phone),
                _ => unreachable!("clap requires one"),
            };
            erase::erase(StorageOptions::new(data_dir), &named)
        }
        Command::Export {
            data_dir,
            format,
            output,
        } => export::export_dir(&data_dir, format, output.as_deref()).map_err(|e| e.to_string()),
        Command::Import {
            data_dir,
            file,
            format,
            skip_invalid,
            generic_threshold,
            max_cluster_size,
            blocklist,
        } => {
            let limits = identity_engine::engine::Limits {
                generic_threshold,
                max_cluster_size,
            };
            // Blocklist values get the keys of the modes the directory was built with.
            let modes = identity_engine::matching::record::recorded(&data_dir)
                .map_err(|e| e.to_string())?;
            let canon = identity_engine::matching::canon::Canon::new(modes);
            let blocklist = match &blocklist {
                Some(path) => identity_engine::tools::blocklist::read(path, &canon)?,
                None => Vec::new(),
            };
            let guards = import::ImportGuards { limits, blocklist };
            let storage = StorageOptions::new(data_dir);
            match format {
                Some(ImportFormat::Orders) => {
                    orders::import_orders(storage, &file, None, skip_invalid, &guards)
                        .map(|r| r.to_string())
                        .map_err(|e| e.to_string())
                }
                format => import::import_guarded(
                    storage,
                    &file,
                    format.and_then(ImportFormat::syntax),
                    skip_invalid,
                    &guards,
                )
                .map(|r| r.to_string())
                .map_err(|e| e.to_string()),
            }
        }
        Command::Rekey {
            data_dir,
            matching,
            generic_threshold,
            max_cluster_size,
        } => {
            let modes = matching.modes()?;
            let limits = Limits {
                generic_threshold,
                max_cluster_size,
            };
            rekey::rekey(StorageOptions::new(data_dir), limits, modes)
                .map(|r| r.to_string())
                .map_err(|e| e.to_string())
        }
        Command::Changes {
            url,
            token,
            after,
            follow,
            ca,
        } => changes::follow(&url, token.as_deref(), after, follow, ca.as_deref()),
        Command::Serve(_) => unreachable!("serve is not a tool"),
    }?;
    print!("{report}");
    Ok(())
}

fn serve(config: Config) -> Result<(), String> {
    if config.addr == identity_engine::config::addr::DEFAULT_ADDR {
        if let Some(problem) = identity_engine::config::addr::port_problem() {
            return Err(problem);
        }
    }
    let _logs = logging::init(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let served = runtime.block_on(async {
        let app = App::build(config).await.map_err(|e| e.to_string())?;
        app.run(shutdown_signal()).await.map_err(|e| e.to_string())
    });
    // run() has awaited all that must finish (the drain, the log's sync and snapshot, Raft's
    // stop). A blocking task still running is a cluster peer's name lookup, which getaddrinfo
    // cannot cancel: dropping the runtime would wait for it, up to the resolver's timeouts
    // (seen: 10 s, a container stop's whole grace period, when a peer's name stops resolving).
    runtime.shutdown_background();
    served
}
