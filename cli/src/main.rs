//! `cairn`: the command-line front end. It parses arguments, reads secrets,
//! shows progress and maps errors to exit codes; all work is in
//! `cairn-engine`.

mod cmd;
mod common;
mod config;
mod exit;
mod fallback;
mod metrics;

use clap::Parser;

/// True when invoked as `cairn … wal fetch …`, PostgreSQL's restore_command:
/// there every failure other than "not archived" must exit ≥ 126, including
/// usage errors and panics, or PostgreSQL would end recovery early.
fn is_wal_fetch() -> bool {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.iter().position(|a| a == "wal").is_some_and(|i| args[i + 1..].iter().any(|a| a == "fetch"))
}

fn main() {
    let fetch = is_wal_fetch();
    if fetch {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            std::process::exit(cmd::wal::FETCH_FAILED);
        }));
    }
    let cli = match cmd::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if fetch && e.use_stderr() => {
            let _ = e.print();
            std::process::exit(cmd::wal::FETCH_FAILED);
        }
        Err(e) => e.exit(),
    };
    common::init_tracing(cli.global.verbose, cli.global.quiet);
    if cairn_engine::raise_open_files_limit().is_some_and(|n| n < 1024) {
        tracing::warn!("the limit on open files is below 1,024 (ulimit -n): a large restore may fail with EMFILE");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn-io")
        .build()
        .expect("tokio runtime");
    let json = cli.global.json;
    let result = rt.block_on(cmd::run(cli));
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            let code = exit::report(&e, json);
            if fetch {
                cmd::wal::FETCH_FAILED
            } else {
                code
            }
        }
    };
    // Dropping the runtime could wait on blocking reads of stdin; exit now.
    std::process::exit(code);
}
