//! virtio-rng: an entropy device whose one queue the host fills from `getrandom(2)`.

use std::io::Write;

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

use crate::virtio::{Activation, OneQueue, VirtioDevice, drain_queue};

/// Its one queue's size.
pub const QUEUE_SIZE: u16 = 256;
/// The most a single request is given: Linux asks for 64 bytes or less at a time, and a
/// cap keeps a guest offering huge buffers from holding the I/O thread.
const MAX_REQUEST: usize = 4096;

/// The entropy device.
#[derive(Default)]
pub struct Rng {
    active: Option<OneQueue>,
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rng")
            .field("active", &self.active.is_some())
            .finish()
    }
}

/// Fills `buf` from the kernel's random pool.
fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn name(&self) -> &'static str {
        "virtio-rng"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), String> {
        self.active = Some(OneQueue::take(activation, "virtio-rng")?);
        Ok(())
    }

    fn process_queue(&mut self, _index: usize) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut random = [0u8; MAX_REQUEST];
        let result = drain_queue(&mut active.queue, &active.mem, &active.interrupt, |chain| {
            let mem = chain.memory();
            let Ok(mut writer) = chain.clone().writer(mem) else {
                return 0;
            };
            let want = writer.available_bytes().min(MAX_REQUEST);
            let mut written = 0;
            while written < want {
                let n = (want - written).min(random.len());
                if fill_random(&mut random[..n]).is_err() || writer.write_all(&random[..n]).is_err()
                {
                    break;
                }
                written += n;
            }
            written as u32
        });
        if let Err(e) = result {
            active.interrupt.fail(format!("virtio-rng queue: {e}"));
            self.active = None;
        }
    }

    fn reset(&mut self) {
        self.active = None;
    }
}
