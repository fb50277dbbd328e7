//! Helpers for pluto's end-to-end tests: run the real `pluto` binary on real trees.
