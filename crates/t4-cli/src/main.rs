//! The `t4` binary. See `t4 --help`.

#[cfg(feature = "bench")]
mod bench;
mod cli;

fn main() {
    std::process::exit(cli::main());
}
