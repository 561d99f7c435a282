//! The one closure type of the C layer: a C callback, the userdata it is called with and the
//! function that releases that userdata (eclipse-zenoh/zenoh-c's closures are the model).
//! Every API that takes a callback takes the same triple and wraps it in a `Closure`, whose
//! Rust `Drop` calls `drop_userdata` exactly once: the core drops its callback exactly once,
//! after its last call, whichever way it ends (and a registration that fails drops it before
//! returning).

use std::ffi::c_void;

use super::tidemark_drop_callback;

/// A C callback of type `F` (an `unsafe extern "C" fn` taking the userdata first) with its
/// userdata, owning the userdata until it is dropped.
pub(crate) struct Closure<F: Copy> {
    callback: Option<F>,
    userdata: *mut c_void,
    drop_userdata: tidemark_drop_callback,
}

// SAFETY: the header makes the caller promise that `userdata` may be used, and released, from
// the threads the library runs callbacks on; the core never calls one closure from two
// threads at once.
unsafe impl<F: Copy> Send for Closure<F> {}

impl<F: Copy> Closure<F> {
    /// Takes over `userdata`: from here on `drop_userdata` (if any) runs exactly once, when
    /// the closure is dropped.
    pub fn new(callback: Option<F>, userdata: *mut c_void, drop_userdata: tidemark_drop_callback) -> Self {
        Closure { callback, userdata, drop_userdata }
    }

    /// The callback (None when the caller gave NULL) and the userdata to pass it.
    pub fn target(&self) -> Option<(F, *mut c_void)> {
        self.callback.map(|f| (f, self.userdata))
    }
}

impl<F: Copy> Drop for Closure<F> {
    fn drop(&mut self) {
        if let Some(release) = self.drop_userdata.take() {
            // SAFETY: the caller gave `drop_userdata` to be called once with `userdata` when the
            // callback will not be called again; this is that moment, and `take` makes it once.
            unsafe { release(self.userdata) }
        }
    }
}
