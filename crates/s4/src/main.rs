//! The `s4` binary. See `s4 --help`.

fn main() {
    std::process::exit(s4::server::main());
}
