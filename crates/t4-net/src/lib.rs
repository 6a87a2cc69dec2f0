//! What t4's two servers share on the network side: accepting connections under a cap
//! ([`listen`]), TLS from PEM files ([`tls`]) and latency histograms ([`Histogram`]).

mod histogram;
pub mod listen;
pub mod tls;

pub use histogram::Histogram;
