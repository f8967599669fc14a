//! Progress of long work. The library reports it through the [`Progress`] trait, so that it runs silently (pass
//! `&()`) or under the CLI's bars ([`bar`]: indicatif, drawn on stderr so that `--json` output on stdout stays one
//! document, and hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// Where long work (an evaluation's episodes, SFT or online steps) reports how far it is. Every method has an
/// empty default, so an observer implements only what it shows.
pub trait Progress {
    /// Work of `len` units, labelled `label`, starts (at position 0).
    fn start(&self, _len: u64, _label: &str) {}
    /// `pos` units are done.
    fn set_position(&self, _pos: u64) {}
    /// A free message about the latest unit (a loss, a success rate).
    fn set_message(&self, _message: &str) {}
    /// The work is over: a bar clears itself.
    fn finish(&self) {}
}

/// No progress shown.
impl Progress for () {}

impl Progress for ProgressBar {
    fn start(&self, len: u64, label: &str) {
        self.set_length(len);
        self.set_prefix(label.to_owned());
        self.set_message("");
        ProgressBar::set_position(self, 0);
    }
    fn set_position(&self, pos: u64) {
        ProgressBar::set_position(self, pos);
    }
    fn set_message(&self, message: &str) {
        ProgressBar::set_message(self, message.to_owned());
    }
    fn finish(&self) {
        self.finish_and_clear();
    }
}

/// A bar of `len` steps labelled `label`, with the elapsed time, the rate and a free message.
pub fn bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_style(
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} [{elapsed} < {eta}] {msg}")
            .expect("a valid template"),
    );
    bar.set_prefix(label.to_owned());
    bar
}
