//! The parts of the `vswitch` binary that other programs (fuzz targets, tests) use too.

pub mod control;
