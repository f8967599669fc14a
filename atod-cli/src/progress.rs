//! Progress bars of long work, drawn on stderr (so `--json` output on stdout stays one document) and hidden
//! when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `label`, with the elapsed time, the rate and a free message.
pub fn bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_style(
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} [{elapsed} < {eta}] {msg}")
            .expect("a valid template"),
    );
    bar.set_prefix(label.to_owned());
    bar
}
