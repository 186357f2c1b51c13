//! virtio-vsock: stream sockets between the guest and the host without a network.
//!
//! The guest reaches the host at CID 2. On the host, each connection is a Unix stream socket:
//! one end of a socket pair for the Node API ([`VsockHost::listen`], [`VsockHost::connect`]),
//! or Firecracker's Unix sockets when the device is given a path ([`uds`]). The device
//! ([`device`]) parses packets ([`packet`], laid over descriptors in any way the spec
//! allows), the muxer ([`muxer`]) routes them to connections ([`connection`]: the state
//! machine and credit flow control), and everything runs on the machine's I/O thread.
//!
//! A host connection the guest leaves unanswered is given up after a timeout: the host
//! hears `TimedOut`, the guest gets a reset for the request.
//!
//! A guest gets a reset (`RST`) for a packet it should not have sent: an unknown operation
//! or connection, a wrong socket type, data past the credit it was given or after it shut
//! its side down. A chain that is not a packet at all is returned unread.

pub mod connection;
pub mod device;
pub mod host;
pub mod muxer;
pub mod packet;
pub mod uds;

#[cfg(test)]
mod tests;

pub use device::Vsock;
pub use host::{Accept, VsockHost};
