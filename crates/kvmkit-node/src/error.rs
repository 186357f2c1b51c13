//! kvmkit-core errors as JS errors whose `code` is the core's stable error code.

use napi::Status;

/// The `code` property of a thrown JS error.
#[derive(Debug, Clone)]
pub struct Code(pub String);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Status> for Code {
    fn from(status: Status) -> Self {
        Code(status.as_ref().to_string())
    }
}

/// The error type of every exported function.
pub type JsError = napi::Error<Code>;

/// The result type of every exported function.
pub type Result<T> = std::result::Result<T, JsError>;

/// Converts a core error, keeping its code.
pub fn core(e: kvmkit_core::Error) -> JsError {
    napi::Error::new(Code(e.code().into()), e.to_string())
}

/// An argument the caller got wrong.
pub fn invalid_arg(field: &str, message: impl std::fmt::Display) -> JsError {
    core(kvmkit_core::Error::config(field, message.to_string()))
}

/// Converts a napi-level error (a failed JS value conversion, for example).
pub fn napi(e: napi::Error) -> JsError {
    napi::Error::new(Code(e.status.as_ref().into()), e.reason)
}
