//! Devices implemented in Rust, answered on the vCPU thread without leaving it.

pub mod debug_console;
pub mod debug_exit;
pub mod null;
pub mod serial;

pub use debug_console::DebugConsole;
pub use debug_exit::DebugExit;
pub use null::NullDevice;
pub use serial::SerialDevice;
