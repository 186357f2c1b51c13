//! The bounded output buffer the debug console and the UARTs write into and the host takes
//! from.

use std::collections::VecDeque;

/// Output captured from the guest, bounded so a chatty guest cannot exhaust host memory.
#[derive(Debug, Default)]
pub struct ConsoleOutput {
    bytes: VecDeque<u8>,
    dropped: u64,
}

impl ConsoleOutput {
    /// Most bytes kept before the oldest are dropped.
    pub const CAPACITY: usize = 1 << 20;

    /// Takes everything collected so far.
    pub fn take(&mut self) -> Vec<u8> {
        self.bytes.drain(..).collect()
    }

    /// How many bytes were dropped because nobody took them in time.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether nothing is waiting to be taken.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends `data`, dropping the oldest bytes past [`ConsoleOutput::CAPACITY`].
    pub fn push(&mut self, data: &[u8]) {
        for &b in data {
            if self.bytes.len() == Self::CAPACITY {
                self.bytes.pop_front();
                self.dropped += 1;
            }
            self.bytes.push_back(b);
        }
    }
}
