//! The filter's log lines (fetch failures, audit lines, ...) captured during `explain`,
//! per thread, so they can be shown with the explanation.

use std::cell::RefCell;

thread_local! {
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}", record.level(), record.args());
        LINES.with(|l| l.borrow_mut().push(line));
    }

    fn flush(&self) {}
}

/// Captures log lines up to `level` from now on (the logger is set once per process;
/// later calls only change the level).
pub fn capture(level: log::LevelFilter) {
    let _ = log::set_logger(&Capture);
    log::set_max_level(level);
}

/// The lines this thread logged since the last call.
pub fn take() -> Vec<String> {
    LINES.with(|l| std::mem::take(&mut *l.borrow_mut()))
}
