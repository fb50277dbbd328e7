//! Progress bars on a terminal (stderr), nothing when output is not one.
//!
//! The bar fills against the real total: a snapshot counts what there is to do in a thread
//! of its own ([`pluto_repo::progress::count_tree`]) while it works, so the total grows for
//! a moment and then stays; until it is final the file count shows `(counting)`.
//! Ctrl-C while a bar is drawn prints one line of where the work stood before the process
//! ends the way an interrupted process does (killed by SIGINT, exit status 130 in a shell).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pluto_repo::progress::Progress;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Set by the SIGINT handler while a bar is drawn; the bar's thread prints the line.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// A bar is drawing (so the SIGINT handler leaves ending the process to it).
static DRAWING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only async-signal-safe work here: a flag, or the default action at once.
    if DRAWING.load(Ordering::SeqCst) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    } else {
        // SAFETY: signal and raise are async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::raise(libc::SIGINT);
        }
    }
}

/// End the process as Ctrl-C does by default, now that the line is printed.
fn die_of_sigint() -> ! {
    // SAFETY: restoring the default action and raising the signal at ourselves.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::raise(libc::SIGINT);
    }
    std::process::exit(130)
}

pub struct Bar {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// Where a piece of work stood: `3/10 files, 1.2 MiB of 4.0 MiB`.
pub fn summary(progress: &Progress) -> String {
    let (files, bytes, files_total, bytes_total) = progress.get();
    let known = progress.total_known.load(Ordering::Relaxed);
    let more = if known { "" } else { "+" };
    if files_total == 0 && bytes_total == 0 {
        return format!("{files} files, {}", crate::output::bytes(bytes));
    }
    format!(
        "{files}/{files_total}{more} files, {} of {}{more}",
        crate::output::bytes(bytes),
        crate::output::bytes(bytes_total.max(bytes))
    )
}

/// A path cut to at most `max` characters, keeping its end (the file name).
fn shorten(path: &str, max: usize) -> String {
    let n = path.chars().count();
    if n <= max {
        return path.to_string();
    }
    let tail: String = path.chars().skip(n - (max - 1)).collect();
    format!("…{tail}")
}

impl Bar {
    /// Start drawing `progress` if stderr is a terminal and not quiet.
    pub fn start(progress: Arc<Progress>, verb: &'static str, quiet: bool) -> Bar {
        let stop = Arc::new(AtomicBool::new(false));
        if quiet || !crate::output::is_tty_stderr() {
            return Bar { stop, handle: None };
        }
        DRAWING.store(true, Ordering::SeqCst);
        // Only where Ctrl-C would simply kill the process: a handler someone else installed
        // (tokio's in `serve`, a command that finishes its work on Ctrl-C) is left in charge,
        // and can print [`summary`] itself.
        // SAFETY: sigaction only reads the current action into a struct we own; the handler
        // installed touches atomics or restores the default, nothing else.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGINT, std::ptr::null(), &mut old) == 0
                && (old.sa_sigaction == libc::SIG_DFL
                    || old.sa_sigaction == on_sigint as extern "C" fn(libc::c_int) as usize)
            {
                libc::signal(
                    libc::SIGINT,
                    on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
                );
            }
        }
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}\n{msg}",
                )
                .unwrap(),
            );
            pb.set_prefix(verb);
            while !s.load(Ordering::Relaxed) {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    pb.abandon();
                    eprintln!("pluto: {verb} interrupted at {}", summary(&progress));
                    die_of_sigint();
                }
                let (files, bytes, files_total, bytes_total) = progress.get();
                let known = progress.total_known.load(Ordering::Relaxed);
                if bytes_total > 0 || known {
                    pb.set_length(bytes_total.max(bytes));
                }
                pb.set_position(bytes);
                let count = match (files_total, known) {
                    (0, false) => format!("{files} files"),
                    (t, true) => format!("{files}/{t} files"),
                    (t, false) => format!("{files}/{t}+ files (counting)"),
                };
                let current = progress.current();
                let width = console_width().saturating_sub(count.len() + 2).max(20);
                pb.set_message(if current.as_os_str().is_empty() {
                    count
                } else {
                    format!("{count}  {}", shorten(&current.to_string_lossy(), width))
                });
                std::thread::sleep(Duration::from_millis(100));
            }
            pb.finish_and_clear();
        });
        Bar {
            stop,
            handle: Some(handle),
        }
    }
}

fn console_width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            return ws.ws_col as usize;
        }
    }
    80
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
            // A Ctrl-C that came as the work ended is spent: the work is done and its
            // result follows; the next one ends the process at once.
            DRAWING.store(false, Ordering::SeqCst);
            INTERRUPTED.store(false, Ordering::SeqCst);
        }
    }
}
