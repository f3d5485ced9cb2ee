//! Matching: the keys identifiers are matched by ([`canon`]), and the record of the modes a
//! data directory was built with ([`record`]).

pub mod canon;
pub mod record;
