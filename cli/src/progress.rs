//! Progress bars on a terminal (stderr), nothing when output is not one.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pluto_repo::progress::Progress;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Bar {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Bar {
    /// Start drawing `progress` if stderr is a terminal and not quiet.
    pub fn start(progress: Arc<Progress>, verb: &'static str, quiet: bool) -> Bar {
        let stop = Arc::new(AtomicBool::new(false));
        if quiet || !crate::output::is_tty_stderr() {
            return Bar { stop, handle: None };
        }
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .unwrap(),
            );
            pb.set_prefix(verb);
            while !s.load(Ordering::Relaxed) {
                let (files, bytes, files_total, bytes_total) = progress.get();
                if bytes_total > 0 {
                    pb.set_length(bytes_total.max(bytes));
                }
                pb.set_position(bytes);
                pb.set_message(if files_total > 0 {
                    format!("{files}/{files_total} files")
                } else {
                    format!("{files} files")
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

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
