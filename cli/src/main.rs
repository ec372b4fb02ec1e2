//! `cairn`: the command-line front end. It parses arguments, reads secrets,
//! shows progress and maps errors to exit codes; all work is in
//! `cairn-engine`.

mod cmd;
mod common;
mod exit;

use clap::Parser;

fn main() {
    let cli = cmd::Cli::parse();
    common::init_tracing(cli.global.verbose, cli.global.quiet);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn-io")
        .build()
        .expect("tokio runtime");
    let json = cli.global.json;
    let result = rt.block_on(cmd::run(cli));
    let code = match result {
        Ok(code) => code,
        Err(e) => exit::report(&e, json),
    };
    // Dropping the runtime could wait on blocking reads of stdin; exit now.
    std::process::exit(code);
}
