//! The `atod` binary: see `atod --help`.

fn main() -> std::process::ExitCode {
    atod_cli::commands::main()
}
