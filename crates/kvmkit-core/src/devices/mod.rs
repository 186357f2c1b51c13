//! Devices implemented in Rust, answered on the vCPU thread without leaving it.

pub mod acpi_sleep;
pub mod debug_console;
pub mod debug_exit;
pub mod i8042;
pub mod null;
pub mod rtc;
pub mod serial;

pub use acpi_sleep::AcpiSleep;
pub use debug_console::DebugConsole;
pub use debug_exit::DebugExit;
pub use i8042::I8042;
pub use null::NullDevice;
pub use rtc::Rtc;
pub use serial::SerialDevice;
