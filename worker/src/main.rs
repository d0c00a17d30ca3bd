//! `cairn-worker`: the stock worker binary with the built-in tasks.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    cairn_worker::cli::main_with(cairn_worker::task::TaskRegistry::with_builtins())
}
