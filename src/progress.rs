//! Progress reporting: bars for bytes and layers on a terminal, silence
//! otherwise (`--quiet`, pipes and CI logs).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether to draw progress.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// Bars on stderr if it is a terminal.
    Auto,
    Quiet,
}

impl Progress {
    pub fn from_quiet(quiet: bool) -> Progress {
        if quiet {
            Progress::Quiet
        } else {
            Progress::Auto
        }
    }

    /// A group of bars (hidden unless drawing).
    pub fn multi(self) -> MultiProgress {
        MultiProgress::with_draw_target(match self {
            Progress::Auto => ProgressDrawTarget::stderr(),
            Progress::Quiet => ProgressDrawTarget::hidden(),
        })
    }

    /// A byte bar for one blob.
    pub fn blob_bar(self, multi: &MultiProgress, name: &str, size: u64) -> ProgressBar {
        let bar = multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
                .expect("the template is valid"),
        );
        bar.set_message(name.to_string());
        bar
    }

    /// Starts a byte bar (`total` bytes) and a counter of `steps`.
    pub fn start(self, total: u64, steps: u64) -> Bars {
        let multi = self.multi();
        let bytes = multi.add(ProgressBar::new(total));
        bytes.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("the template is valid"),
        );
        let steps_bar = multi.add(ProgressBar::new(steps));
        steps_bar.set_style(
            ProgressStyle::with_template("{pos}/{len} layers {msg}")
                .expect("the template is valid"),
        );
        Bars {
            bytes,
            steps: steps_bar,
        }
    }
}

/// Live bars; cheap to update from many threads.
pub struct Bars {
    bytes: ProgressBar,
    steps: ProgressBar,
}

impl Bars {
    pub fn bytes(&self, n: u64) {
        self.bytes.inc(n);
    }

    pub fn layer_done(&self) {
        self.steps.inc(1);
    }

    pub fn finish(&self) {
        self.bytes.finish_and_clear();
        self.steps.finish_and_clear();
    }
}
