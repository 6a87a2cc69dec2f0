//! TraceHash: every event of a run folded into one number; equal seeds give equal hashes.
//! `T4_SIM_TRACE=1` prints each event as it is folded (to find where two runs part).

/// FNV-1a over the bytes of each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl TraceHash {
    pub fn fold(&mut self, event: &str) {
        if std::env::var_os("T4_SIM_TRACE").is_some() {
            eprintln!("trace: {event}");
        }
        for byte in event.as_bytes() {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}
