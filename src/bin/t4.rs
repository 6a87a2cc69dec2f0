//! The `t4` binary. See `t4 --help`.

fn main() {
    std::process::exit(t4::cli::main());
}
