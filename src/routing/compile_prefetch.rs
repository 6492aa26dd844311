//! Loads ahead for a compile over every app: the model's memory an app's part reads, asked for
//! while the app before it compiles.
//!
//! At 50,000 apps the model (~160 MiB) is read from memory, not the processor's caches, and a
//! part read it one pointer at a time: each task's record, then its id's reference count,
//! incremented for the backend (an atomic increment, which waits for its line alone, so ten
//! tasks paid ten memory latencies one after another), the labels' tree node and strings, the
//! app's own id. Asked for one app ahead, those loads overlap each other and the compile of the
//! app before. Nothing here changes what is compiled: a prefetch is a hint, not a read.

use std::sync::Arc;

use crate::cluster::{App, AppId};

/// `apps` as given, each yielded once the loads of the next ones are asked for, a step per
/// pointer followed (each step reads what the step before loaded): the next app's task ids and
/// labels ([`near`]), the records of the app after it ([`middle`]), the block of the third
/// ([`far`]).
pub(super) fn ahead<'a, I>(apps: I) -> Ahead<I>
where
    I: Iterator<Item = (&'a AppId, &'a Arc<App>)> + Clone,
{
    let mut near = apps.clone();
    near.next();
    let mut middle = near.clone();
    middle.next();
    let mut far = middle.clone();
    far.next();
    Ahead {
        apps,
        near,
        middle,
        far,
    }
}

/// See [`ahead`]: the apps, and the same iterator one, two and three apps further.
pub(super) struct Ahead<I> {
    apps: I,
    near: I,
    middle: I,
    far: I,
}

impl<'a, I> Iterator for Ahead<I>
where
    I: Iterator<Item = (&'a AppId, &'a Arc<App>)>,
{
    type Item = (&'a AppId, &'a Arc<App>);

    fn next(&mut self) -> Option<Self::Item> {
        if let Some((_, app)) = self.far.next() {
            far(app);
        }
        if let Some((_, app)) = self.middle.next() {
            middle(app);
        }
        if let Some((_, app)) = self.near.next() {
            near(app);
        }
        self.apps.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.apps.size_hint()
    }
}

impl<'a, I> ExactSizeIterator for Ahead<I> where
    I: ExactSizeIterator<Item = (&'a AppId, &'a Arc<App>)>
{
}

/// Three apps ahead: the app's block, and its count (the part holds the app).
fn far(app: &Arc<App>) {
    let at = Arc::as_ptr(app).cast::<u8>();
    write_line(at.wrapping_sub(2 * std::mem::size_of::<usize>()));
    block(at, std::mem::size_of::<App>());
}

/// Two apps ahead (its block loaded): its tasks' records, its ports, its id's count.
fn middle(app: &App) {
    let tasks = app.tasks.values().as_slice();
    block(tasks.as_ptr().cast(), std::mem::size_of_val(tasks));
    line(app.ports.as_ptr().cast());
    counted(&app.id);
}

/// The next app (its records loaded): each task's id and its count (with intent to write: the
/// count is incremented), its labels' strings.
fn near(app: &App) {
    for task in app.tasks.values() {
        counted(&task.id);
    }
    for (name, value) in &app.labels {
        line(name.as_ptr());
        line(value.as_ptr());
    }
}

/// An `Arc<str>`'s block: the counts sit just before the text.
fn counted(text: &Arc<str>) {
    let counts = Arc::as_ptr(text)
        .cast::<u8>()
        .wrapping_sub(2 * std::mem::size_of::<usize>());
    write_line(counts);
}

/// Every line of `len` bytes at `at`.
fn block(at: *const u8, len: usize) {
    for offset in (0..len).step_by(64) {
        line(at.wrapping_add(offset));
    }
}

/// One cache line, to read.
#[inline(always)]
fn line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// One cache line, to write (taken exclusive at once, not shared and then upgraded).
#[inline(always)]
fn write_line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `line`.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}
