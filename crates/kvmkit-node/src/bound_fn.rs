//! JS functions of no arguments, each bound to one Rust value and called through plain
//! Node-API: for crossings made once per guest exit.
//!
//! A `#[napi]` function, even one without arguments, opens and closes napi-rs's borrow
//! barrier on every call (two thread-local stacks, reached through `__tls_get_addr` in a
//! shared library), and a function with state finds it in a thread-local. Single-stepped
//! (ptrace), an inline port-I/O exit's host side ran 1,838 instructions on 24 code pages
//! with `#[napi]` calls, 4 of those pages the barrier's; 1,551 on 20 with a bound function.
//! On a host that is noise; where every code page costs a TLB refill after each exit (the
//! nested test machine, an emulator: ~250 ns a page measured there) it is ~1.5 µs of a
//! ~14 µs crossing. A bound function finds its state in the callback's data.
//!
//! V8's optimizing compiler calls an API function directly only from a call site that has
//! seen that one function: make a bound function once per thread and keep it, not one per
//! machine (a function per run measured slower than the `#[napi]` call it replaced).

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use napi::bindgen_prelude::{ToNapiValue, Unknown, panic_to_error};
use napi::{Env, check_status, sys};

use crate::error::{Result, napi};

/// What a bound function's callback data points at.
struct Bound<S, F> {
    state: S,
    call: F,
}

/// A JS function named `name` that takes no arguments and returns `call(&state)`, or throws
/// its error (a panic in it is thrown as an error too). `state` lives until V8 collects the
/// function.
///
/// # Errors
///
/// A napi status error if Node-API could not create the function.
pub(crate) fn bind<'env, S: 'static, R: ToNapiValue, F: Fn(&S) -> Result<R> + 'static>(
    env: &'env Env,
    name: &str,
    state: S,
    call: F,
) -> Result<Unknown<'env>> {
    let data = Box::into_raw(Box::new(Bound { state, call }));
    let mut function = ptr::null_mut();
    // SAFETY: `env` is the current call's environment; `name` is valid for its length;
    // `data` stays valid for every call of the function (freed only by `finalize`).
    let created = check_status!(unsafe {
        sys::napi_create_function(
            env.raw(),
            name.as_ptr().cast(),
            name.len() as isize,
            Some(call_bound::<S, R, F>),
            data.cast(),
            &mut function,
        )
    });
    if let Err(e) = created {
        // SAFETY: no function was made, so nothing else holds `data`.
        drop(unsafe { Box::from_raw(data) });
        return Err(napi(e));
    }
    // SAFETY: `function` is the live value just created; `finalize` runs once, when V8
    // collects it, after its last call. If this fails, `data` is left allocated: the
    // function may still be called.
    check_status!(unsafe {
        sys::napi_add_finalizer(
            env.raw(),
            function,
            data.cast(),
            Some(finalize::<S, F>),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    })
    .map_err(napi)?;
    // SAFETY: `function` is a value of this environment's current scope.
    Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), function) })
}

/// The callback of every function [`bind`] makes (`call` is a type, so it is inlined here).
unsafe extern "C" fn call_bound<S, R: ToNapiValue, F: Fn(&S) -> Result<R>>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let mut data = ptr::null_mut();
    // SAFETY: `env` and `info` are this callback's; only the data pointer is written.
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut data,
        )
    };
    let result = check_status!(status).map_err(napi).and_then(|()| {
        // SAFETY: the data of a function `bind` made is its `Bound<S, F>`, alive until
        // `finalize`, which V8 runs only once the function can no longer be called.
        let bound = unsafe { &*data.cast::<Bound<S, F>>() };
        catch_unwind(AssertUnwindSafe(|| (bound.call)(&bound.state)))
            .unwrap_or_else(|panic| Err(napi(panic_to_error(panic))))
    });
    // SAFETY: `env` is this callback's environment.
    match result.and_then(|r| unsafe { R::to_napi_value(env, r) }.map_err(napi)) {
        Ok(value) => value,
        Err(e) => {
            // SAFETY: as above; nothing is pending, so the error can be thrown.
            unsafe { napi::JsError::from(e).throw_into(env) };
            ptr::null_mut()
        }
    }
}

/// Frees what [`bind`] gave a function, once V8 collected it.
unsafe extern "C" fn finalize<S, F>(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the `Box<Bound<S, F>>` `bind` leaked, and V8 finalizes once.
    drop(unsafe { Box::from_raw(data.cast::<Bound<S, F>>()) });
}
