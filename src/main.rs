//! The `convscope` command: parses arguments, calls the library, reports errors in one line.

mod cli;

use std::process::ExitCode;

#[allow(unsafe_code)]
fn main() -> ExitCode {
    // SAFETY: first thing in main, before any thread is started.
    unsafe { convscope::runtime::configure() };
    let args = cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if cli::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` puts the whole chain of causes on one line.
            // Names in messages come from files: no control character reaches the terminal.
            eprintln!("convscope: error: {}", convscope::model::printable(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
