//! The `identity-engine` binary: parse options, then serve or run a subcommand.

use std::process::ExitCode;

use clap::Parser;
use identity_engine::app::{shutdown_signal, App};
use identity_engine::config::{Cli, Command, Config, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(config)) => serve(config),
        Some(Command::Check { data_dir, repair }) => {
            init_logging(LogFormat::Text);
            let outcome = if repair {
                identity_engine::check::repair(&data_dir, &mut |loss| eprintln!("{loss}"))
            } else {
                identity_engine::check::check(&data_dir)
            };
            outcome
                .map(|report| print!("{report}"))
                .map_err(|e| e.to_string())
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

fn serve(config: Config) -> Result<(), String> {
    init_logging(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let app = App::build(config).await.map_err(|e| e.to_string())?;
        app.run(shutdown_signal()).await.map_err(|e| e.to_string())
    })
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
