//! The label names of the metric families: they live in the neutral leaf [`crate::labels`]
//! (config reads them too) and are re-exported here so metrics code says `names::PROBE`.

pub use crate::labels::*;
